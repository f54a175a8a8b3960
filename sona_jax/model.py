"""A trained model version: the base tier, every user's state, and lookup tables (host + device)."""

from __future__ import annotations

from dataclasses import dataclass, field

import jax.numpy as jnp
import numpy as np

from sona_jax.config import SonaConfig
from sona_jax.lora import BaseTier

STORAGE_DTYPE = np.float16  # preference vectors and adapters at rest: SPEC 3.2, <= 10 KB / user


@dataclass
class UserState:
    """Per-user arrays, row u is user u.

    preference: (users, d) float32 unit vectors (zero rows: no qualifying events).
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
        for name, array in vars(self).items():
            row_items = int(np.prod(array.shape[1:])) if array.ndim > 1 else 1
            itemsize = (
                np.dtype(STORAGE_DTYPE).itemsize
                if name in ("preference", "adapter")
                else array.dtype.itemsize
            )
            per_user += row_items * itemsize
        return float(per_user)


@dataclass
class TrainedModel:
    """One model version as `sona train` produces it and the service loads it."""

    version: int
    config: SonaConfig
    base: BaseTier
    users: UserState
    user_ids: np.ndarray
    item_ids: np.ndarray
    titles: np.ndarray
    genre_names: tuple[str, ...]
    item_genres: np.ndarray
    reference_time: float  # seconds since the epoch that ages were measured from
    tables: dict[str, np.ndarray] = field(default_factory=dict)
    report: dict = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def device_base(self) -> BaseTier:
        return BaseTier(*(jnp.asarray(x) for x in self.base))
