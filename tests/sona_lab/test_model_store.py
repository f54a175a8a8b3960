"""Saving and loading model versions, and the `sona train` command."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from service.cli import main
from sona_jax.model.train import train_model
from sona_jax.serve.fusion import SOURCE_NAMES, TRANSFORMER
from sona_lab.model_store import ModelFormatError, load_model, model_versions, save_model


def test_round_trip_and_versions(tmp_path, synthetic_small, small_config):
    model = train_model(synthetic_small, small_config)
    save_model(model, tmp_path)
    model.version = 2
    save_model(model, tmp_path)
    assert model_versions(tmp_path) == [1, 2]
    loaded = load_model(tmp_path)
    assert loaded.version == 2
    assert loaded.config == small_config
    np.testing.assert_array_equal(loaded.users.adapter, model.users.adapter)
    np.testing.assert_allclose(loaded.users.preference, model.users.preference, atol=1e-3)
    np.testing.assert_array_equal(loaded.base.item_embeddings, model.base.item_embeddings)
    assert list(loaded.item_ids) == list(model.item_ids)
    # the per-viewer tables are memory-mapped read-only, the item tables in memory
    assert isinstance(loaded.users.adapter, np.memmap) and not loaded.users.adapter.flags.writeable
    assert isinstance(loaded.history.seen, np.memmap)
    assert not isinstance(loaded.base.item_embeddings, np.memmap)


def test_an_earlier_format_is_refused_by_name(tmp_path, synthetic_small, small_config):
    """A version of format 4 (no sequential tables) is refused, naming both formats."""
    folder = save_model(train_model(synthetic_small, small_config), tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps(manifest | {"format": "sona-model/4"}))
    with pytest.raises(ModelFormatError, match="sona-model/4.*sona-model/5"):
        load_model(tmp_path)


def test_a_format_5_version_loads_with_the_transformer_ungated(
    tmp_path, synthetic_small, small_config
):
    """Format 5 knew five sources: its gates gain the transformer's place (0), the others kept
    where they were."""
    folder = save_model(train_model(synthetic_small, small_config), tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    five = [0.1, 0.2, 0.3, 0.4, 0.5]  # collaborative, content, graph, sequential, context
    manifest["config"]["fusion"]["gate_history"] = five
    manifest["format"] = "sona-model/5"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    loaded = load_model(tmp_path)
    assert loaded.config.fusion.gate_history[TRANSFORMER] == 0.0
    assert [g for i, g in enumerate(loaded.config.fusion.gate_history) if i != TRANSFORMER] == five
    assert len(loaded.config.fusion.gate_context) == len(SOURCE_NAMES)


def test_cli_train_saves_a_loadable_version(tmp_path):
    runner = CliRunner()
    config = tmp_path / "small.toml"
    config.write_text("[model]\nembedding_dim = 32\n")
    args = [
        "train",
        "--data",
        "synthetic",
        "--users",
        "120",
        "--items",
        "150",
        "--out",
        str(tmp_path / "models"),
        "--config",
        str(config),
    ]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "saved model version 1" in result.output
    result = runner.invoke(main, args)
    assert "saved model version 2" in result.output
    model = load_model(tmp_path / "models")
    assert model.n_users == 120 and model.base.item_embeddings.shape == (150, 32)
    assert model.report["users_trained"] > 0


def test_cli_errors_are_clear(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["train", "--data", "ml-100k", "--path", str(tmp_path)])
    assert result.exit_code != 0 and "u.genre: file not found" in result.output
    bad = tmp_path / "bad.toml"
    bad.write_text("[lora]\nrank = -1\n")
    result = runner.invoke(main, ["train", "--config", str(bad)])
    assert result.exit_code != 0 and "lora.rank" in result.output
