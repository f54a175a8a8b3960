"""The row codec both backends share: stored columns to `ContentRow` / `EventRow` and back."""

from __future__ import annotations

import json
from collections.abc import Sequence

from service.storage.base import CatalogueEntry, ContentRow, EventRow

EVENT_COLUMNS = (
    "user_id, content_id, ts, completion_rate, rating, is_rewatch, dismissed, "
    "device_type, time_of_day, recommendation_id"
)


def event_from_columns(row: Sequence) -> EventRow:
    """An `EventRow` from the columns of `EVENT_COLUMNS`, in order."""
    return EventRow(
        row[0], row[1], row[2], row[3], row[4], bool(row[5]), bool(row[6]), row[7], row[8], row[9]
    )


def event_columns(e: EventRow, received_at: float) -> tuple:
    """The values of `EVENT_COLUMNS` and ``received_at`` for one event."""
    return (
        e.user_id,
        e.content_id,
        e.ts,
        e.completion_rate,
        e.rating,
        e.is_rewatch,
        e.dismissed,
        e.device_type,
        e.time_of_day,
        e.recommendation_id,
        received_at,
    )


CONTENT_COLUMNS = (
    "content_id, title, genres, duration_minutes, release_year, moods, series_id, embedding"
)
ENTRY_COLUMNS = f"{CONTENT_COLUMNS}, slot, deleted, revision"
ARTIFACT_PART_BYTES = 8 * 1024 * 1024  # model artefacts are stored in parts of this size


def entry_from_columns(row: Sequence) -> CatalogueEntry:
    """A `CatalogueEntry` from the columns of `ENTRY_COLUMNS`, in order."""
    return CatalogueEntry(int(row[8]), content_from_columns(row), bool(row[9]), int(row[10]))


def content_from_columns(row: Sequence) -> ContentRow:
    """A `ContentRow` from the columns of `CONTENT_COLUMNS` (genres and moods as JSON)."""
    return ContentRow(
        row[0], row[1], json.loads(row[2]), row[3], row[4], json.loads(row[5]), row[6], row[7]
    )


def content_columns(c: ContentRow, updated_at: float) -> tuple:
    """`CONTENT_COLUMNS` and ``updated_at`` of one item."""
    return (
        c.content_id,
        c.title,
        json.dumps(c.genres),
        c.duration_minutes,
        c.release_year,
        json.dumps(c.moods),
        c.series_id,
        c.embedding,
        updated_at,
    )


def artifact_parts(artifact: bytes) -> list[bytes]:
    """A packed model in parts of at most `ARTIFACT_PART_BYTES`."""
    return [
        artifact[start : start + ARTIFACT_PART_BYTES]
        for start in range(0, max(len(artifact), 1), ARTIFACT_PART_BYTES)
    ]
