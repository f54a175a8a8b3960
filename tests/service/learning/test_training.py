"""Model versions on a host's disk: packing for the database, unpacking, pruning."""

from __future__ import annotations

from service.learning.versions import pack_model, prune_local_versions, unpack_model
from sona_lab.model_store import model_versions


def _version(root, n: int):
    folder = root / f"v{n:04d}"
    folder.mkdir(parents=True)
    (folder / "arrays").mkdir()
    (folder / "arrays" / "users.adapter.npy").write_bytes(bytes([n]) * 100)
    (folder / "manifest.json").write_text(f'{{"version": {n}}}')
    return folder


def test_pack_unpack_and_prune(tmp_path):
    source, host = tmp_path / "a", tmp_path / "b"
    folders = [_version(source, n) for n in range(1, 6)]
    unpack_model(pack_model(folders[-1]), host)
    assert model_versions(host) == [5]
    assert (host / "v0005" / "arrays" / "users.adapter.npy").read_bytes() == bytes([5]) * 100
    assert prune_local_versions(source, 2) == [1, 2, 3]
    assert model_versions(source) == [4, 5]


def test_a_packed_model_loads_on_another_host(tmp_path, synthetic_small, small_config):
    """Every file of a saved version travels (one .npy per array), and it loads there."""
    import numpy as np

    from sona_jax.model.train import train_model
    from sona_lab.model_store import load_model, save_model

    model = train_model(synthetic_small, small_config)
    unpack_model(pack_model(save_model(model, tmp_path / "a")), tmp_path / "b")
    loaded = load_model(tmp_path / "b")
    np.testing.assert_array_equal(loaded.users.adapter, model.users.adapter)
    np.testing.assert_array_equal(loaded.history.seen, model.history.seen)
    np.testing.assert_array_equal(loaded.base.item_factors, model.base.item_factors)
