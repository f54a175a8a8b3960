"""One user's (or a few users') SPEC 3.1 profile from their events, for live updates.

The event array is padded to a bucketed length, so a stream of users with different history
lengths compiles one program per bucket.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from sona_jax import preference
from sona_jax.config import PreferenceConfig
from sona_jax.events import Events

EVENT_BUCKETS: tuple[int, ...] = (16, 64, 256, 1024, 4096, 16384, 65536)


class ProfileArrays(NamedTuple):
    """preference (users, d); genre_affinity (users, G); hourly (users, 24); weekday (users, 7);
    recency (users,); weights (events,) decay x engagement of each event (0 = not engaged)."""

    preference: jnp.ndarray
    genre_affinity: jnp.ndarray
    hourly: jnp.ndarray
    weekday: jnp.ndarray
    recency: jnp.ndarray
    weights: jnp.ndarray


def event_bucket(n: int) -> int:
    for size in EVENT_BUCKETS:
        if n <= size:
            return size
    return n  # beyond the largest bucket: exact size (rare, compiles once per size)


@partial(jax.jit, static_argnames=("n_users", "cfg"))
def profile_arrays(
    events: Events,
    item_embeddings: jnp.ndarray,
    item_genres: jnp.ndarray,
    n_users: int,
    cfg: PreferenceConfig,
) -> ProfileArrays:
    """Every SPEC 3.1 quantity for ``n_users`` users from one padded event array."""
    vectors = preference.finish_preferences(
        preference.preference_sums(events, item_embeddings, n_users, cfg)
    )
    pattern = preference.temporal_patterns(events, n_users, cfg)
    return ProfileArrays(
        vectors,
        preference.genre_affinities(events, item_genres, n_users, cfg),
        pattern.hourly,
        pattern.weekday,
        pattern.recency,
        preference.event_weights(events, cfg),
    )
