"""The second stage of a recommendation (SPEC 3.3-3.6 over a request's candidates): each
viewer's retrieved candidates joined with the context's, fused and normalised, MMR,
exploration, new-item slots and the facts explanations are made of.

`retrieval.retrieve` keeps what does not depend on the request; `rank` does the rest, so one
returning viewer costs a few hundred candidates' work, not the catalogue's.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from sona_jax.config import SonaConfig
from sona_jax.model.lora import fold_queries
from sona_jax.serve import filters, mmr, retrieval, sources
from sona_jax.serve.filters import ItemFilter
from sona_jax.serve.fusion import (
    COLD_START,
    EXPLORATION,
    N_SOURCES,
    NEW_CONTENT,
    SEQUENTIAL,
    SourceScores,
    blended,
    exploration_share,
    fit_blend,
    normalise,
)
from sona_jax.serve.retrieval import Candidates
from sona_jax.serve.selection import top_k_unordered
from sona_jax.serve.state import RequestBatch, ServingState, UserBatch, has_context


class Recommendations(NamedTuple):
    """items, scores: (users, n); kind: (users, n) index into KIND_NAMES;
    based_on: (users, n) the history item most like each item (-1 none);
    contributions: (users, n, N_SOURCES + 1) weighted share of each source and of cold start."""

    items: jnp.ndarray
    scores: jnp.ndarray
    kind: jnp.ndarray
    based_on: jnp.ndarray
    contributions: jnp.ndarray


def _explore(
    chosen: jnp.ndarray,
    pool_valid: jnp.ndarray,
    n_explore: jnp.ndarray,
    limit: jnp.ndarray,
    key: jax.Array,
    most: int,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Replace the last ``n_explore`` (at most ``most``) of the first ``limit`` slots by random
    unchosen pool items."""
    n_out, pool = chosen.shape[0], pool_valid.shape[0]
    taken = jnp.zeros(pool, bool).at[jnp.where(chosen >= 0, chosen, pool)].set(True, mode="drop")
    noise = jnp.where(taken | ~pool_valid, -jnp.inf, jax.random.uniform(key, (pool,)))
    # The first ``most`` of the noise's order are the same whatever k: drawing no more than
    # can be used cut this step from a fifth of a call to a tenth.
    values, order = jax.lax.top_k(noise, min(most, pool))
    slot = jnp.arange(n_out)
    first = limit - n_explore
    pick = jnp.clip(slot - first, 0, values.shape[0] - 1)
    explore = (slot >= first) & (slot < limit) & jnp.isfinite(values[pick])
    return jnp.where(explore, order[pick], chosen), explore


def most_explored(n_out: int, cfg: SonaConfig) -> int:
    """The most exploration slots a list of up to ``n_out`` items can have: ε never exceeds
    its start or its floor (the decay is at most 1), which no request's settings put above
    ``cold_start.most_exploration``."""
    return max(1, math.ceil(cfg.cold_start.most_exploration * n_out))


def _listed(items: jnp.ndarray, lists: jnp.ndarray) -> jnp.ndarray:
    """(users, n) whether each of ``items`` (users, n) is in the user's ``lists`` (users, m)."""
    return jnp.any((items[:, :, None] == lists[:, None, :]) & (items[:, :, None] >= 0), axis=2)


def _in_sorted(rows: jnp.ndarray, items: jnp.ndarray) -> jnp.ndarray:
    """(users, n) whether each of ``items`` (users, n) is in the user's row of ``rows``
    (users, P): ascending item indices, -1 padded at the end (`Candidates.items`). A binary
    search: O(n log P), where comparing every pair cost a third of the join."""
    keys = jnp.where(rows >= 0, rows, jnp.iinfo(jnp.int32).max)
    at = jax.vmap(partial(jnp.searchsorted, method="scan_unrolled"))(keys, items)
    found = jnp.take_along_axis(keys, jnp.minimum(at, rows.shape[1] - 1), axis=1)
    return (found == items) & (items >= 0)


def excluded_at(
    state: ServingState, users: UserBatch, request: RequestBatch, items: jnp.ndarray
) -> jnp.ndarray:
    """Whether each of ``items`` (users, n) is excluded as retrieval excludes items over the
    catalogue (`retrieval.retrieve`): O(n · list length), not O(catalogue)."""
    watched = _listed(items, users.seen) & request.exclude_watched[:, None]
    return (
        watched | _listed(items, users.dismissed) | ~state.item_valid[jnp.maximum(items, 0)]
    ) | (items < 0)


