"""Host-side containers for a catalogue and an event log (numpy, struct of arrays).

These are what loaders and the synthetic generator produce and what the service stores; the engine
functions take the jnp views made by `sona_jax.features.events.engine_events`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DEVICE_TYPES: tuple[str, ...] = ("tv", "mobile", "desktop", "tablet")
TIMES_OF_DAY: tuple[str, ...] = ("morning", "afternoon", "evening", "night")
MOODS: tuple[str, ...] = ("uplifting", "dark", "relaxing", "tense", "funny", "romantic")
SECONDS_PER_DAY = 86_400.0
SECONDS_PER_HOUR = 3_600.0


class DatasetError(ValueError):
    """A data file is missing or malformed; the message names the file (and line)."""


def time_of_day_of_hour(hour: np.ndarray) -> np.ndarray:
    """Hour 0..23 -> index into TIMES_OF_DAY (morning 5-11, afternoon 12-16, evening 17-21)."""
    hour = np.asarray(hour)
    return np.select(
        [(hour >= 5) & (hour < 12), (hour >= 12) & (hour < 17), (hour >= 17) & (hour < 22)],
        [0, 1, 2],
        3,
    ).astype(np.int8)


def hour_of_timestamp(timestamp: np.ndarray) -> np.ndarray:
    """(events,) int64 hour 0..23 (UTC) of timestamps in seconds since the epoch."""
    return (np.mod(np.asarray(timestamp, np.float64), SECONDS_PER_DAY) // SECONDS_PER_HOUR).astype(
        np.int64
    )


def time_of_day_of_timestamp(timestamp: np.ndarray) -> np.ndarray:
    """(events,) index into TIMES_OF_DAY of each timestamp's hour (UTC)."""
    return time_of_day_of_hour(hour_of_timestamp(timestamp))


@dataclass(frozen=True)
class Catalogue:
    """Items, row i is item index i.

    Attributes:
        item_ids: (items,) external ids (strings).
        titles: (items,) titles.
        genre_names: the G genre names; ``genres`` is (items, G) multi-hot float32.
        duration_minutes: (items,) float32, NaN when unknown.
        release_year: (items,) float32, NaN when unknown.
        mood_names / moods: (items, M) multi-hot float32.
        series: (items,) int32 series index, -1 for none; ``series_names[s]`` is series s's
            id (without names: ``"series-<s>"``).
        embeddings: optional (items, d) float32; rows where ``has_embedding`` is False are fitted.
    """

    item_ids: np.ndarray
    titles: np.ndarray
    genre_names: tuple[str, ...]
    genres: np.ndarray
    duration_minutes: np.ndarray
    release_year: np.ndarray
    mood_names: tuple[str, ...] = ()
    moods: np.ndarray | None = None
    series: np.ndarray | None = None
    series_names: tuple[str, ...] = ()
    embeddings: np.ndarray | None = None
    has_embedding: np.ndarray | None = None

    @property
    def n_items(self) -> int:
        return len(self.item_ids)


@dataclass(frozen=True)
class EventLog:
    """Viewing events, one row each.

    Attributes:
        user, item: (events,) int32 indices into the dataset's users and catalogue.
        timestamp: (events,) float64 seconds since the Unix epoch (UTC).
        completion: (events,) float32 in [0, 1].
        rating: (events,) float32 in {0 = unrated, 1..5}.
        dismissed, rewatch: (events,) bool.
        device: (events,) int8 index into DEVICE_TYPES, -1 unknown.
        time_of_day: (events,) int8 index into TIMES_OF_DAY (derived from the hour when absent).
    """

    user: np.ndarray
    item: np.ndarray
    timestamp: np.ndarray
    completion: np.ndarray
    rating: np.ndarray
    dismissed: np.ndarray
    rewatch: np.ndarray
    device: np.ndarray
    time_of_day: np.ndarray

    def __len__(self) -> int:
        return len(self.user)

    def take(self, index: np.ndarray) -> EventLog:
        """The events at ``index`` (a mask or an integer array)."""
        return EventLog(**{name: getattr(self, name)[index] for name in self.__dataclass_fields__})

    @staticmethod
    def build(
        user,
        item,
        timestamp,
        completion,
        rating=None,
        dismissed=None,
        rewatch=None,
        device=None,
        time_of_day=None,
    ) -> EventLog:
        """Make a log from array-likes, filling optional columns with their neutral values."""
        n = len(user)
        timestamp = np.asarray(timestamp, np.float64)
        if time_of_day is None:
            time_of_day = time_of_day_of_timestamp(timestamp)
        return EventLog(
            user=np.asarray(user, np.int32),
            item=np.asarray(item, np.int32),
            timestamp=timestamp,
            completion=np.asarray(completion, np.float32),
            rating=np.zeros(n, np.float32) if rating is None else np.asarray(rating, np.float32),
            dismissed=np.zeros(n, bool) if dismissed is None else np.asarray(dismissed, bool),
            rewatch=np.zeros(n, bool) if rewatch is None else np.asarray(rewatch, bool),
            device=np.full(n, -1, np.int8) if device is None else np.asarray(device, np.int8),
            time_of_day=np.asarray(time_of_day, np.int8),
        )


@dataclass(frozen=True)
class Dataset:
    """A catalogue, its viewers and their events."""

    name: str
    catalogue: Catalogue
    user_ids: np.ndarray
    events: EventLog
    extras: dict = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return self.catalogue.n_items
