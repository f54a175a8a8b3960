"""Per-user padded history tables (host numpy): recent engaged items, seen and dismissed items."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from sona_jax.buckets import bucket
from sona_jax.data.schema import EventLog

MIN_TABLE_WIDTH = 8  # narrowest padded table: tiny histories share one compiled width


class UserHistory(NamedTuple):
    """Per-user padded tables (users, width); items are -1 where padded.

    recent_items / recent_weights: engaged items newest first, weight = decay x engagement.
    seen: every item with any event; dismissed: dismissed items (both in item order).
    """

    recent_items: np.ndarray
    recent_weights: np.ndarray
    seen: np.ndarray
    dismissed: np.ndarray


def ranked_within_user(user: np.ndarray, order_key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """order (events,): the events sorted by user, then ``order_key`` ascending; rank
    (events,): each sorted event's position within its user's events (0 first)."""
    order = np.lexsort((order_key, user))
    user = user[order]
    counts = np.bincount(user)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return order, np.arange(len(user)) - starts[user]


def newest_first(timestamp: np.ndarray) -> np.ndarray:
    """(events,) an order key, ascending = newest first: by ``timestamp`` (seconds), and
    within a second the later-logged event first, so "the viewer's latest item" is the same
    event the log (and P1's test split) ends with."""
    key = np.empty(len(timestamp), np.int64)
    key[np.lexsort((np.arange(len(timestamp)), timestamp))] = -np.arange(len(timestamp))
    return key


def per_user_table(
    user: np.ndarray,
    item: np.ndarray,
    order_key: np.ndarray,
    values: np.ndarray | None,
    n_users: int,
    width: int | None = None,
    cap: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(users, width) items and values per user, sorted by ``order_key`` ascending, -1 padded
    (values None when ``values`` is: a list of items alone, 4 GB less at a million viewers).

    Without ``width`` the table is as wide as the longest user's list (at most ``cap``),
    bucketed (`sona_jax.buckets.bucket`).
    """
    if len(user) == 0:
        width = width or MIN_TABLE_WIDTH
        empty = np.full((n_users, width), -1, np.int32)
        return empty, None if values is None else np.zeros((n_users, width), np.float32)
    order, rank = ranked_within_user(user, order_key)
    user, item = user[order], item[order]
    longest = int(rank.max()) + 1
    if cap is not None:
        longest = min(longest, cap)
    width = width or bucket(longest, (MIN_TABLE_WIDTH,))
    keep = rank < width
    items = np.full((n_users, width), -1, np.int32)
    items[user[keep], rank[keep]] = item[keep]
    if values is None:
        return items, None
    vals = np.zeros((n_users, width), np.float32)
    vals[user[keep], rank[keep]] = values[order][keep]
    return items, vals


def _item_lists(user: np.ndarray, item: np.ndarray, n_users: int, cap: int) -> np.ndarray:
    """(users, width) each user's distinct items in item order, -1 padded."""
    pairs = np.unique(np.stack([user, item], 1), axis=0)
    table, _ = per_user_table(
        pairs[:, 0],
        pairs[:, 1],
        np.zeros(len(pairs)),
        None,
        n_users,
        cap=cap,
    )
    return table


def recent_engaged(
    log: EventLog, weights: np.ndarray, n_users: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """(users, width) each user's engaged items (``weights`` > 0) newest first, and their
    weights; -1 / 0 padded."""
    engaged = weights > 0
    return per_user_table(
        log.user[engaged],
        log.item[engaged],
        newest_first(log.timestamp[engaged]),
        weights[engaged],
        n_users,
        width=width,
    )


def build_user_history(
    log: EventLog, weights: np.ndarray, n_users: int, recent_width: int, max_seen: int
) -> UserHistory:
    """History tables from events; ``weights`` are `preference.event_weights` (0 = not engaged).

    recent lists are ``recent_width`` wide; seen / dismissed lists keep at most ``max_seen``.
    """
    recent_items, recent_weights = recent_engaged(log, weights, n_users, recent_width)
    seen = _item_lists(log.user, log.item, n_users, max_seen)
    dismissed = _item_lists(log.user[log.dismissed], log.item[log.dismissed], n_users, max_seen)
    return UserHistory(recent_items, recent_weights, seen, dismissed)
