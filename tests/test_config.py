from pathlib import Path

import pytest

from sona_jax.config import ConfigError, SonaConfig, config_from_dict, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_default_toml_holds_every_default():
    assert load_config(ROOT / "configs" / "default.toml") == SonaConfig()


def test_spec_constants():
    cfg = SonaConfig()
    assert (cfg.preference.decay_base, cfg.preference.decay_period_days) == (0.95, 30.0)
    assert cfg.preference.completion_threshold == 0.3
    assert (cfg.lora.rank, cfg.lora.alpha, cfg.lora.iterations) == (8, 16.0, 5)
    assert (cfg.lora.min_events, cfg.lora.train_interval_seconds) == (10, 300)
    assert cfg.model.embedding_dim == 512
    assert (
        cfg.fusion.collaborative,
        cfg.fusion.content_based,
        cfg.fusion.graph_based,
        cfg.fusion.context,
    ) == (0.35, 0.25, 0.30, 0.10)
    assert cfg.diversity.mmr_lambda == 0.7


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"lora\.bogus: unknown key"):
        config_from_dict({"lora": {"bogus": 1}})
    with pytest.raises(ConfigError, match=r"nonsense: unknown key"):
        config_from_dict({"nonsense": {}})


def test_out_of_range_is_named():
    with pytest.raises(ConfigError, match=r"lora\.rank"):
        config_from_dict({"lora": {"rank": 0}})
    with pytest.raises(ConfigError, match=r"preference\.completion_threshold"):
        config_from_dict({"preference": {"completion_threshold": 1.5}})


def test_bad_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[lora]\nrank = 'eight'\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: lora\.rank"):
        load_config(path)
    path.write_text("[lora\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "missing.toml")


def test_overrides_are_validated():
    cfg = SonaConfig().with_overrides({"fusion": {"context": 0.5}})
    assert cfg.fusion.context == 0.5 and cfg.fusion.graph_based == 0.30
    with pytest.raises(ConfigError):
        SonaConfig().with_overrides({"fusion": {"context": -1}})
