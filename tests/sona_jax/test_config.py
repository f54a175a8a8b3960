import tomllib
from pathlib import Path

import pytest

from service.settings import LearningSettings, ServingSettings, load_config_file
from sona_jax.config import SERVE, TRAIN, ConfigError, SonaConfig, config_from_dict
from sona_lab.files import load_config

ROOT = Path(__file__).resolve().parents[2]


def test_default_toml_spells_out_every_key():
    """Every key of every section is written in configs/default.toml (comparing values alone
    cannot notice a key left out: its default fills it in)."""
    written = tomllib.loads((ROOT / "configs" / "default.toml").read_text())
    sections = {name: info.annotation for name, info in SonaConfig.model_fields.items()}
    sections |= {"serving": ServingSettings, "learning": LearningSettings}
    missing = [
        f"{name}.{key}"
        for name, model in sections.items()
        for key in model.model_fields
        if key not in written.get(name, {})
    ]
    assert missing == []


def test_default_toml_holds_every_default():
    assert load_config(ROOT / "configs" / "default.toml") == SonaConfig()
    assert load_config_file(ROOT / "configs" / "default.toml") == (
        SonaConfig(),
        ServingSettings(),
        LearningSettings(),
    )


def test_serving_settings_are_not_engine_config(tmp_path):
    assert "serving" not in SonaConfig.model_fields
    path = tmp_path / "c.toml"
    path.write_text("[lora]\nrank = 4\n[serving]\nport = 9000\nbatching = false\n")
    cfg, serving, _ = load_config_file(path)
    assert cfg == SonaConfig().with_overrides({"lora": {"rank": 4}})
    assert (serving.port, serving.batching) == (9000, False)
    path.write_text("[serving]\nport = 0\n")
    with pytest.raises(ConfigError, match=r"c\.toml: serving\.port"):
        load_config_file(path)
    path.write_text("[learning]\nkeep_versions = 0\n")
    with pytest.raises(ConfigError, match=r"c\.toml: learning\.keep_versions"):
        load_config_file(path)


def test_every_field_is_marked_train_or_serve_time():
    for section, info in SonaConfig.model_fields.items():
        for key in info.annotation.model_fields:
            assert SonaConfig.stage(section, key) in (TRAIN, SERVE), f"{section}.{key}"
    assert SonaConfig.stage("lora", "rank") == TRAIN
    assert SonaConfig.stage("graph", "first_hop") == TRAIN  # the model keeps the dense matrix
    assert SonaConfig.stage("fusion", "graph_based") == SERVE
    assert SonaConfig.stage("diversity", "mmr_lambda") == SERVE


def test_train_digest_and_the_served_config_check():
    cfg = SonaConfig()
    served = cfg.with_overrides({"fusion": {"context": 0.9}, "graph": {"decay": 0.5}})
    assert served.train_digest() == cfg.train_digest()
    served.check_trained_with(cfg)  # serve-time differences are fine
    other = cfg.with_overrides({"lora": {"rank": 4}, "collaborative": {"history_items": 64}})
    assert other.train_digest() != cfg.train_digest()
    with pytest.raises(ConfigError) as error:
        other.check_trained_with(cfg, "model version 3")
    message = str(error.value)
    assert "model version 3" in message
    assert "lora.rank: 4 vs 8" in message and "collaborative.history_items: 64 vs 256" in message


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
