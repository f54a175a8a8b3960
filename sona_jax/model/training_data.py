"""Padded per-user training arrays: each user's most recent events plus sampled negatives."""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sona_jax.buckets import EVENT_BUCKETS, bucket, pad_rows
from sona_jax.config import LoraConfig, PreferenceConfig
from sona_jax.features.preference import engagement_weight


class RecentEvents(NamedTuple):
    """(users, max_events) most recent events per user, newest first, padded with mask 0.

    items: int32; targets: float32 in [0, 1]; mask: float32; counts: (users,) events per user
    (all of them, not only the kept ones); events: int64 each slot's index in the flat arrays
    the table was made from (-1 padded).
    """

    items: np.ndarray
    targets: np.ndarray
    mask: np.ndarray
    counts: np.ndarray
    events: np.ndarray


def engagement_targets(completion, rating, dismissed, cfg: PreferenceConfig) -> jnp.ndarray:
    """Engagement mapped to [0, 1] (weight / max_weight); dismissed events are 0."""
    weight = engagement_weight(
        jnp.asarray(completion, jnp.float32), jnp.asarray(rating, jnp.float32), cfg
    )
    return jnp.where(dismissed, 0.0, weight / cfg.max_weight).astype(jnp.float32)


_targets = jax.jit(engagement_targets, static_argnames=("cfg",))


def event_targets(completion, rating, dismissed, cfg: PreferenceConfig) -> np.ndarray:
    """`engagement_targets` of flat host arrays, padded to an `EVENT_BUCKETS` size (one
    program per bucket, not one per number of events)."""
    n = len(completion)
    size = bucket(n, EVENT_BUCKETS)
    return np.asarray(
        _targets(
            pad_rows(np.asarray(completion, np.float32), size),
            pad_rows(np.asarray(rating, np.float32), size),
            pad_rows(np.asarray(dismissed, bool), size),
            cfg,
        )
    )[:n]


def recent_events(
    user: np.ndarray,
    item: np.ndarray,
    timestamp: np.ndarray,
    targets: np.ndarray | None,
    users: np.ndarray,
    max_events: int,
) -> RecentEvents:
    """Newest ``max_events`` events of each user in ``users`` (row order follows ``users``).

    user, item, timestamp, targets: (events,) flat arrays (any order); targets None: zeros
    (a caller that computes them from the slots' `RecentEvents.events`).
    """
    if targets is None:
        targets = np.zeros(len(user), np.float32)
    row_of_user = np.full(max(int(user.max(initial=-1)), int(users.max(initial=-1))) + 1, -1)
    row_of_user[users] = np.arange(len(users))
    rows = row_of_user[user]
    keep = rows >= 0
    index = np.flatnonzero(keep)
    rows, item, timestamp, targets = rows[keep], item[keep], timestamp[keep], targets[keep]
    order = np.lexsort((-timestamp, rows))
    rows, item, targets, index = rows[order], item[order], targets[order], index[order]
    counts = np.bincount(rows, minlength=len(users))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(rows)) - starts[rows]
    kept = rank < max_events
    shape = (len(users), max_events)
    out_items = np.zeros(shape, np.int32)
    out_targets = np.zeros(shape, np.float32)
    out_mask = np.zeros(shape, np.float32)
    out_items[rows[kept], rank[kept]] = item[kept]
    out_targets[rows[kept], rank[kept]] = targets[kept]
    out_mask[rows[kept], rank[kept]] = 1.0
    out_events = np.full(shape, -1, np.int64)
    out_events[rows[kept], rank[kept]] = index[kept]
    return RecentEvents(out_items, out_targets, out_mask, counts, out_events)


@partial(jax.jit, static_argnames=("n_items", "n_negatives"))
def sample_negatives(
    key: jax.Array, history: jnp.ndarray, history_mask: jnp.ndarray, n_items: int, n_negatives: int
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Uniform unseen items per user: (users, n) indices and a mask that drops seen ones.

    history: (users, L) item indices; history_mask: (users, L).
    """
    negatives = jax.random.randint(key, (history.shape[0], n_negatives), 0, n_items)
    seen = jnp.any(
        (negatives[:, :, None] == history[:, None, :]) & (history_mask[:, None, :] > 0), axis=2
    )
    return negatives.astype(jnp.int32), (~seen).astype(jnp.float32)


def with_negatives(
    key: jax.Array, recent: RecentEvents, n_items: int, cfg: LoraConfig
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """(users, L + negatives) items, targets and mask: events first, then sampled negatives."""
    items = jnp.asarray(recent.items)
    mask = jnp.asarray(recent.mask)
    if cfg.negatives_per_user == 0:
        return items, jnp.asarray(recent.targets), mask
    negatives, negative_mask = sample_negatives(key, items, mask, n_items, cfg.negatives_per_user)
    return (
        jnp.concatenate([items, negatives], axis=1),
        jnp.concatenate([jnp.asarray(recent.targets), jnp.zeros(negatives.shape)], axis=1),
        jnp.concatenate([mask, negative_mask], axis=1),
    )
