"""The row codec both backends share: stored columns to `ContentRow` / `EventRow` and back."""

from __future__ import annotations

import json
from collections.abc import Sequence

from service.storage.base import ContentRow, EventRow

EVENT_COLUMNS = (
    "user_id, content_id, ts, completion_rate, rating, is_rewatch, dismissed, "
    "device_type, time_of_day"
)


def event_from_columns(row: Sequence) -> EventRow:
    """An `EventRow` from the columns of `EVENT_COLUMNS`, in order."""
    return EventRow(
        row[0], row[1], row[2], row[3], row[4], bool(row[5]), bool(row[6]), row[7], row[8]
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
        received_at,
    )


def content_from_columns(row: Sequence) -> ContentRow:
    """A `ContentRow` from ``SELECT *`` of the content table (genres and moods as JSON)."""
    return ContentRow(
        row[0], row[1], json.loads(row[2]), row[3], row[4], json.loads(row[5]), row[6], row[7]
    )


def content_columns(c: ContentRow, updated_at: float) -> tuple:
    """The content table's columns for one item, in table order."""
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
