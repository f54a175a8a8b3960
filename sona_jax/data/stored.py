"""The one conversion from stored records (what the service keeps per event and per item) to the
engine's `EventLog` and `Catalogue`.

Training from the store and serving a viewer both go through `event_log`, so a stored event
lands in the same bins in both: context words the engine does not know become "unknown", and an
event stored without ``time_of_day`` is binned by its timestamp's hour (UTC).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from sona_jax.data.schema import (
    DEVICE_TYPES,
    MOODS,
    TIMES_OF_DAY,
    Catalogue,
    EventLog,
    time_of_day_of_timestamp,
)


class StoredEvent(Protocol):
    """A viewing event as stored (`service.storage.EventRow` is one)."""

    user_id: str
    content_id: str
    ts: float  # seconds since the epoch, UTC
    completion_rate: float
    rating: int | None
    is_rewatch: bool
    dismissed: bool
    device_type: str | None
    time_of_day: str | None


class StoredItem(Protocol):
    """A catalogue item as stored (`service.storage.ContentRow` is one)."""

    content_id: str
    title: str
    genres: list[str]
    duration_minutes: float | None
    release_year: int | None
    moods: list[str]
    series_id: str | None
    embedding: bytes | None  # float32 little-endian, d values


class StoredChange(Protocol):
    """One entry of the store's catalogue change feed (`service.storage.CatalogueEntry`):
    the item as written, whether it is deleted, and its slot — a number the store gives an item
    once, in the order items first arrive, so every process puts a new item in the same row."""

    slot: int
    item: StoredItem
    deleted: bool
    revision: int  # orders writes; the same in every process


def _index_of(names: tuple[str, ...], values: list[str | None]) -> np.ndarray:
    lookup = {name: i for i, name in enumerate(names)}
    return np.array([lookup.get(v, -1) for v in values], np.int64)


def event_log(
    records: Sequence[StoredEvent],
    item_index: Mapping[str, int],
    user_index: Mapping[str, int] | None = None,
) -> tuple[EventLog, list[str]]:
    """The records on catalogued items (``item_index``: content id -> item row) as a log.

    Users are rows of ``user_index`` (records of other users are left out) or, without it,
    indexed in the order they first appear; returns the log and the user ids by row.
    """
    kept = [
        e
        for e in records
        if e.content_id in item_index and (user_index is None or e.user_id in user_index)
    ]
    if user_index is None:
        user_ids = list(dict.fromkeys(e.user_id for e in kept))
        user_index = {u: i for i, u in enumerate(user_ids)}
    else:
        user_ids = sorted(user_index, key=user_index.__getitem__)
    timestamp = np.array([e.ts for e in kept], np.float64)
    named = _index_of(TIMES_OF_DAY, [e.time_of_day for e in kept])
    log = EventLog.build(
        user=np.array([user_index[e.user_id] for e in kept], np.int32),
        item=np.array([item_index[e.content_id] for e in kept], np.int32),
        timestamp=timestamp,
        completion=np.array([e.completion_rate for e in kept], np.float32),
        rating=np.array([e.rating or 0 for e in kept], np.float32),
        dismissed=np.array([e.dismissed for e in kept], bool),
        rewatch=np.array([e.is_rewatch for e in kept], bool),
        device=_index_of(DEVICE_TYPES, [e.device_type for e in kept]).astype(np.int8),
        time_of_day=np.where(named >= 0, named, time_of_day_of_timestamp(timestamp)).astype(
            np.int8
        ),
    )
    return log, user_ids


def _multi_hot(names: tuple[str, ...], values: Sequence[Sequence[str]]) -> np.ndarray:
    """(n, len(names)) float32 flags; values outside ``names`` are left out."""
    column = {name: j for j, name in enumerate(names)}
    out = np.zeros((len(values), len(names)), np.float32)
    for i, row in enumerate(values):
        out[i, [column[v] for v in row if v in column]] = 1.0
    return out


def _optional(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], np.float32)


def stored_embeddings(items: Sequence[StoredItem], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) float32 supplied embeddings and (n,) bool which items supplied one of size d."""
    embeddings = np.zeros((len(items), dim), np.float32)
    has = np.zeros(len(items), bool)
    for i, c in enumerate(items):
        if c.embedding is not None and len(c.embedding) == np.dtype(np.float32).itemsize * dim:
            embeddings[i] = np.frombuffer(c.embedding, np.float32)
            has[i] = True
    return embeddings, has


def catalogue(
    items: Sequence[StoredItem], dim: int, genre_names: tuple[str, ...] | None = None
) -> Catalogue:
    """Stored items as a catalogue (row i is ``items[i]``); embeddings of another size than
    ``dim`` are ignored (fitted instead). Genres are those of the items unless ``genre_names``
    (a model's) is given, then genres outside it are left out; moods are in `MOODS` order when
    ``genre_names`` is given (serving items a model has not seen)."""
    if genre_names is None:
        genre_names = tuple(sorted({g for c in items for g in c.genres}))
        mood_names = tuple(sorted({m for c in items for m in c.moods}))
    else:
        mood_names = MOODS
    series_names = tuple(sorted({c.series_id for c in items if c.series_id}))
    series_index = {name: i for i, name in enumerate(series_names)}
    embeddings, has_embedding = stored_embeddings(items, dim)
    return Catalogue(
        item_ids=np.array([c.content_id for c in items]),
        titles=np.array([c.title for c in items], dtype=object),
        genre_names=genre_names,
        genres=_multi_hot(genre_names, [c.genres for c in items]),
        duration_minutes=_optional([c.duration_minutes for c in items]),
        release_year=_optional([c.release_year for c in items]),
        mood_names=mood_names,
        moods=_multi_hot(mood_names, [c.moods for c in items]),
        series=np.array([series_index.get(c.series_id, -1) for c in items], np.int32),
        series_names=series_names,
        embeddings=embeddings if has_embedding.any() else None,
        has_embedding=has_embedding if has_embedding.any() else None,
    )
