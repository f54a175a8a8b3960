"""SPEC 3.1 profiles from an event log: the one builder, for every user of a dataset (training)
or for the one viewer whose events just arrived (serving).

Events are converted once (`engine_events`) and padded to a bucketed length (`buckets.bucket`),
so a stream of viewers with different history lengths compiles one program per bucket; the
preference sums run over fixed-size chunks of that array, so the (events, d) gather of item
embeddings never exceeds ``EVENT_CHUNK`` rows.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sona_jax.buckets import EVENT_BUCKETS, bucket
from sona_jax.config import PreferenceConfig, SonaConfig
from sona_jax.data.schema import EventLog
from sona_jax.features import preference
from sona_jax.features.events import Events, engine_events, host_events
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


class _Arrays(NamedTuple):
    preference: jnp.ndarray
    genre_affinity: jnp.ndarray
    hourly: jnp.ndarray
    weekday: jnp.ndarray
    recency: jnp.ndarray
    weights: jnp.ndarray


@partial(jax.jit, static_argnames=("n_users", "cfg", "chunked"))
def _profile_arrays(
    events: Events,
    item_embeddings: jnp.ndarray,
    item_genres: jnp.ndarray,
    n_users: int,
    cfg: PreferenceConfig,
    chunked: bool,
) -> _Arrays:
    """Every per-user quantity in one program; the preference sums are left out (zero) when
    ``chunked``, for the caller to add chunk by chunk."""
    pattern = preference.temporal_patterns(events, n_users, cfg)
    vectors = (
        jnp.zeros((n_users, item_embeddings.shape[1]))
        if chunked
        else preference.finish_preferences(
            preference.preference_sums(events, item_embeddings, n_users, cfg)
        )
    )
    return _Arrays(
        vectors,
        preference.genre_affinities(events, item_genres, n_users, cfg),
        pattern.hourly,
        pattern.weekday,
        pattern.recency,
        preference.event_weights(events, cfg),
    )


def _chunked_preferences(
    events: Events, item_embeddings: jnp.ndarray, n_users: int, cfg: PreferenceConfig
) -> jnp.ndarray:
    """The preference vectors (users, d) from ``EVENT_CHUNK`` events at a time, events taken in
    user order: a chunk's events name at most ``EVENT_CHUNK`` consecutive users, so each chunk
    adds into that window of rows only. (Summing each chunk over every user cost
    chunks x users x d: 115 x 1 M x 512 at a million viewers, quadratic in the viewer count.)"""
    users = np.asarray(events.user)
    if np.any(users[1:] < users[:-1]):
        order = jnp.asarray(np.argsort(users, kind="stable"))
        events = Events(*(jnp.take(column, order, axis=0) for column in events))
        users = users[np.asarray(order)]
    sums = preference.PreferenceSums(
        jnp.zeros((n_users, item_embeddings.shape[1])), jnp.zeros(n_users)
    )
    for start in range(0, users.shape[0], EVENT_CHUNK):
        chunk = Events(*(column[start : start + EVENT_CHUNK] for column in events))
        sums = _add_chunk(sums, chunk, item_embeddings, int(users[start]), cfg)
    return preference.finish_preferences(sums)


@partial(jax.jit, static_argnames=("cfg",), donate_argnums=(0,))
def _add_chunk(
    sums: preference.PreferenceSums,
    chunk: Events,
    item_embeddings: jnp.ndarray,
    first_user: int,
    cfg: PreferenceConfig,
) -> preference.PreferenceSums:
    """``sums`` plus a user-ordered chunk's sums, at rows ``first_user`` onwards."""
    window = chunk.user.shape[0]  # users a chunk can name
    part = preference.preference_sums(
        chunk._replace(user=chunk.user - first_user), item_embeddings, window, cfg
    )
    rows = first_user + jnp.arange(window)
    return preference.PreferenceSums(
        sums.weighted.at[rows].add(part.weighted, mode="drop"),
        sums.total.at[rows].add(part.total, mode="drop"),
    )


class ProfileSums(NamedTuple):
    """What a viewer's events add up to, step by step (`add_profile_step`): preference sums,
    genre mass (users, G) and temporal counts."""

    preference: preference.PreferenceSums
    genre_mass: jnp.ndarray
    temporal: preference.TemporalSums


class ProfileStep(NamedTuple):
    """After a step: the sums so far, the profile they make (`_Arrays` without per-event
    weights) and the step's event weights (events,)."""

    sums: ProfileSums
    preference: jnp.ndarray
    genre_affinity: jnp.ndarray
    hourly: jnp.ndarray
    weekday: jnp.ndarray
    recency: jnp.ndarray
    weights: jnp.ndarray


