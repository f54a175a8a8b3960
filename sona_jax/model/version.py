"""A trained model version: the base tier, every user's state and history, and the item tables."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import NamedTuple

import numpy as np

from sona_jax.config import SonaConfig
from sona_jax.model.lora import BaseTier
from sona_jax.model.tables import PopularityCounts

STORAGE_DTYPE = np.float16  # preference vectors and adapters at rest: SPEC 3.2, <= 10 KB / user


@dataclass
class UserState:
    """Per-user state at rest, row u is user u.

    preference: (users, d) unit vectors (zero rows: no qualifying events), float32 after
    training and float16 (their stored dtype, memory-mapped) when loaded from disk.
    adapter: (users, d, r) B_u (float16 at rest, zero = untrained).
    genre_affinity: (users, G); hourly: (users, 24); weekday: (users, 7); recency: (users,).
    interaction_count: (users,) int32 events seen (all kinds).
    """

    preference: np.ndarray
    adapter: np.ndarray
    genre_affinity: np.ndarray
    hourly: np.ndarray
    weekday: np.ndarray
    recency: np.ndarray
    interaction_count: np.ndarray

    def stored_bytes_per_user(self) -> float:
        """Bytes one user's state takes at rest (preference and adapter in float16)."""
        per_user = 0
        for item in fields(self):
            array = getattr(self, item.name)
            row_items = int(np.prod(array.shape[1:])) if array.ndim > 1 else 1
            itemsize = (
                np.dtype(STORAGE_DTYPE).itemsize
                if item.name in ("preference", "adapter")
                else array.dtype.itemsize
            )
            per_user += row_items * itemsize
        return float(per_user)


class UserHistoryTables(NamedTuple):
    """What the model derived from each user's events for serving, row u is user u.

    recent_items / recent_weights: (users, Lh) engaged items newest first, -1 padded;
    seen / dismissed: (users, S) item lists, -1 padded; qualifying: (users,) engaged events.
    """

    recent_items: np.ndarray
    recent_weights: np.ndarray
    seen: np.ndarray
    dismissed: np.ndarray
    qualifying: np.ndarray


class ItemTables(NamedTuple):
    """The item-side tables the hybrid sources read (host arrays).

    graph_neighbours / graph_weights: (items, M) adjacency lists; graph_dense: (items, items)
    or (0, 0); sequence_neighbours / sequence_weights: (items, M') next-watch successors
    (`tables.build_sequence_graph`); global_share, trending: (items,); by_time_of_day, by_device: (4, items);
    hour_share: (items, 24); item_moods: (items, 6) in `schema.MOODS` order; duration:
    (items,) minutes, release_year (items,), both -1 unknown; series (items,) int32
    `metadata.series_keys`, -1 none; mood_prior: (6, G).
    """

    graph_neighbours: np.ndarray
    graph_weights: np.ndarray
    graph_dense: np.ndarray
    sequence_neighbours: np.ndarray
    sequence_weights: np.ndarray
    global_share: np.ndarray
    trending: np.ndarray
    by_time_of_day: np.ndarray
    by_device: np.ndarray
    hour_share: np.ndarray
    item_moods: np.ndarray
    duration: np.ndarray
    release_year: np.ndarray
    series: np.ndarray
    mood_prior: np.ndarray


@dataclass
class TrainedModel:
    """One model version as `sona train` produces it and the service loads it."""

    version: int
    config: SonaConfig
    base: BaseTier
    users: UserState
    history: UserHistoryTables
    tables: ItemTables
    user_ids: np.ndarray
    item_ids: np.ndarray
    titles: np.ndarray
    genre_names: tuple[str, ...]
    item_genres: np.ndarray
    reference_time: float  # seconds since the epoch that ages were measured from
    popularity: PopularityCounts  # the counts behind the popularity tables
    metadata_map: np.ndarray  # (f, d) item metadata features -> embeddings (`model.metadata`)
    report: dict = field(default_factory=dict)
    # the transformer source's network, flattened (`sequence_model.flat_params`); {}: none
    transformer: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)
