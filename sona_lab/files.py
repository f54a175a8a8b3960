"""Reading configuration files (TOML) for the host programs."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from sona_jax.config import ConfigError, SonaConfig, config_from_dict

HOST_SECTIONS = ("serving", "learning")  # tables of a config file that are not the engine's


def read_toml(path: str | Path, error: type[Exception] = ConfigError) -> dict[str, Any]:
    """The parsed TOML file; a missing or malformed file raises ``error`` naming it."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except tomllib.TOMLDecodeError as problem:
        raise error(f"{path}: not valid TOML: {problem}") from None


def split_config(doc: dict[str, Any], source: str) -> tuple[SonaConfig, dict[str, Any]]:
    """A parsed config document as the engine's `SonaConfig` and the host tables beside it
    (``{"serving": {...}}``)."""
    engine = {k: v for k, v in doc.items() if k not in HOST_SECTIONS}
    host = {k: v for k, v in doc.items() if k in HOST_SECTIONS}
    return config_from_dict(engine, source=source), host


def load_config(path: str | Path | None = None) -> SonaConfig:
    """The engine config of a TOML file (default: the built-in defaults); host tables such as
    ``[serving]`` are ignored here (`service.settings` reads them)."""
    if path is None:
        return SonaConfig()
    return split_config(read_toml(path), str(path))[0]
