"""SPEC 3.1 profiles from an event log: the one builder, for every user of a dataset (training)
or for the one viewer whose events just arrived (serving).

Events are converted once (`engine_events`) and padded to a bucketed length (`buckets.bucket`),
so a stream of viewers with different history lengths compiles one program per bucket; the
preference sums run over fixed-size chunks of that array, so the (events, d) gather of item
embeddings never exceeds ``EVENT_CHUNK`` rows.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from sona_jax.buckets import EVENT_BUCKETS, bucket
from sona_jax.config import SonaConfig
from sona_jax.data.schema import EventLog
from sona_jax.features import preference
from sona_jax.features.events import Events, engine_events
from sona_jax.features.history import build_user_history

EVENT_CHUNK = 1 << 18  # most events per preference-sum call (their gathered embeddings: chunk x d)


class UserProfiles(NamedTuple):
    """Host arrays, row u is user u.

    preference: (users, d) float32 unit vectors (zero rows: no qualifying events);
    genre_affinity: (users, G); hourly: (users, 24); weekday: (users, 7); recency: (users,);
    interaction_count: (users,) int32 events of any kind; qualifying: (users,) float32 events
    that pull the preference vector; recent_items / recent_weights: (users, Lh) engaged items
    newest first; seen / dismissed: (users, S) item lists, -1 padded.
    """

    preference: np.ndarray
    genre_affinity: np.ndarray
    hourly: np.ndarray
    weekday: np.ndarray
    recency: np.ndarray
    interaction_count: np.ndarray
    qualifying: np.ndarray
    recent_items: np.ndarray
    recent_weights: np.ndarray
    seen: np.ndarray
    dismissed: np.ndarray


def padded_events(log: EventLog, now: float, n_users: int) -> Events:
    """All of ``log`` relative to ``now``, padded to a bucketed length with rows of user
    ``n_users`` (dropped by every segment sum)."""
    return engine_events(log, now, pad_to=bucket(len(log), EVENT_BUCKETS), pad_user=n_users)


def event_weights(log: EventLog, now: float, cfg: SonaConfig) -> np.ndarray:
    """(events,) decay x engagement of each event of ``log``, 0 where it does not qualify."""
    events = padded_events(log, now, 0)
    return np.asarray(preference.event_weights(events, cfg.preference))[: len(log)]


def _preference_vectors(
    events: Events, item_embeddings: jnp.ndarray, n_users: int, cfg: SonaConfig
) -> jnp.ndarray:
    sums = preference.PreferenceSums(
        jnp.zeros((n_users, item_embeddings.shape[1])), jnp.zeros(n_users)
    )
    length = events.user.shape[0]
    for start in range(0, length, EVENT_CHUNK):
        chunk = Events(*(column[start : start + EVENT_CHUNK] for column in events))
        sums = preference.add_sums(
            sums, preference.preference_sums(chunk, item_embeddings, n_users, cfg.preference)
        )
    return preference.finish_preferences(sums)


def build_profiles(
    log: EventLog,
    item_embeddings: jnp.ndarray,
    item_genres: jnp.ndarray,
    n_users: int,
    now: float,
    cfg: SonaConfig,
) -> UserProfiles:
    """Every SPEC 3.1 quantity and the history tables of ``n_users`` users from their events.

    item_embeddings: (items, d); item_genres: (items, G) multi-hot; now: seconds since the
    epoch that ages are measured from.
    """
    pcfg = cfg.preference
    events = padded_events(log, now, n_users)
    weights = np.asarray(preference.event_weights(events, pcfg))[: len(log)]
    pattern = preference.temporal_patterns(events, n_users, pcfg)
    history = build_user_history(
        log, weights, n_users, cfg.collaborative.history_items, cfg.candidates.max_seen_items
    )
    return UserProfiles(
        preference=np.asarray(_preference_vectors(events, item_embeddings, n_users, cfg)),
        genre_affinity=np.asarray(
            preference.genre_affinities(events, jnp.asarray(item_genres), n_users, pcfg)
        ),
        hourly=np.asarray(pattern.hourly),
        weekday=np.asarray(pattern.weekday),
        recency=np.asarray(pattern.recency),
        interaction_count=np.bincount(log.user, minlength=n_users).astype(np.int32),
        qualifying=np.bincount(log.user[weights > 0], minlength=n_users).astype(np.float32),
        recent_items=history.recent_items,
        recent_weights=history.recent_weights,
        seen=history.seen,
        dismissed=history.dismissed,
    )
