"""Host-side builders of the tables the hybrid sources read (numpy / scipy in, arrays out).

* the item co-engagement graph as fixed-width adjacency lists (never a dense items x items);
* the next-watch transitions between a viewer's engaged items, as adjacency lists too;
* popularity: global, trending, per time-of-day and per device (smoothed toward global), and
  each item's audience-hour distribution;
* the mood -> genre prior.

The per-user history tables are built with the profiles (`sona_jax.features.history`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from sona_jax.config import SonaConfig
from sona_jax.data.schema import (
    DEVICE_TYPES,
    MOODS,
    SECONDS_PER_DAY,
    TIMES_OF_DAY,
    EventLog,
    hour_of_timestamp,
)
from sona_jax.features.history import newest_first, ranked_within_user

# Genre name stems each mood favours; matched case-insensitively against a catalogue's genres.
MOOD_GENRE_STEMS: dict[str, tuple[str, ...]] = {
    "uplifting": ("children", "animation", "musical", "adventure", "family"),
    "dark": ("horror", "crime", "war", "film-noir", "noir"),
    "relaxing": ("documentary", "reality", "comedy"),
    "tense": ("thriller", "mystery", "action"),
    "funny": ("comedy", "animation"),
    "romantic": ("romance", "drama", "musical"),
}


class Graph(NamedTuple):
    """Item co-engagement graph as adjacency lists.

    neighbours: (items, M) int32 item indices (padding points at the item itself);
    weights: (items, M) float32 cosine co-engagement, 0 on padding;
    dense: (items, items) float32 the full regression matrix (zero diagonal, negative edges
    kept) when the first hop is dense and the catalogue small enough, else (0, 0).
    """

    neighbours: np.ndarray
    weights: np.ndarray
    dense: np.ndarray


class Popularity(NamedTuple):
    """global_share: (items,) sums to 1; trending: (items,) recent decayed share;
    by_time_of_day: (4, items) and by_device: (4, items) smoothed shares;
    hour_share: (items, 24) each item's audience over hours (smoothed).
    """

    global_share: np.ndarray
    trending: np.ndarray
    by_time_of_day: np.ndarray
    by_device: np.ndarray
    hour_share: np.ndarray


def _engagement_sets(
    log: EventLog, weights: np.ndarray, n_users: int, n_items: int, per_user: int
) -> sp.csr_matrix:
    """(users, items) binary: each user's ``per_user`` most recent engaged items. Built from
    the ranked events, not a padded (users, per_user) table: that was 8 GB at a million
    viewers and 1,000 items each."""
    engaged = weights > 0
    user, item = log.user[engaged], log.item[engaged]
    order, rank = ranked_within_user(user, newest_first(log.timestamp[engaged]))
    keep = rank < per_user
    x = sp.csr_matrix(
        (np.ones(int(keep.sum()), np.float32), (user[order][keep], item[order][keep])),
        shape=(n_users, n_items),
    )
    x.sum_duplicates()
    x.data[:] = 1.0  # repeated engagement counts once
    return x


def _cosine_rows(x: sp.csr_matrix, block: int):
    """Yield (start, rows) of cosine co-engagement ``C_ij / sqrt(d_i d_j)``, ``block`` item rows
    at a time, as a sparse (block, items) matrix without its diagonal: a large catalogue's
    rows are nearly all zero, and densifying them cost items x items work and memory."""
    inv_sqrt = (1.0 / np.sqrt(np.maximum(np.asarray(x.sum(axis=0)).ravel(), 1.0))).astype(
        np.float32
    )
    xt = x.T.tocsr()
    for start in range(0, x.shape[1], block):
        stop = min(start + block, x.shape[1])
        co = (xt[start:stop] @ x).tocoo()
        co.data *= inv_sqrt[start + co.row] * inv_sqrt[co.col]
        co.data[co.col == start + co.row] = 0.0
        yield start, co


def _top_of_sparse(co: sp.coo_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, k) columns and weights of each row's k largest positive entries, largest first
    (ties by column), -1 / 0 where a row has fewer."""
    positive = co.data > 0
    row, col, value = co.row[positive], co.col[positive], co.data[positive]
    order = np.lexsort((col, -value, row))
    row, col, value = row[order], col[order], value[order]
    rank = np.arange(len(row)) - np.searchsorted(row, row)
    keep = rank < k
    top = np.full((co.shape[0], k), -1, np.int32)
    top_w = np.zeros((co.shape[0], k), np.float32)
    top[row[keep], rank[keep]] = col[keep]
    top_w[row[keep], rank[keep]] = value[keep]
    return top, top_w