class RequestCandidates(NamedTuple):
    """What `rank` ranks, by column (users, C = P + per_source): the viewer's retrieved
    candidates, then the context's. items (users, C) catalogue rows (-1 none); scores: raw
    (users, N_SOURCES, C), cold (users, C), active (users, N_SOURCES); mask (users, C) the candidates."""

    items: jnp.ndarray
    scores: SourceScores
    mask: jnp.ndarray


def request_candidates(
    state: ServingState,
    users: UserBatch,
    request: RequestBatch,
    candidates: Candidates,
    cfg: SonaConfig,
    item_filter: ItemFilter | None = None,
) -> RequestCandidates:
    """The viewer's candidates joined with the request context's (`sources.context_row`),
    with every source's raw score. A context candidate that retrieval did not keep counts each
    retrieved source's score as the candidates' lowest (`Candidates.floor`: it ranked below
    every kept item's own source); the items added since the model get their content score
    (one matrix product: the same rows for everyone). Context and cold start are computed for
    every column. (A per-viewer gather of the context candidates' embeddings for their content
    score cost 22 of 26 ms here for 64 viewers.)"""
    n_users = users.preference.shape[0]
    contextual = has_context(request)
    context_items = state.context_items[sources.context_row(state, request)]
    fresh = (
        contextual[:, None]
        & ~excluded_at(state, users, request, context_items)
        & ~_in_sorted(candidates.items, context_items)
    )
    context_items = jnp.where(fresh, context_items, -1)
    items = jnp.concatenate([candidates.items, context_items], axis=1)
    n_context = context_items.shape[1]
    floor = jnp.broadcast_to(
        candidates.floor[:, :, None], (n_users, retrieval.RETRIEVED_SOURCES, n_context)
    )
    raw = jnp.concatenate(
        [
            jnp.concatenate([jnp.swapaxes(candidates.raw, 1, 2), floor], axis=2),
            sources.context_scores(state, users, request, cfg, items)[:, None, :],
        ],
        axis=1,
    )
    cold = sources.cold_start_scores(state, users, request, cfg, items)
    active = jnp.concatenate(
        [retrieval.active_retrieved(state, users), contextual[:, None]], axis=1
    )
    mask = (items >= 0) & state.item_valid[jnp.maximum(items, 0)]
    if item_filter is not None:  # retrieval dropped what they refuse; the context did not
        mask = mask & filters.passes(state, item_filter, items)
    return RequestCandidates(items, SourceScores(raw, cold, active), mask)


