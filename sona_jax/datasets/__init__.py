"""The engine's own data loaders: MovieLens (both formats) and the synthetic generator."""

from sona_jax.datasets.movielens import load_ml100k, load_ml_latest
from sona_jax.datasets.schema import (
    DEVICE_TYPES,
    TIMES_OF_DAY,
    Catalogue,
    Dataset,
    DatasetError,
    EventLog,
)
from sona_jax.datasets.synthetic import generate_synthetic


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


__all__ = [
    "DEVICE_TYPES",
    "TIMES_OF_DAY",
    "Catalogue",
    "Dataset",
    "DatasetError",
    "EventLog",
    "generate_synthetic",
    "load_dataset",
    "load_ml100k",
    "load_ml_latest",
]
