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
from sona_jax.serve import filters, mmr, sources
from sona_jax.serve.filters import ItemFilter
from sona_jax.serve.fusion import (
    COLD_START,
    EXPLORATION,
    N_SOURCES,
    NEW_CONTENT,
    SEQUENTIAL,
    blended,
    exploration_share,
    fit_blend,
    normalise,
)
from sona_jax.serve.new_items import new_item_slots
from sona_jax.serve.request_candidates import RequestCandidates, request_candidates
from sona_jax.serve.retrieval import Candidates
from sona_jax.serve.selection import top_k_unordered
from sona_jax.serve.state import RequestBatch, ServingState, UserBatch


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


class Pool(NamedTuple):
    """The most relevant ``pool_size`` columns of each viewer's candidates, MMR's input
    (users, pool): relevance in [0, 1] after the dismissal penalty (0 where invalid),
    positions (columns of `RequestCandidates`), catalogue items and which are valid."""

    relevance: jnp.ndarray
    positions: jnp.ndarray
    items: jnp.ndarray
    valid: jnp.ndarray


def fused(
    state: ServingState,
    users: UserBatch,
    request: RequestBatch,
    joined: RequestCandidates,
    weights: jnp.ndarray,
    item_filter: ItemFilter | None,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """The per-viewer blend (`fusion.fit_blend`) and each candidate's fused relevance
    (users, C): -inf where masked, or not the best of its series when the filter asks."""
    scores, mask = joined.scores, joined.mask
    blend = fit_blend(scores, mask, weights, users.qualifying, request.cold_start)
    everywhere, _ = blended(blend, scores.raw, scores.cold, mask)
    if item_filter is not None:
        keep = filters.best_of_each_series(state, item_filter, joined.items, everywhere)
        everywhere = jnp.where(keep, everywhere, -jnp.inf)
    return blend, everywhere


def candidate_pool(
    state: ServingState,
    users: UserBatch,
    joined: RequestCandidates,
    everywhere: jnp.ndarray,
    cfg: SonaConfig,
    n_out: int,
) -> Pool:
    """The top ``diversity.pool_size`` candidates by relevance, less what is close to what
    the viewer dismissed (`filters.dismissal_penalty`), the most relevant first."""
    pool_size = min(max(cfg.diversity.pool_size, n_out), joined.items.shape[1])
    relevance, positions = top_k_unordered(everywhere, pool_size)
    penalty = filters.dismissal_penalty(
        state,
        users.dismissed,
        jnp.take_along_axis(joined.items, jnp.maximum(positions, 0), axis=1),
        cfg.filters,
    )
    relevance = jnp.where(jnp.isfinite(relevance), jnp.maximum(relevance - penalty, 0.0), relevance)
    # MMR breaks ties by pool position, and at λ = 0 its first choice is all ties: put the most
    # relevant item first (a swap; sorting the pool cost about 5 % of the call).
    best = jnp.argmax(relevance, axis=1)[:, None]
    position = jnp.arange(relevance.shape[1])[None, :]
    swap = jnp.where(position == 0, best, jnp.where(position == best, 0, position))
    relevance = jnp.take_along_axis(relevance, swap, axis=1)
    positions = jnp.take_along_axis(positions, swap, axis=1)
    items = jnp.take_along_axis(joined.items, jnp.maximum(positions, 0), axis=1)
    valid = jnp.isfinite(relevance)
    return Pool(jnp.where(valid, relevance, 0.0), positions, items, valid)


def selected(
    state: ServingState,
    users: UserBatch,
    request: RequestBatch,
    pool: Pool,
    limit: jnp.ndarray,
    cfg: SonaConfig,
    n_out: int,
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """MMR's choice of ``limit`` pool slots (users, n_out), the last ``n_explore`` (users,)
    replaced by random pool items: (chosen pool slots, explored (users, n_out), n_explore)."""
    # MMR weighs relevance against cosine similarity, so give relevance the full [0, 1] range
    # within the pool: λ then means the same thing whatever the spread of the fused scores.
    chosen = mmr.mmr_select(
        normalise(pool.relevance, pool.valid),
        state.item_diversity[jnp.maximum(pool.items, 0)],
        pool.valid,
        request.mmr_lambda,
        n_out,
        limit,
    )
    n_explore = jnp.round(exploration_share(users.qualifying, request.cold_start) * limit).astype(
        jnp.int32
    )
    keys = jax.vmap(jax.random.PRNGKey)(request.seed)
    chosen, explored = jax.vmap(partial(_explore, most=most_explored(n_out, cfg)))(
        chosen, pool.valid, n_explore, limit, keys
    )
    return chosen, explored, n_explore


def explained_by(
    state: ServingState,
    users: UserBatch,
    items: jnp.ndarray,
    ok: jnp.ndarray,
    kind: jnp.ndarray,
    cfg: SonaConfig,
) -> jnp.ndarray:
    """(users, n) the history item each listed item is explained by (-1 none): the most
    similar of the viewer's most recent engaged items (diversity space); a sequential item
    cites the item it is watched next after."""
    safe_items = jnp.maximum(items, 0)
    seeds = users.recent_items[:, : cfg.candidates.explain_from]
    affinity = jnp.einsum(
        "unk,usk->uns",
        state.item_diversity[safe_items],
        state.item_diversity[jnp.maximum(seeds, 0)],
    )
    affinity = jnp.where(seeds[:, None, :] >= 0, affinity, -jnp.inf)
    best_seed = jnp.take_along_axis(seeds, jnp.argmax(affinity, axis=2), axis=1)
    based_on = jnp.where(ok & (seeds[:, :1] >= 0), best_seed, -1)
    # (a gather over every seed's successors: skipped in a batch that lists none)
    sequential = ok & (kind == SEQUENTIAL)
    return jax.lax.cond(
        jnp.any(sequential),
        lambda: jnp.where(
            sequential, sources.sequence_origin(state, users, safe_items, cfg), based_on
        ),
        lambda: based_on,
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
    them too). Stages: join, fuse, pool, MMR and exploration, new-item slots, kinds and
    explanations."""
    joined = request_candidates(state, users, request, candidates, cfg, item_filter)
    blend, everywhere = fused(state, users, request, joined, weights, item_filter)
    pool = candidate_pool(state, users, joined, everywhere, cfg, n_out)
    chosen, explored, n_explore = selected(state, users, request, pool, limit, cfg, n_out)

    ok = chosen >= 0
    at = jnp.maximum(chosen, 0)
    positions = jnp.where(ok, jnp.take_along_axis(pool.positions, at, 1), -1)
    item_scores = jnp.where(ok, jnp.take_along_axis(pool.relevance, at, 1), 0.0)
    n_new = jnp.round(cfg.catalogue.new_item_share * limit).astype(jnp.int32)
    stop = limit - n_explore
    n_columns = joined.items.shape[1]
    listed = jnp.where(
        positions >= 0, jnp.take_along_axis(joined.items, jnp.maximum(positions, 0), axis=1), -1
    )
    # offered new items count as the columns past the candidates'
    slots = new_item_slots(
        state,
        users,
        request,
        candidates,
        positions,
        listed,
        jnp.maximum(stop - n_new, 0),
        stop,
        n_columns,
        cfg,
        item_filter,
    )
    positions, offered = slots.positions, slots.offered
    ok = positions >= 0
    at_candidate = jnp.clip(positions, 0, n_columns - 1)
    candidate_items = jnp.take_along_axis(joined.items, at_candidate, axis=1)
    n_added = state.new_items.shape[0]
    new_rows = (
        state.new_items[jnp.clip(positions - n_columns, 0, n_added - 1)]
        if n_added
        else candidate_items
    )
    items = jnp.where(ok, jnp.where(offered, new_rows, candidate_items), -1)
    item_scores = jnp.where(offered, jnp.clip(slots.fit, 0.0, 1.0), item_scores)
    scores = joined.scores
    _, contrib = blended(
        blend,
        jnp.where(
            offered[:, None, :],
            slots.raw,
            jnp.take_along_axis(scores.raw, at_candidate[:, None, :], axis=2),
        ),
        jnp.where(offered, slots.cold, jnp.take_along_axis(scores.cold, at_candidate, axis=1)),
        ok,
    )
    source_kind = jnp.argmax(contrib, axis=2)
    source_kind = jnp.where(contrib[:, :, :N_SOURCES].sum(axis=2) > 0, source_kind, COLD_START)
    kind = jnp.where(offered, NEW_CONTENT, jnp.where(explored, EXPLORATION, source_kind))
    based_on = explained_by(state, users, items, ok, kind, cfg)
    return Recommendations(items, item_scores, jnp.where(ok, kind, -1), based_on, contrib)
