"""SPEC 7 splits: P1 next-watch and P2 random, over any mask of a log's events.

* P1: each user's chronologically last interaction is the test item (users with >= 2 events).
  Many MovieLens viewers rate several items in the same second; which of them is "last" is
  decided by `order_ties` before any split, so it never depends on the file's line order:
  ``hashed`` (the default) orders same-second events by a fixed hash of (viewer, item),
  ``random`` in a seeded random order (the robustness row of `sona eval`). Catalogue order
  would be deterministic too but is not neutral: MovieLens numbers titles roughly by when they
  joined, so "highest index last" makes the test item the least popular of the second (on
  ML-100K P1 it halved popularity's and EASE's NDCG@10).
* P2: a seeded random 25 % of each user's (user, item) pairs.
* Validation splits are carved from train the same way (`make_split` over ``split.train``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from sona_jax.data.schema import Dataset, EventLog
from sona_jax.eval.baselines import interaction_matrix

if TYPE_CHECKING:
    from sona_jax.eval.options import EvalOptions

TIE_BREAKS = ("hashed", "random", "file")


@dataclass(frozen=True)
class Split:
    """train: mask over the log's events; test: (users, items) binary matrix;
    test_time_of_day / test_device: (users,) context of each user's (last) test event, -1 none."""

    train: np.ndarray
    test: sp.csr_matrix
    test_time_of_day: np.ndarray
    test_device: np.ndarray

    @property
    def users(self) -> np.ndarray:
        """Users with at least one test item."""
        return np.flatnonzero(np.diff(self.test.indptr) > 0)


def _test_matrix(log: EventLog, test: np.ndarray, n_users: int, n_items: int):
    matrix = interaction_matrix(log.user[test], log.item[test], n_users, n_items)
    tod = np.full(n_users, -1, np.int32)
    device = np.full(n_users, -1, np.int32)
    order = np.argsort(log.timestamp[test], kind="stable")  # the latest test event wins
    tod[log.user[test][order]] = log.time_of_day[test][order]
    device[log.user[test][order]] = log.device[test][order]
    return matrix, tod, device


def split_next_watch(log: EventLog, mask: np.ndarray, n_users: int, n_items: int) -> Split:
    """P1 over the events in ``mask``: each user's last event (users with >= 2 events)."""
    index = np.flatnonzero(mask)
    order = index[np.lexsort((log.timestamp[index], log.user[index]))]
    last = np.ones(len(order), bool)
    last[:-1] = log.user[order][1:] != log.user[order][:-1]
    counts = np.bincount(log.user[order], minlength=n_users)
    last &= counts[log.user[order]] >= 2
    test = np.zeros(len(log), bool)
    test[order[last]] = True
    # Drop other events of the same (user, item) as the test event from train: it must be unseen.
    test_pairs = set(zip(log.user[test].tolist(), log.item[test].tolist(), strict=True))
    same = np.array(
        [
            (u, i) in test_pairs
            for u, i in zip(log.user[index].tolist(), log.item[index].tolist(), strict=True)
        ]
    )
    train = mask.copy()
    train[index[same]] = False
    return Split(train, *_test_matrix(log, test, n_users, n_items))


def split_random(
    log: EventLog, mask: np.ndarray, n_users: int, n_items: int, seed: int, fraction: float = 0.25
) -> Split:
    """P2 over the events in ``mask``: a seeded random ``fraction`` of each user's (user, item)s."""
    index = np.flatnonzero(mask)
    pairs, first = np.unique(
        log.user[index].astype(np.int64) * n_items + log.item[index], return_inverse=True
    )
    pair_user = pairs // n_items
    rng = np.random.default_rng(seed)
    noise = rng.random(len(pairs))
    order = np.lexsort((noise, pair_user))
    counts = np.bincount(pair_user, minlength=n_users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(pairs), np.int64)
    rank[order] = np.arange(len(pairs)) - starts[pair_user[order]]
    n_test = np.floor(counts * fraction).astype(np.int64)
    test_pair = rank < n_test[pair_user]
    test = np.zeros(len(log), bool)
    test[index[test_pair[first]]] = True
    train = mask & ~test
    return Split(train, *_test_matrix(log, test, n_users, n_items))


def make_split(
    protocol: str, log: EventLog, mask: np.ndarray, n_users: int, n_items: int, seed: int
) -> Split:
    if protocol == "p1":
        return split_next_watch(log, mask, n_users, n_items)
    if protocol == "p2":
        return split_random(log, mask, n_users, n_items, seed)
    raise ValueError(f"unknown protocol {protocol!r}; use p1 or p2")


def order_ties(dataset: Dataset, rule: str, seed: int) -> Dataset:
    """``dataset`` with its events sorted by (user, timestamp) and same-second events of a
    user in the order ``rule`` names: ``hashed`` (a fixed hash of (user, item), the same for
    every seed), ``random`` (seeded) or ``file`` (as read). Every stable sort downstream
    (splits, histories, the graph walk's seed recency, sequences) then sees the same order."""
    log = dataset.events
    if rule == "hashed":
        tie = _mix(log.user.astype(np.uint64) << np.uint64(32) | log.item.astype(np.uint64))
    elif rule == "random":
        tie = np.random.default_rng(seed).random(len(log))
    elif rule == "file":
        tie = np.arange(len(log))
    else:
        raise ValueError(f"unknown tie break {rule!r}; use one of {', '.join(TIE_BREAKS)}")
    order = np.lexsort((tie, log.timestamp, log.user))
    return Dataset(
        dataset.name, dataset.catalogue, dataset.user_ids, log.take(order), dataset.extras
    )


def _mix(key: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a fixed, well-spread hash of uint64 keys."""
    with np.errstate(over="ignore"):
        key = (key ^ (key >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        key = (key ^ (key >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return key ^ (key >> np.uint64(31))


def subset(dataset: Dataset, mask: np.ndarray) -> Dataset:
    """The dataset with only the events in ``mask`` (same users and catalogue)."""
    return Dataset(
        dataset.name, dataset.catalogue, dataset.user_ids, dataset.events.take(mask), dataset.extras
    )


def first_events_mask(
    log: EventLog, mask: np.ndarray, users: np.ndarray, n_events: int, n_users: int
) -> np.ndarray:
    """``mask`` with ``users`` cut to their first ``n_events`` events (by time); others kept."""
    index = np.flatnonzero(mask)
    order = index[np.lexsort((log.timestamp[index], log.user[index]))]
    counts = np.bincount(log.user[order], minlength=n_users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.zeros(len(log), np.int64)
    rank[order] = np.arange(len(order)) - starts[log.user[order]]
    cut = np.zeros(n_users, bool)
    cut[users] = True
    return mask & (~cut[log.user] | (rank < n_events))


def protocol_splits(dataset: Dataset, options: EvalOptions) -> tuple[Split, Split]:
    """The test split over every event and the validation split carved from its train."""
    log, n_users, n_items = dataset.events, dataset.n_users, dataset.n_items
    everything = np.ones(len(log), bool)
    split = make_split(options.protocol, log, everything, n_users, n_items, options.seed)
    val_split = make_split(options.protocol, log, split.train, n_users, n_items, options.seed + 1)
    return split, val_split
