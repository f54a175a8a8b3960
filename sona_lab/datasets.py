"""Datasets by name: the synthetic generator (the engine's) or MovieLens read from a folder."""

from __future__ import annotations

from sona_jax.data import Dataset, DatasetError, generate_synthetic
from sona_lab.movielens import load_ml100k, load_ml_latest

DATA_KINDS: tuple[str, ...] = ("synthetic", "ml-100k", "ml-latest")


def load_dataset(kind: str, path: str | None = None, **synthetic_options) -> Dataset:
    """Load ``synthetic`` (generated, options passed on), ``ml-100k`` or ``ml-latest`` (path)."""
    if kind == "synthetic":
        return generate_synthetic(**synthetic_options)
    if path is None:
        raise DatasetError(f"--path is required for {kind!r}: the folder holding its files")
    if kind == "ml-100k":
        return load_ml100k(path)
    if kind == "ml-latest":
        return load_ml_latest(path)
    raise DatasetError(f"unknown data kind {kind!r}; use synthetic, ml-100k or ml-latest")