def _top_of_dense(co: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, k) columns and weights of each row's k largest entries, largest first."""
    top = np.argpartition(-co, k - 1, axis=1)[:, :k]
    top_w = np.take_along_axis(co, top, axis=1)
    order = np.argsort(-top_w, axis=1)
    return np.take_along_axis(top, order, 1), np.take_along_axis(top_w, order, 1)


def item_regression(x: sp.csr_matrix, l2: float) -> np.ndarray:
    """(items, items) float64 EASE weights (Steck 2019) of a (users, items) matrix ``x``:
    ``B = −P·diag(1/diag(P))``, ``P = (XᵀX + λI)⁻¹``, so ``x_u B`` scores user u's items
    (the diagonal is not zeroed here). The EASE baseline and the regression graph share it."""
    gram = (x.T @ x).toarray().astype(np.float64)
    gram[np.diag_indices_from(gram)] += l2
    precision = np.linalg.inv(gram)
    return precision / -np.diag(precision)


def _regression_rows(x: sp.csr_matrix, l2: float, block: int):
    """Yield rows of the closed-form item-item regression on co-engagement (EASE weights).

    ``B = −P / diag(P)`` with ``P = (XᵀX + λI)⁻¹``: a co-engagement graph whose edge weights
    discount what other neighbours already explain. Needs one dense items x items inverse, so
    `build_graph` uses it only up to ``graph.max_regression_items``.
    """
    weights = item_regression(x, l2).T
    for start in range(0, x.shape[1], block):
        yield start, weights[start : start + block]


