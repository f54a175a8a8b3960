"""Storage behind one interface: SQLite (embedded default) or PostgreSQL, chosen by URL."""

from __future__ import annotations

from pathlib import Path

from service.storage.base import (
    CatalogueEntry,
    ContentRow,
    EventRow,
    ExperimentRecord,
    ExposureRow,
    ModelRecord,
    RebuildRecord,
    Store,
    TrainingSnapshot,
    UserStateRow,
    VariantCounts,
)


def open_store(database_url: str | None, data_dir: str | Path) -> Store:
    """PostgreSQL for ``postgres://`` / ``postgresql://`` URLs, else SQLite under ``data_dir``."""
    if database_url and database_url.startswith(("postgres://", "postgresql://")):
        from service.storage.postgres import PostgresStore

        return PostgresStore(database_url)
    if database_url and database_url.startswith("sqlite:///"):
        from service.storage.sqlite import SQLiteStore

        return SQLiteStore(database_url.removeprefix("sqlite:///"))
    if database_url:
        raise ValueError(
            f"unsupported database URL {database_url!r}: use postgresql://... or sqlite:///path"
        )
    from service.storage.sqlite import SQLiteStore

    return SQLiteStore(Path(data_dir) / "sona.db")


__all__ = [
    "CatalogueEntry",
    "ContentRow",
    "EventRow",
    "ExperimentRecord",
    "ExposureRow",
    "ModelRecord",
    "RebuildRecord",
    "Store",
    "TrainingSnapshot",
    "UserStateRow",
    "VariantCounts",
    "open_store",
]
