"""The storage interface both backends implement, and the rows that cross it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class ContentRow:
    content_id: str
    title: str
    genres: list[str] = field(default_factory=list)
    duration_minutes: float | None = None
    release_year: int | None = None
    moods: list[str] = field(default_factory=list)
    series_id: str | None = None
    embedding: bytes | None = None  # float32 little-endian, d values


@dataclass(frozen=True)
class EventRow:
    user_id: str
    content_id: str
    ts: float  # seconds since the epoch, UTC
    completion_rate: float
    rating: int | None = None
    is_rewatch: bool = False
    dismissed: bool = False
    device_type: str | None = None
    time_of_day: str | None = None


@dataclass(frozen=True)
class UserStateRow:
    user_id: str
    state: bytes
    events_since_training: int | None  # None on save: keep the stored counter
    last_trained: float | None


class Store(Protocol):
    """Durable storage: events, catalogue, user state, model versions."""

    kind: str

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> bool: ...
    async def schema_version(self) -> int: ...

    async def add_events(self, events: list[EventRow]) -> int:
        """Insert events durably (committed before returning); duplicates are ignored.
        Returns how many were new."""

    async def user_events(self, user_id: str) -> list[EventRow]: ...
    async def all_events(self) -> list[EventRow]: ...
    async def count_events(self) -> int: ...

    async def upsert_content(self, items: list[ContentRow]) -> int: ...
    async def get_content(self, content_id: str) -> ContentRow | None: ...
    async def list_content(self, limit: int, cursor: str | None) -> list[ContentRow]: ...
    async def delete_content(self, content_id: str) -> bool: ...
    async def existing_content(self, content_ids: list[str]) -> set[str]: ...

    async def save_user_state(self, row: UserStateRow) -> None: ...
    async def load_user_state(self, user_id: str) -> UserStateRow | None: ...
    async def add_events_since_training(self, user_id: str, n: int) -> int: ...

    async def record_model_version(self, version: int, path: str, report: str) -> None: ...
    async def latest_model_version(self) -> tuple[int, str] | None: ...