def build_graph(
    log: EventLog,
    weights: np.ndarray,
    n_users: int,
    n_items: int,
    cfg: SonaConfig,
) -> Graph:
    """Top-M co-engagement neighbours per item, from users' engaged items.

    Each user contributes at most ``graph.max_user_items`` of their most recent engaged items.
    Edge weights are cosine co-engagement (``graph.weighting = "cosine"``, rows computed
    ``graph.block_items`` at a time, fewer when that would pass ``graph.block_cells``: memory
    O(block x items), never items x items) or the item-item
    regression (``"regression"``, catalogues up to ``graph.max_regression_items``; larger ones
    fall back to cosine). Only positive edges are kept in the lists; with
    ``graph.first_hop = "dense"`` small catalogues (up to ``graph.max_dense_items``) also keep
    the whole regression matrix.
    """
    gcfg = cfg.graph
    m = gcfg.neighbours
    block = max(1, min(gcfg.block_items, gcfg.block_cells // max(n_items, 1)))
    x = _engagement_sets(log, weights, n_users, n_items, gcfg.max_user_items)
    use_regression = gcfg.weighting == "regression" and n_items <= gcfg.max_regression_items
    rows = (
        _regression_rows(x, gcfg.regression_l2, block) if use_regression else _cosine_rows(x, block)
    )
    keep_dense = gcfg.first_hop == "dense" and use_regression and n_items <= gcfg.max_dense_items
    dense = np.zeros((n_items, n_items) if keep_dense else (0, 0), np.float32)
    neighbours = np.tile(np.arange(n_items, dtype=np.int32)[:, None], (1, m))
    out_weights = np.zeros((n_items, m), np.float32)
    k = min(m, n_items - 1)
    for start, co in rows:
        stop = start + co.shape[0]
        if k == 0 and not keep_dense:
            continue
        if sp.issparse(co):
            top, top_w = _top_of_sparse(co, k)
        else:
            co = np.array(co, np.float32)
            co[np.arange(stop - start), np.arange(start, stop)] = 0.0
            if keep_dense:
                dense[start:stop] = co
            if k == 0:
                continue
            top, top_w = _top_of_dense(co, k)
        positive = top_w > 0
        neighbours[start:stop, :k] = np.where(positive, top, neighbours[start:stop, :k])
        out_weights[start:stop, :k] = np.where(positive, top_w, 0.0)
    return Graph(neighbours, out_weights, dense)


def build_sequence_graph(
    log: EventLog, weights: np.ndarray, n_items: int, cfg: SonaConfig
) -> tuple[np.ndarray, np.ndarray]:
    """(items, M) successors and their weights (`SequentialConfig`): item j follows item i when
    a viewer engaged with j 1..``window`` engaged events after i (weight ``window_decay`` per
    step apart), summed over viewers, each row normalised to sum 1 over its successors (an
    estimate of what comes next), then cut to the M largest. Order within a viewer is the one
    their history table uses (`history.newest_first`: newest first, same-second events
    latest-logged first), so the serving seeds and these links agree. Padding points at the
    item itself with weight 0."""
    s = cfg.sequential
    engaged = weights > 0
    user, item = log.user[engaged], log.item[engaged]
    order, _ = ranked_within_user(user, newest_first(log.timestamp[engaged]))
    user, item = user[order], item[order]  # each viewer's engaged items, newest first
    rows, cols, values = [], [], []
    for step in range(1, s.window + 1):
        same = user[step:] == user[:-step]
        rows.append(item[step:][same])  # the earlier item...
        cols.append(item[:-step][same])  # ...links to the one `step` events after it
        values.append(np.full(int(same.sum()), s.window_decay ** (step - 1), np.float32))
    links = sp.csr_matrix(
        (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n_items, n_items),
    )
    links.sum_duplicates()
    links.setdiag(0.0)
    links.eliminate_zeros()
    out_degree = np.asarray(links.sum(axis=1)).ravel()
    links = sp.diags(1.0 / np.maximum(out_degree, 1e-12)) @ links
    k = min(s.neighbours, max(n_items - 1, 1))
    top, top_w = _top_of_sparse(links.tocoo(), k)
    own = np.arange(n_items, dtype=np.int32)[:, None]
    return np.where(top >= 0, top, own).astype(np.int32), top_w


def _smoothed_share(counts: np.ndarray, prior: np.ndarray, strength: float) -> np.ndarray:
    """(groups, items) ``(n_gi + a·prior_i) / (n_g + a)``."""
    return (counts + strength * prior[None, :]) / (counts.sum(1, keepdims=True) + strength)


class PopularityCounts(NamedTuple):
    """The event counts behind `Popularity` (non-dismissed events), as of time ``at``.

    watched: (items,); recent: (items,) Σ exp(−age_days / trending_window_days) at ``at``;
    by_time_of_day, by_device: (4, items); per_hour: (24, items); at: () seconds since the epoch.
    Counts add up, so a model's counts plus the events that arrived since give the tables of
    both (`add_events`), exactly as if built from all of them.
    """

    watched: np.ndarray
    recent: np.ndarray
    by_time_of_day: np.ndarray
    by_device: np.ndarray
    per_hour: np.ndarray
    at: np.ndarray


def zero_counts(n_items: int, at: float) -> PopularityCounts:
    return PopularityCounts(
        np.zeros(n_items),
        np.zeros(n_items),
        np.zeros((len(TIMES_OF_DAY), n_items)),
        np.zeros((len(DEVICE_TYPES), n_items)),
        np.zeros((24, n_items)),
        np.asarray(at, np.float64),
    )


def resize_counts(counts: PopularityCounts, n_items: int) -> PopularityCounts:
    """``counts`` over ``n_items`` items (new items count nothing; a smaller size truncates)."""
    have = counts.watched.shape[0]
    if have == n_items:
        return counts

    def fit(x: np.ndarray) -> np.ndarray:
        out = np.zeros((*x.shape[:-1], n_items), x.dtype)
        keep = min(have, n_items)
        out[..., :keep] = x[..., :keep]
        return out

    return PopularityCounts(*(fit(x) for x in counts[:-1]), counts.at)


def add_events(
    counts: PopularityCounts, log: EventLog, now: float, cfg: SonaConfig
) -> PopularityCounts:
    """``counts`` advanced to ``now`` (recent mass decays) with ``log``'s events added."""
    n_items = counts.watched.shape[0]
    watched = ~log.dismissed
    item = log.item[watched].astype(np.int64)
    window = cfg.candidates.trending_window_days
    age_days = np.maximum(now - log.timestamp[watched], 0.0) / SECONDS_PER_DAY
    decay = np.exp(-max(now - float(counts.at), 0.0) / SECONDS_PER_DAY / window)

    def grouped(table: np.ndarray, groups: np.ndarray) -> np.ndarray:
        table = table.copy()
        known = groups >= 0
        np.add.at(table, (groups[known], item[known]), 1.0)
        return table

    return PopularityCounts(
        counts.watched + np.bincount(item, minlength=n_items),
        counts.recent * decay
        + np.bincount(item, weights=np.exp(-age_days / window), minlength=n_items),
        grouped(counts.by_time_of_day, log.time_of_day[watched].astype(np.int64)),
        grouped(counts.by_device, log.device[watched].astype(np.int64)),
        grouped(counts.per_hour, hour_of_timestamp(log.timestamp[watched])),
        np.asarray(max(float(now), float(counts.at)), np.float64),
    )


def popularity_counts(log: EventLog, n_items: int, now: float, cfg: SonaConfig) -> PopularityCounts:
    """The counts of ``log`` as of ``now``."""
    return add_events(zero_counts(n_items, now), log, now, cfg)


def popularity_tables(
    counts: PopularityCounts, cfg: SonaConfig, valid: np.ndarray | None = None
) -> Popularity:
    """Popularity tables from counts; items outside ``valid`` (items,) get no share."""
    n_items = counts.watched.shape[0]
    valid = np.ones(n_items, bool) if valid is None else np.asarray(valid, bool)
    keep = valid.astype(np.float64)
    watched = counts.watched * keep
    global_share = (watched + keep) / (watched.sum() + keep.sum())
    recent = counts.recent * keep
    trending = recent / max(recent.sum(), 1e-12)
    strength = cfg.context.popularity_smoothing
    by_tod = _smoothed_share(counts.by_time_of_day * keep, global_share, strength)
    by_device = _smoothed_share(counts.by_device * keep, global_share, strength)
    per_hour = counts.per_hour * keep
    overall_hours = (per_hour.sum(1) + 1.0) / (per_hour.sum() + 24.0)
    hour_share = (per_hour.T + strength * overall_hours[None, :]) / (
        per_hour.sum(0)[:, None] + strength
    )
    return Popularity(
        global_share.astype(np.float32),
        trending.astype(np.float32),
        by_tod.astype(np.float32),
        by_device.astype(np.float32),
        hour_share.astype(np.float32),
    )


def build_popularity(log: EventLog, n_items: int, now: float, cfg: SonaConfig) -> Popularity:
    """Popularity tables from non-dismissed events."""
    return popularity_tables(popularity_counts(log, n_items, now, cfg), cfg)


def mood_genre_prior(genre_names: tuple[str, ...]) -> np.ndarray:
    """(moods, G) 0/1: the genres each mood in MOODS favours, matched by name stem."""
    prior = np.zeros((len(MOODS), len(genre_names)), np.float32)
    lowered = [g.lower() for g in genre_names]
    for m, mood in enumerate(MOODS):
        for g, name in enumerate(lowered):
            if any(name.startswith(stem) for stem in MOOD_GENRE_STEMS[mood]):
                prior[m, g] = 1.0
    return prior


def learned_mood_prior(
    stems: np.ndarray, item_moods: np.ndarray, item_genres: np.ndarray, watched: np.ndarray
) -> np.ndarray:
    """(moods, G) the mood -> genre prior: the name-stem prior ``stems`` raised to what the
    catalogue and its audience say — for each mood, the genres of the items tagged with it,
    each item weighted by 1 + its watch count, scaled so a mood's strongest genre is 1."""
    weight = 1.0 + np.asarray(watched, np.float64)
    mass = (np.asarray(item_moods, np.float64) * weight[:, None]).T @ np.asarray(
        item_genres, np.float64
    )
    top = mass.max(axis=1, keepdims=True)
    learned = np.where(top > 0, mass / np.where(top > 0, top, 1.0), 0.0)
    return np.maximum(stems, learned).astype(np.float32)