def new_item_scores(
    state: ServingState,
    users: UserBatch,
    request: RequestBatch,
    candidates: Candidates,
    cfg: SonaConfig,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """raw (users, N_SOURCES, F) and cold (users, F) scores of the items added since the
    model, for the contributions of the slots they are offered in: content from one matrix
    product (the same rows for everyone), context and cold start at them, collaborative, graph
    and sequential at the candidates' floor (they have no engagement yet)."""
    rows = jnp.maximum(state.new_items, 0)
    n_users, n_new = users.preference.shape[0], rows.shape[0]
    queries = fold_queries(state.base, users.preference, users.adapter, cfg.lora.scale)
    content = jax.nn.sigmoid(queries @ state.base.item_embeddings[rows].T + state.base.bias)
    at = jnp.broadcast_to(state.new_items, (n_users, n_new))
    floor = jnp.broadcast_to(
        candidates.floor[:, :, None], (n_users, retrieval.RETRIEVED_SOURCES, n_new)
    )
    raw = jnp.concatenate(
        [
            floor.at[:, 1].set(content),
            sources.context_scores(state, users, request, cfg, at)[:, None, :],
        ],
        axis=1,
    )
    return raw, sources.cold_start_scores(state, users, request, cfg, at)


def _offer_new_items(
    state: ServingState,
    users: UserBatch,
    request: RequestBatch,
    positions: jnp.ndarray,
    listed: jnp.ndarray,
    first: jnp.ndarray,
    stop: jnp.ndarray,
    n_before: int,
    cfg: SonaConfig,
    item_filter: ItemFilter | None = None,
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """Put the items added since the model that fit each viewer best (cosine of preference and
    embedding at least ``catalogue.new_item_min_fit``) in slots ``[first, stop)`` (users,) of
    ``positions`` (users, n: columns of `RequestCandidates`; new item j is column
    ``n_before + j``), skipping any already ``listed`` (users, n: catalogue rows). They have no
    graph edges or popularity yet, so the fused score alone would rarely show them (item cold
    start).

    Returns the positions, which slots now hold a new item (users, n), and their fit (users, n).
    """
    rows = state.new_items
    n_out = positions.shape[1]
    if rows.shape[0] == 0:
        return positions, jnp.zeros(positions.shape, bool), jnp.zeros(positions.shape)
    n_users = users.preference.shape[0]
    fit = users.preference @ state.base.item_embeddings[rows].T  # (users, F)
    new_rows = jnp.broadcast_to(rows, (n_users, rows.shape[0]))
    eligible = (
        ~excluded_at(state, users, request, new_rows)
        & ~_listed(new_rows, listed)
        & (fit >= cfg.catalogue.new_item_min_fit)
    )
    if item_filter is not None:
        eligible = (
            eligible
            & filters.passes(state, item_filter, new_rows)
            & ~(item_filter.one_per_series[:, None] & filters.share_series(state, new_rows, listed))
        )
    k = min(n_out, rows.shape[0])
    values, order = jax.lax.top_k(jnp.where(eligible, fit, -jnp.inf), k)
    slot = jnp.arange(n_out)[None, :]
    pick = jnp.clip(slot - first[:, None], 0, k - 1)
    picked_fit = jnp.take_along_axis(values, pick, axis=1)
    place = (slot >= first[:, None]) & (slot < stop[:, None]) & jnp.isfinite(picked_fit)
    new_positions = n_before + jnp.take_along_axis(order, pick, axis=1)
    return (
        jnp.where(place, new_positions, positions),
        place,
        jnp.where(place, picked_fit, 0.0),
    )


@partial(jax.jit, static_argnames=("cfg", "n_out"))
def rank(
    state: ServingState,
    users: UserBatch,
    request: RequestBatch,
    candidates: Candidates,
    limit: jnp.ndarray,
    weights: jnp.ndarray,
    cfg: SonaConfig,
    n_out: int,
    item_filter: ItemFilter | None = None,
) -> Recommendations:
    """Top ``limit`` (users,) recommendations per user in ``n_out`` columns (-1 past each
    user's limit) from each viewer's retrieved ``candidates`` and the request's context: the
    list length is traced, so one program serves every length up to ``n_out``.
    ``item_filter``: the requests' filters (`filters.ItemFilter`; retrieval must have applied
    them too); items close to what a viewer dismissed lose relevance before MMR
    (`filters.dismissal_penalty`)."""
    joined = request_candidates(state, users, request, candidates, cfg, item_filter)
    scores, mask = joined.scores, joined.mask
    blend = fit_blend(scores, mask, weights, users.qualifying, request.cold_start)
    everywhere, _ = blended(blend, scores.raw, scores.cold, mask)
    if item_filter is not None:
        keep = filters.best_of_each_series(state, item_filter, joined.items, everywhere)
        everywhere = jnp.where(keep, everywhere, -jnp.inf)

    n_columns = joined.items.shape[1]
    pool_size = min(max(cfg.diversity.pool_size, n_out), n_columns)
    pool_relevance, pool_positions = top_k_unordered(everywhere, pool_size)
    penalty = filters.dismissal_penalty(
        state,
        users.dismissed,
        jnp.take_along_axis(joined.items, jnp.maximum(pool_positions, 0), axis=1),
        cfg.filters,
    )
    pool_relevance = jnp.where(
        jnp.isfinite(pool_relevance), jnp.maximum(pool_relevance - penalty, 0.0), pool_relevance
    )
    # MMR breaks ties by pool position, and at λ = 0 its first choice is all ties: put the most
    # relevant item first (a swap; sorting the pool cost about 5 % of the call).
    best = jnp.argmax(pool_relevance, axis=1)[:, None]
    position = jnp.arange(pool_relevance.shape[1])[None, :]
    swap = jnp.where(position == 0, best, jnp.where(position == best, 0, position))
    pool_relevance = jnp.take_along_axis(pool_relevance, swap, axis=1)
    pool_positions = jnp.take_along_axis(pool_positions, swap, axis=1)
    pool_items = jnp.take_along_axis(joined.items, jnp.maximum(pool_positions, 0), axis=1)
    pool_valid = jnp.isfinite(pool_relevance)
    pool_relevance = jnp.where(pool_valid, pool_relevance, 0.0)
    # MMR weighs relevance against cosine similarity, so give relevance the full [0, 1] range
    # within the pool: λ then means the same thing whatever the spread of the fused scores.
    chosen = mmr.mmr_select(
        normalise(pool_relevance, pool_valid),
        state.item_diversity[jnp.maximum(pool_items, 0)],
        pool_valid,
        request.mmr_lambda,
        n_out,
        limit,
    )

    n_explore = jnp.round(exploration_share(users.qualifying, request.cold_start) * limit).astype(
        jnp.int32
    )
    keys = jax.vmap(jax.random.PRNGKey)(request.seed)
    chosen, explored = jax.vmap(partial(_explore, most=most_explored(n_out, cfg)))(
        chosen, pool_valid, n_explore, limit, keys
    )

    ok = chosen >= 0
    at = jnp.maximum(chosen, 0)
    positions = jnp.where(ok, jnp.take_along_axis(pool_positions, at, 1), -1)
    item_scores = jnp.where(ok, jnp.take_along_axis(pool_relevance, at, 1), 0.0)
    n_new = jnp.round(cfg.catalogue.new_item_share * limit).astype(jnp.int32)
    stop = limit - n_explore
    listed = jnp.where(
        positions >= 0, jnp.take_along_axis(joined.items, jnp.maximum(positions, 0), axis=1), -1
    )
    n_slots = positions.shape[1]
    n_added = state.new_items.shape[0]

    def offer_new_items(_):
        placed, offered_, fit_ = _offer_new_items(
            state,
            users,
            request,
            positions,
            listed,
            jnp.maximum(stop - n_new, 0),
            stop,
            n_columns,  # offered new items count as the columns past the candidates'
            cfg,
            item_filter,
        )
        new_raw, new_cold = new_item_scores(state, users, request, candidates, cfg)
        at_new = jnp.clip(placed - n_columns, 0, n_added - 1)
        return (
            placed,
            offered_,
            fit_,
            jnp.take_along_axis(new_raw, at_new[:, None, :], axis=2),
            jnp.take_along_axis(new_cold, at_new, axis=1),
        )

    def none_added(_):
        nothing = jnp.zeros(positions.shape)
        return (
            positions,
            jnp.zeros(positions.shape, bool),
            nothing,
            jnp.zeros((positions.shape[0], N_SOURCES, n_slots)),
            nothing,
        )

    # Items added since the model are few and often none: then their slots cost nothing (their
    # fit and scores over the catalogue's free capacity rows were 30 % of a call).
    any_added = jnp.any((state.new_items >= 0) & state.item_valid[jnp.maximum(state.new_items, 0)])
    positions, offered, fit, new_raw_at, new_cold_at = (
        jax.lax.cond(any_added, offer_new_items, none_added, None) if n_added else none_added(None)
    )
    ok = positions >= 0
    at_candidate = jnp.clip(positions, 0, n_columns - 1)
    candidate_items = jnp.take_along_axis(joined.items, at_candidate, axis=1)
    new_rows = (
        state.new_items[jnp.clip(positions - n_columns, 0, n_added - 1)]
        if n_added
        else candidate_items
    )
    items = jnp.where(ok, jnp.where(offered, new_rows, candidate_items), -1)
    item_scores = jnp.where(offered, jnp.clip(fit, 0.0, 1.0), item_scores)
    safe_items = jnp.maximum(items, 0)
    _, contrib = blended(
        blend,
        jnp.where(
            offered[:, None, :],
            new_raw_at,
            jnp.take_along_axis(scores.raw, at_candidate[:, None, :], axis=2),
        ),
        jnp.where(offered, new_cold_at, jnp.take_along_axis(scores.cold, at_candidate, axis=1)),
        ok,
    )
    source_kind = jnp.argmax(contrib, axis=2)
    source_kind = jnp.where(contrib[:, :, :N_SOURCES].sum(axis=2) > 0, source_kind, COLD_START)
    kind = jnp.where(offered, NEW_CONTENT, jnp.where(explored, EXPLORATION, source_kind))

    # based_on: the most similar of the user's most recent engaged items (diversity space).
    seeds = users.recent_items[:, : cfg.candidates.explain_from]
    affinity = jnp.einsum(
        "unk,usk->uns",
        state.item_diversity[safe_items],
        state.item_diversity[jnp.maximum(seeds, 0)],
    )
    affinity = jnp.where(seeds[:, None, :] >= 0, affinity, -jnp.inf)
    best_seed = jnp.take_along_axis(seeds, jnp.argmax(affinity, axis=2), axis=1)
    based_on = jnp.where(ok & (seeds[:, :1] >= 0), best_seed, -1)
    # a sequential item cites the item it is watched next after, not the most similar one
    # (a gather over every seed's successors: skipped in a batch that lists none)
    sequential = ok & (kind == SEQUENTIAL)
    based_on = jax.lax.cond(
        jnp.any(sequential),
        lambda: jnp.where(
            sequential, sources.sequence_origin(state, users, safe_items, cfg), based_on
        ),
        lambda: based_on,
    )
    return Recommendations(items, item_scores, jnp.where(ok, kind, -1), based_on, contrib)
