"""Data the engine works on: the catalogue / event-log containers, the seeded synthetic
generator, and the one conversion from stored records."""

from sona_jax.data.schema import (
    DEVICE_TYPES,
    TIMES_OF_DAY,
    Catalogue,
    Dataset,
    DatasetError,
    EventLog,
)
from sona_jax.data.synthetic import generate_synthetic

__all__ = [
    "DEVICE_TYPES",
    "TIMES_OF_DAY",
    "Catalogue",
    "Dataset",
    "DatasetError",
    "EventLog",
    "generate_synthetic",
]
