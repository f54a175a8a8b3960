"""The storage interface both backends implement, and the rows that cross it."""

from __future__ import annotations

import contextlib
from collections.abc import Collection
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
    recommendation_id: str | None = None  # the list it was watched from (attribution)


@dataclass(frozen=True)
class ExperimentRecord:
    """An experiment as stored: ``definition`` holds its variants ({name, traffic, config}),
    metric, attribution window and the effect its sequential test is tuned for; ``looks``
    what earlier reads of its statistics decided (sticky: an always-valid decision stands)."""

    experiment_id: str
    name: str
    salt: str
    status: str  # running | paused | stopped | shipped
    definition: dict
    created_at: float
    updated_at: float
    shipped_variant: str | None = None
    looks: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ExposureRow:
    """One list shown to a viewer in an experiment: the variant (index) that served it and
    the items it held."""

    recommendation_id: str
    experiment_id: str
    variant: int
    user_id: str
    ts: float  # seconds since the epoch, UTC
    content_ids: tuple[str, ...]


@dataclass(frozen=True)
class VariantCounts:
    """What a variant's exposures led to: viewers and lists exposed; attributed views (not
    dismissals) with the viewers who made one, who made one at or above the completion bar,
    and their completions' sum; attributed dismissals and the viewers who made one."""

    variant: int
    users: int = 0
    lists: int = 0
    clicked_users: int = 0
    completed_users: int = 0
    views: int = 0
    completion_sum: float = 0.0
    dismissals: int = 0
    dismissing_users: int = 0


@dataclass(frozen=True)
class CatalogueEntry:
    """One item of the catalogue change feed: ``slot`` is given once, when the item first
    arrives (`sona_jax.data.stored.StoredChange`); ``deleted`` items are tombstones;
    ``revision`` orders writes (the same number in every process)."""

    slot: int
    item: ContentRow
    deleted: bool = False
    revision: int = 0


@dataclass(frozen=True)
class TrainingSnapshot:
    """What a rebuild trains on, read in one consistent view of the store: the live catalogue
    and every event, with the watermarks the model records (events and catalogue writes past
    them arrived after it; slots past ``slot_watermark`` are items it has not seen)."""

    content: list[ContentRow]
    events: list[EventRow]
    event_watermark: int
    content_watermark: int
    slot_watermark: int


@dataclass(frozen=True)
class ModelRecord:
    version: int
    path: str
    created_at: float
    report: dict
    sha256: str | None
    size: int | None


@dataclass(frozen=True)
class RebuildRecord:
    started_at: float
    finished_at: float
    outcome: str  # "succeeded" | "failed" | "skipped"
    version: int | None
    message: str


@dataclass(frozen=True)
class UserStateRow:
    user_id: str
    state: bytes
    events_since_training: int | None  # None on save: keep the stored counter
    last_trained: float | None
    adapter_revision: int = 0  # +1 on every saved adapter (read back; ignored on save)


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

    async def save_user_state(self, row: UserStateRow) -> int:
        """Store a trained state (preference and adapter); returns its adapter revision, one
        more than the one it replaces."""

    async def load_user_state(self, user_id: str) -> UserStateRow | None: ...
    async def add_events_since_training(self, user_id: str, n: int) -> int: ...

    async def user_version(self, user_id: str) -> tuple[int, int]:
        """The version of the viewer's history: (stored events, adapter revision). Both only
        grow, so a profile built from (e, a) is current when the store is still at (e, a)."""

    async def content_entries(self, content_ids: list[str]) -> list[CatalogueEntry]:
        """The entries (tombstones too) of ``content_ids``."""

    async def content_changes(self, since: int) -> tuple[list[CatalogueEntry], int]:
        """Catalogue writes committed after watermark ``since`` (0: all), and the watermark to
        ask from next time. No committed write is ever skipped, whatever the commit order."""

    async def new_events(self, since: int) -> tuple[list[EventRow], int]:
        """Events committed after watermark ``since`` (0: all), and the next watermark."""

    async def count_events_since(self, since: int) -> int: ...

    async def training_snapshot(self) -> TrainingSnapshot: ...

    async def record_model_version(
        self, version: int, path: str, report: str, artifact: bytes | None = None
    ) -> None:
        """Record a version; ``artifact`` (the packed model) is stored in the database with
        its sha256, so every host can load it."""

    async def latest_model_version(self) -> tuple[int, str] | None: ...
    async def model_record(self, version: int) -> ModelRecord | None: ...
    async def model_artifact(self, version: int) -> bytes | None: ...
    async def prune_model_versions(self, keep: int, spare: Collection[int] = ()) -> list[int]:
        """Delete all but the newest ``keep`` versions and those in ``spare`` (and their
        artefacts); returns those deleted."""

    async def next_model_version(self) -> int: ...

    def trainer_lock(self) -> contextlib.AbstractAsyncContextManager[bool]:
        """Held by at most one trainer across every process and host: yields False (at once)
        when another holds it. Released when the holder exits or dies."""

    async def record_rebuild(self, record: RebuildRecord) -> None: ...
    async def last_rebuild(self) -> RebuildRecord | None: ...

    async def create_experiment(self, record: ExperimentRecord) -> bool:
        """Store a new experiment; False when its name is taken."""

    async def experiments(self) -> list[ExperimentRecord]:
        """Every experiment, oldest first."""

    async def experiment(self, experiment_id: str) -> ExperimentRecord | None: ...

    async def update_experiment(
        self, experiment_id: str, status: str, shipped_variant: str | None, expected: str
    ) -> bool:
        """Set the status (and shipped variant) if the status is still ``expected``; False
        when another writer changed it first."""

    async def record_looks(self, experiment_id: str, looks: dict) -> None: ...

    async def add_exposures(self, rows: list[ExposureRow]) -> None: ...

    async def experiment_counts(
        self, experiment_id: str, window_seconds: float, completed_at: float
    ) -> list[VariantCounts]:
        """Per exposed variant: an event counts for a list when it is on one of the list's
        items, by its viewer, and carries the list's recommendation_id or falls within
        ``window_seconds`` after the list; each event counts once per variant."""

    async def item_exposure_counts(self, content_id: str) -> tuple[int, int]:
        """Lists shown in experiments that held the item, and views of it carrying the id of
        one of them."""

    async def item_daily_views(self, content_id: str, days: int) -> list[tuple[int, int]]:
        """(day, views) of the item per UTC day (days since the epoch), oldest first, over the
        ``days`` days up to its latest view; days without a view are absent."""
