"""SPEC 3.1: preference vectors, genre affinities and temporal patterns for many users at once.

All functions are O(events) segment sums over a flat event array; padding rows carry a user index
outside ``[0, n_users)`` and are dropped. Nothing here can produce NaN: users without qualifying
events get the zero vector, uniform time distributions and zero recency.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from sona_jax.config import PreferenceConfig
from sona_jax.features.events import Events


class PreferenceSums(NamedTuple):
    """Running sums that chunks of events add into; `finish_preferences` normalises them.

    weighted: (users, d) sum of decay * weight * embedding.
    total: (users,) sum of decay * weight.
    """

    weighted: jnp.ndarray
    total: jnp.ndarray


class TemporalPattern(NamedTuple):
    """hourly: (users, 24) and weekday: (users, 7) distributions; recency: (users,) in [0, 1]."""

    hourly: jnp.ndarray
    weekday: jnp.ndarray
    recency: jnp.ndarray


def engagement_weight(
    completion: jnp.ndarray, rating: jnp.ndarray, cfg: PreferenceConfig
) -> jnp.ndarray:
    """Per-event engagement weight in [0, max_weight]; rating 0 means unrated."""
    weight = completion
    rated = rating > 0
    weight = jnp.where(
        rated & (rating >= cfg.high_rating_min), weight * cfg.high_rating_boost, weight
    )
    weight = jnp.where(
        rated & (rating <= cfg.low_rating_max), weight * cfg.low_rating_factor, weight
    )
    weight = jnp.where(
        completion >= cfg.full_completion_min, weight * cfg.full_completion_boost, weight
    )
    return jnp.clip(weight, 0.0, cfg.max_weight)


def qualifies(
    completion: jnp.ndarray, rating: jnp.ndarray, dismissed: jnp.ndarray, cfg: PreferenceConfig
) -> jnp.ndarray:
    """Whether an event pulls the preference vector: watched enough (or rated well), not dismissed."""
    kept = (completion >= cfg.completion_threshold) | (rating >= cfg.rated_override_min)
    return kept & ~dismissed


def temporal_decay(age_days: jnp.ndarray, cfg: PreferenceConfig) -> jnp.ndarray:
    """``decay_base ** (age_days / decay_period_days)``; age in (real) days."""
    return jnp.power(cfg.decay_base, age_days / cfg.decay_period_days)


def event_weights(events: Events, cfg: PreferenceConfig) -> jnp.ndarray:
    """(events,) decay * engagement for qualifying events, 0 otherwise."""
    keep = qualifies(events.completion, events.rating, events.dismissed, cfg)
    weight = engagement_weight(events.completion, events.rating, cfg)
    return jnp.where(keep, temporal_decay(events.age_days, cfg) * weight, 0.0)


@partial(jax.jit, static_argnames=("n_users", "cfg"))
def preference_sums(
    events: Events, item_embeddings: jnp.ndarray, n_users: int, cfg: PreferenceConfig
) -> PreferenceSums:
    """Sums for one chunk of events; add chunks with `add_sums`. item_embeddings: (items, d)."""
    weights = event_weights(events, cfg)
    weighted = jax.ops.segment_sum(
        weights[:, None] * item_embeddings[events.item], events.user, num_segments=n_users
    )
    total = jax.ops.segment_sum(weights, events.user, num_segments=n_users)
    return PreferenceSums(weighted, total)


def add_sums(a: PreferenceSums, b: PreferenceSums) -> PreferenceSums:
    return PreferenceSums(a.weighted + b.weighted, a.total + b.total)


@jax.jit
def finish_preferences(sums: PreferenceSums) -> jnp.ndarray:
    """(users, d) L2-normalised weighted means; zero rows for users with no qualifying event."""
    safe_total = jnp.where(sums.total > 0, sums.total, 1.0)
    mean = sums.weighted / safe_total[:, None]
    norm = jnp.linalg.norm(mean, axis=1, keepdims=True)
    return jnp.where(
        (sums.total[:, None] > 0) & (norm > 0), mean / jnp.where(norm > 0, norm, 1.0), 0.0
    )


def build_preference_vectors(
    events: Events, item_embeddings: jnp.ndarray, n_users: int, cfg: PreferenceConfig
) -> jnp.ndarray:
    """(users, d) preference vectors from one event array (see SPEC 3.1)."""
    return finish_preferences(preference_sums(events, item_embeddings, n_users, cfg))


def genre_mass(
    events: Events, item_genres: jnp.ndarray, n_users: int, cfg: PreferenceConfig
) -> jnp.ndarray:
    """(users, G) the qualifying, decayed engagement of each genre (an item's weight split
    evenly over its genres): sums that chunks of events add into; `finish_genres` smooths
    them. item_genres: (items, G) multi-hot."""
    per_item = item_genres / jnp.maximum(item_genres.sum(axis=1, keepdims=True), 1.0)
    weights = event_weights(events, cfg)
    return jax.ops.segment_sum(
        weights[:, None] * per_item[events.item], events.user, num_segments=n_users
    )


def finish_genres(mass: jnp.ndarray, cfg: PreferenceConfig) -> jnp.ndarray:
    """(users, G) Laplace-smoothed genre shares of `genre_mass`."""
    smoothed = mass + cfg.genre_smoothing
    return smoothed / smoothed.sum(axis=1, keepdims=True)


@partial(jax.jit, static_argnames=("n_users", "cfg"))
def genre_affinities(
    events: Events, item_genres: jnp.ndarray, n_users: int, cfg: PreferenceConfig
) -> jnp.ndarray:
    """(users, G) Laplace-smoothed genre shares of the qualifying, decayed engagement.

    item_genres: (items, G) multi-hot; an item's weight is split evenly over its genres.
    """
    return finish_genres(genre_mass(events, item_genres, n_users, cfg), cfg)


def _distribution(counts: jnp.ndarray) -> jnp.ndarray:
    total = counts.sum(axis=1, keepdims=True)
    uniform = jnp.full_like(counts, 1.0 / counts.shape[1])
    return jnp.where(total > 0, counts / jnp.where(total > 0, total, 1.0), uniform)


class TemporalSums(NamedTuple):
    """Counts that chunks of events add into (`finish_temporal` makes them a
    `TemporalPattern`): hourly (users, 24) and weekday (users, 7) (non-dismissed) events,
    recent (users,) those within the recency window."""

    hourly: jnp.ndarray
    weekday: jnp.ndarray
    recent: jnp.ndarray


def temporal_sums(events: Events, n_users: int, cfg: PreferenceConfig) -> TemporalSums:
    """`TemporalSums` of one chunk of events."""
    watched = (~events.dismissed).astype(jnp.float32)
    hourly = jax.ops.segment_sum(
        watched[:, None] * jax.nn.one_hot(events.hour, 24), events.user, num_segments=n_users
    )
    weekday = jax.ops.segment_sum(
        watched[:, None] * jax.nn.one_hot(events.weekday, 7), events.user, num_segments=n_users
    )
    recent = jax.ops.segment_sum(
        watched * (events.age_days < cfg.recency_window_days), events.user, num_segments=n_users
    )
    return TemporalSums(hourly, weekday, recent)


def finish_temporal(sums: TemporalSums) -> TemporalPattern:
    """Distributions and recency bias of `TemporalSums`."""
    count = sums.hourly.sum(axis=1)
    recency = jnp.where(count > 0, sums.recent / jnp.where(count > 0, count, 1.0), 0.0)
    return TemporalPattern(_distribution(sums.hourly), _distribution(sums.weekday), recency)


@partial(jax.jit, static_argnames=("n_users", "cfg"))
def temporal_patterns(events: Events, n_users: int, cfg: PreferenceConfig) -> TemporalPattern:
    """Hourly and weekday distributions of a user's (non-dismissed) viewing, and recency bias."""
    return finish_temporal(temporal_sums(events, n_users, cfg))
