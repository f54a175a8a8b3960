"""Versioned model files: ``<root>/v0001/{arrays/<part>.<name>.npy, manifest.json}``.

One standard ``.npy`` file per array (no pickle); the manifest holds the version, the full
config, its train-time digest and the training report, so a later run restores exactly what was
saved. The per-viewer tables (``users.*``, ``history.*``: ~9 KB a viewer, 9 GB at a million)
are memory-mapped read-only on load, so a server holds in memory only the rows it reads (the
kernel pages the rest in and out); item tables are read into memory. Versions of earlier
formats are refused with `ModelFormatError` (the service then trains a new one): they lack
tables this code serves from.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np

from sona_jax.config import config_from_dict
from sona_jax.model.lora import BaseTier
from sona_jax.model.tables import PopularityCounts
from sona_jax.model.version import (
    STORAGE_DTYPE,
    ItemTables,
    TrainedModel,
    UserHistoryTables,
    UserState,
)
from sona_jax.serve.fusion import SOURCE_NAMES, TRANSFORMER

FORMAT = "sona-model/6"  # 6: the transformer source's network (5: the sequential source's tables)
READABLE_FORMATS = ("sona-model/5", FORMAT)  # a version 5 model has no transformer
ARRAYS_DIR = "arrays"
MAPPED_PARTS = ("users.", "history.")  # per-viewer tables: memory-mapped on load
_VERSION_DIR = re.compile(r"^v(\d{4,})$")


class ModelFormatError(ValueError):
    """A saved model folder is of another format than this code reads."""


def model_versions(root: str | Path) -> list[int]:
    """Saved versions under ``root``, oldest first (only complete ones: manifest present)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _VERSION_DIR.match(child.name)
        if match and (child / "manifest.json").is_file():
            found.append(int(match.group(1)))
    return sorted(found)


def next_version(root: str | Path) -> int:
    versions = model_versions(root)
    return versions[-1] + 1 if versions else 1


def _prefixed(prefix: str, parts: dict) -> dict[str, np.ndarray]:
    return {f"{prefix}.{name}": np.asarray(value) for name, value in parts.items()}


def _parts(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {
        name.split(".", 1)[1]: value
        for name, value in arrays.items()
        if name.startswith(prefix + ".")
    }


def save_model(model: TrainedModel, root: str | Path) -> Path:
    """Write ``model`` as version ``model.version``; the manifest is written last (atomic rename)."""
    folder = Path(root) / f"v{model.version:04d}"
    folder.mkdir(parents=True, exist_ok=False)
    users = dict(vars(model.users))
    for name in ("preference", "adapter"):
        # no copy when already stored as such (the adapters: 8 GB at a million viewers)
        users[name] = np.asarray(users[name]).astype(STORAGE_DTYPE, copy=False)
    arrays = (
        _prefixed("base", model.base._asdict())
        | _prefixed("users", users)
        | _prefixed("history", model.history._asdict())
        | _prefixed("tables", model.tables._asdict())
        | _prefixed("popularity", model.popularity._asdict())
        | _prefixed("transformer", model.transformer)
    )
    arrays |= {
        "user_ids": model.user_ids.astype(str),
        "item_ids": model.item_ids.astype(str),
        "titles": np.asarray(model.titles).astype(str),
        "item_genres": np.asarray(model.item_genres, np.float32),
        "metadata_map": np.asarray(model.metadata_map, np.float32),
    }
    (folder / ARRAYS_DIR).mkdir()
    for name, value in arrays.items():
        np.save(folder / ARRAYS_DIR / f"{name}.npy", value, allow_pickle=False)
    manifest = {
        "format": FORMAT,
        "version": model.version,
        "saved_at": time.time(),
        "reference_time": model.reference_time,
        "genre_names": list(model.genre_names),
        "config": model.config.model_dump(),
        "train_digest": model.config.train_digest(),
        "report": model.report,
    }
    temporary = folder / "manifest.json.tmp"
    temporary.write_text(json.dumps(manifest, indent=2))
    temporary.rename(folder / "manifest.json")
    return folder


def _read_arrays(folder: Path) -> dict[str, np.ndarray]:
    """Every array of the version in ``folder`` by name, the per-viewer ones memory-mapped."""
    return {
        path.stem: np.load(
            path, mmap_mode="r" if path.stem.startswith(MAPPED_PARTS) else None, allow_pickle=False
        )
        for path in sorted((folder / ARRAYS_DIR).glob("*.npy"))
    }


def with_transformer_gates(config: dict) -> dict:
    """A format-5 manifest's config with the transformer's place (weight 0, no gating) in its
    five-source gates, which the six-source config would refuse."""
    fusion = dict(config.get("fusion", {}))
    for gate in ("gate_history", "gate_context"):
        values = fusion.get(gate)
        if values is not None and len(values) == len(SOURCE_NAMES) - 1:
            fusion[gate] = [*values[:TRANSFORMER], 0.0, *values[TRANSFORMER:]]
    return {**config, "fusion": fusion}


def load_model(root: str | Path, version: int | None = None) -> TrainedModel:
    """Load ``version`` (default: the newest) from ``root``."""
    versions = model_versions(root)
    if not versions:
        raise FileNotFoundError(f"{root}: no saved model (run `sona train` first)")
    version = versions[-1] if version is None else version
    folder = Path(root) / f"v{version:04d}"
    manifest = json.loads((folder / "manifest.json").read_text())
    if manifest.get("format") not in READABLE_FORMATS:
        raise ModelFormatError(
            f"{folder}: model format {manifest.get('format')!r}, this code reads "
            f"{', '.join(READABLE_FORMATS)} (train a new version)"
        )
    if manifest["format"] == "sona-model/5":
        manifest["config"] = with_transformer_gates(manifest["config"])
    arrays = _read_arrays(folder)
    users = _parts(arrays, "users")
    return TrainedModel(
        version=manifest["version"],
        config=config_from_dict(manifest["config"], source=str(folder / "manifest.json")),
        base=BaseTier(**_parts(arrays, "base")),
        users=UserState(**users),
        history=UserHistoryTables(**_parts(arrays, "history")),
        tables=ItemTables(**_parts(arrays, "tables")),
        user_ids=arrays["user_ids"],
        item_ids=arrays["item_ids"],
        titles=arrays["titles"],
        genre_names=tuple(manifest["genre_names"]),
        item_genres=arrays["item_genres"],
        reference_time=manifest["reference_time"],
        popularity=PopularityCounts(**_parts(arrays, "popularity")),
        metadata_map=arrays["metadata_map"],
        report=manifest["report"],
        transformer=_parts(arrays, "transformer"),
    )