@partial(jax.jit, static_argnames=("cfg",))
def add_profile_step(
    sums: ProfileSums,
    events: Events,
    item_embeddings: jnp.ndarray,
    item_genres: jnp.ndarray,
    cfg: PreferenceConfig,
) -> ProfileStep:
    """``sums`` plus one fixed-size step of events, and the profile of everything so far: one
    program whatever a viewer's history length (the last step's profile is the viewer's)."""
    n_users = sums.genre_mass.shape[0]
    step = ProfileSums(
        preference.preference_sums(events, item_embeddings, n_users, cfg),
        preference.genre_mass(events, item_genres, n_users, cfg),
        preference.temporal_sums(events, n_users, cfg),
    )
    total = jax.tree_util.tree_map(jnp.add, sums, step)
    pattern = preference.finish_temporal(total.temporal)
    return ProfileStep(
        total,
        preference.finish_preferences(total.preference),
        preference.finish_genres(total.genre_mass, cfg),
        pattern.hourly,
        pattern.weekday,
        pattern.recency,
        preference.event_weights(events, cfg),
    )


def empty_sums(n_users: int, dim: int, n_genres: int) -> ProfileSums:
    """Host `ProfileSums` of no events."""
    zeros = partial(np.zeros, dtype=np.float32)
    return ProfileSums(
        preference.PreferenceSums(zeros((n_users, dim)), zeros(n_users)),
        zeros((n_users, n_genres)),
        preference.TemporalSums(zeros((n_users, 24)), zeros((n_users, 7)), zeros(n_users)),
    )


def build_profiles_in_steps(
    log: EventLog,
    item_embeddings: jnp.ndarray,
    item_genres: jnp.ndarray,
    n_users: int,
    now: float,
    cfg: SonaConfig,
    step_events: int,
    run: Callable | None = None,
) -> UserProfiles:
    """`build_profiles` in steps of ``step_events`` events (`add_profile_step`): one program
    for any number of events, what serving builds a viewer's profile with. ``run(fn, args,
    static=...)`` runs the step (default: a plain jitted call)."""
    run = run or (lambda fn, args, static: fn(*args, **static))
    steps = max(1, -(-len(log) // step_events))
    events = host_events(log, now, pad_to=steps * step_events, pad_user=n_users)
    sums = empty_sums(n_users, item_embeddings.shape[1], item_genres.shape[1])
    weights = []
    for start in range(0, steps * step_events, step_events):
        chunk = Events(*(column[start : start + step_events] for column in events))
        out = run(
            add_profile_step,
            (sums, chunk, item_embeddings, item_genres),
            static={"cfg": cfg.preference},
        )
        sums = out.sums
        weights.append(np.asarray(out.weights))
    arrays = _Arrays(out.preference, out.genre_affinity, out.hourly, out.weekday, out.recency, None)
    return _assembled(log, arrays, np.concatenate(weights)[: len(log)], n_users, cfg)


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
    chunked = events.user.shape[0] > EVENT_CHUNK
    arrays = _profile_arrays(
        events, item_embeddings, jnp.asarray(item_genres), n_users, pcfg, chunked
    )
    if chunked:
        arrays = arrays._replace(
            preference=_chunked_preferences(events, item_embeddings, n_users, pcfg)
        )
    return _assembled(log, arrays, np.asarray(arrays.weights)[: len(log)], n_users, cfg)


def _assembled(
    log: EventLog, arrays: _Arrays, weights: np.ndarray, n_users: int, cfg: SonaConfig
) -> UserProfiles:
    """`UserProfiles` of the device ``arrays`` and the history tables (host) of ``log``;
    ``weights`` (events,) each event's `preference.event_weights`."""
    history = build_user_history(
        log, weights, n_users, cfg.collaborative.history_items, cfg.candidates.max_seen_items
    )
    return UserProfiles(
        preference=np.asarray(arrays.preference),
        genre_affinity=np.asarray(arrays.genre_affinity),
        hourly=np.asarray(arrays.hourly),
        weekday=np.asarray(arrays.weekday),
        recency=np.asarray(arrays.recency),
        interaction_count=np.bincount(log.user, minlength=n_users).astype(np.int32),
        qualifying=np.bincount(log.user[weights > 0], minlength=n_users).astype(np.float32),
        recent_items=history.recent_items,
        recent_weights=history.recent_weights,
        seen=history.seen,
        dismissed=history.dismissed,
    )
