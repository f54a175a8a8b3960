"""Model versions on a host's disk: packing for the database, unpacking, pruning."""

from __future__ import annotations

from service.training import pack_model, prune_local_versions, unpack_model
from sona_lab.model_store import model_versions


def _version(root, n: int):
    folder = root / f"v{n:04d}"
    folder.mkdir(parents=True)
    (folder / "arrays.npz").write_bytes(bytes([n]) * 100)
    (folder / "manifest.json").write_text(f'{{"version": {n}}}')
    return folder


def test_pack_unpack_and_prune(tmp_path):
    source, host = tmp_path / "a", tmp_path / "b"
    folders = [_version(source, n) for n in range(1, 6)]
    unpack_model(pack_model(folders[-1]), host)
    assert model_versions(host) == [5]
    assert (host / "v0005" / "arrays.npz").read_bytes() == bytes([5]) * 100
    assert prune_local_versions(source, 2) == [1, 2, 3]
    assert model_versions(source) == [4, 5]
