"""SPEC 3.3-3.6 composed: candidates, per-request normalisation, fusion, cold-start blending,
MMR, exploration and the facts explanations are made of.

A recommendation is two jitted stages: `retrieval.retrieve` (each viewer's candidates and the
request-independent source scores, kept by the service until the profile changes) and `rank`
(everything a request adds, over those candidates and the context's). `recommend` runs both in
one call (evaluation and experiments; the service runs `rank` alone for viewers it has
candidates for).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from sona_jax.config import DiversityConfig, FusionConfig, SonaConfig
from sona_jax.model.lora import base_queries, candidate_logits, fold_queries
from sona_jax.serve import mmr, retrieval, sources
from sona_jax.serve.retrieval import Candidates
from sona_jax.serve.selection import top_k_unordered
from sona_jax.serve.state import RequestBatch, ServingState, UserBatch

SOURCE_NAMES: tuple[str, ...] = ("collaborative", "content_based", "graph_based", "context")
KIND_NAMES: tuple[str, ...] = SOURCE_NAMES[:3] + (
    "context_aware",
    "cold_start",
    "exploration",
    "new_content",
)
COLD_START, EXPLORATION, NEW_CONTENT = 4, 5, 6


class SourceScores(NamedTuple):
    """raw: (users, 4, items) in SOURCE_NAMES order; cold: (users, items);
    active: (users, 4) whether each source has anything to say for that user and request."""

    raw: jnp.ndarray
    cold: jnp.ndarray
    active: jnp.ndarray


class Recommendations(NamedTuple):
    """items, scores: (users, n); kind: (users, n) index into KIND_NAMES;
    based_on: (users, n) the history item most like each item (-1 none);
    contributions: (users, n, 5) weighted share of each source and of cold start."""

    items: jnp.ndarray
    scores: jnp.ndarray
    kind: jnp.ndarray
    based_on: jnp.ndarray
    contributions: jnp.ndarray


def compiled_config(cfg: SonaConfig) -> SonaConfig:
    """``cfg`` as the jitted calls are keyed on it: the settings they take as arrays (fusion
    weights, MMR λ) set to their defaults, so changing those compiles nothing new."""
    return cfg.with_overrides(
        {
            "fusion": FusionConfig().model_dump(),
            "diversity": {"mmr_lambda": DiversityConfig().mmr_lambda},
        }
    )


def fusion_weights(cfg: SonaConfig) -> jnp.ndarray:
    """(4,) configured weights in SOURCE_NAMES order."""
    f = cfg.fusion
    return jnp.array([f.collaborative, f.content_based, f.graph_based, f.context], jnp.float32)


def source_scores(
    state: ServingState, users: UserBatch, request: RequestBatch, cfg: SonaConfig
) -> SourceScores:
    """Every source over the whole catalogue for a batch of users."""
    raw = jnp.stack(
        [
            sources.collaborative_scores(state, users, cfg),
            sources.content_scores(state, users, cfg),
            sources.graph_scores(state, users, cfg),
            sources.context_scores(state, users, request, cfg),
        ],
        axis=1,
    )
    has_profile = jnp.sum(users.preference**2, axis=1) > 0
    has_seeds = users.recent_items[:, 0] >= 0
    has_context = (request.device >= 0) | (request.time_of_day >= 0) | (request.mood >= 0)
    active = jnp.stack([has_profile, has_profile, has_seeds, has_context], axis=1)
    return SourceScores(raw, sources.cold_start_scores(state, users, request, cfg), active)


def excluded_items(state: ServingState, users: UserBatch, request: RequestBatch) -> jnp.ndarray:
    """(users, items) True for rows that are not servable, dismissed, or watched when the
    request excludes watched items (`retrieval.excluded_items`)."""
    return retrieval.excluded_items(state, users, request.exclude_watched)


class MinMax(NamedTuple):
    """Per-row min-max normalisation fitted on the candidates: low, spread (..., 1)."""

    low: jnp.ndarray
    spread: jnp.ndarray

    def __call__(self, scores: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
        ok = mask & jnp.isfinite(self.spread) & (self.spread > 0)
        return jnp.where(ok, (scores - self.low) / jnp.where(ok, self.spread, 1.0), 0.0)


def fit_min_max(scores: jnp.ndarray, mask: jnp.ndarray) -> MinMax:
    low = jnp.min(jnp.where(mask, scores, jnp.inf), axis=-1, keepdims=True)
    high = jnp.max(jnp.where(mask, scores, -jnp.inf), axis=-1, keepdims=True)
    return MinMax(low, high - low)


def normalise(scores: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    """Min-max to [0, 1] over each row's masked entries (0 elsewhere or when constant)."""
    return fit_min_max(scores, mask)(scores, mask)


def blend_weight(qualifying: jnp.ndarray, cfg: SonaConfig) -> jnp.ndarray:
    """SPEC 3.5 β: 0 below ``cold_start.min_events`` qualifying events, then min(1, n/20)."""
    c = cfg.cold_start
    return jnp.where(qualifying < c.min_events, 0.0, jnp.minimum(1.0, qualifying / c.blend_events))


def exploration_share(qualifying: jnp.ndarray, cfg: SonaConfig) -> jnp.ndarray:
    """ε = max(0.05, 0.2·0.995^n) while the user is still being blended in (β < 1), else 0."""
    c = cfg.cold_start
    epsilon = jnp.maximum(
        c.exploration_floor, c.exploration_start * c.exploration_decay**qualifying
    )
    return jnp.where(blend_weight(qualifying, cfg) < 1.0, epsilon, 0.0)


class Blend(NamedTuple):
    """How one request's scores become relevance: sources (users, 4, 1) and cold (users, 1)
    normalisers fitted on its candidates, source shares (users, 4), β (users,) and the
    context weight that shapes cold start (users,)."""

    sources: MinMax
    cold: MinMax
    shares: jnp.ndarray
    beta: jnp.ndarray
    context_weight: jnp.ndarray


def fit_blend(
    scores: SourceScores,
    mask: jnp.ndarray,
    weights: jnp.ndarray,
    qualifying: jnp.ndarray,
    cfg: SonaConfig,
) -> Blend:
    """Normalise over the request's candidates; weights renormalised over active sources."""
    active_weights = weights[None, :] * scores.active
    total = jnp.sum(active_weights, axis=1, keepdims=True)
    return Blend(
        fit_min_max(scores.raw, mask[:, None, :]),
        fit_min_max(scores.cold, mask),
        active_weights / jnp.where(total > 0, total, 1.0),
        jnp.where(total[:, 0] > 0, blend_weight(qualifying, cfg), 0.0),
        weights[3] * scores.active[:, 3],
    )


def blended(
    blend: Blend, raw: jnp.ndarray, cold: jnp.ndarray, mask: jnp.ndarray
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Relevance (users, n) in [0, 1] and contributions (users, n, 5) of items whose raw
    scores are raw (users, 4, n) and cold (users, n); mask (users, n) marks candidates."""
    normalised = blend.sources(raw, mask[:, None, :])
    cold_mix = (blend.cold(cold, mask) + blend.context_weight[:, None] * normalised[:, 3]) / (
        1.0 + blend.context_weight[:, None]
    )
    contributions = jnp.concatenate(
        [
            blend.beta[:, None, None] * blend.shares[:, :, None] * normalised,
            ((1.0 - blend.beta)[:, None] * cold_mix)[:, None, :],
        ],
        axis=1,
    )
    relevance_ = jnp.where(mask, contributions.sum(axis=1), -jnp.inf)
    return relevance_, jnp.swapaxes(contributions, 1, 2)


def relevance(
    scores: SourceScores,
    mask: jnp.ndarray,
    weights: jnp.ndarray,
    qualifying: jnp.ndarray,
    cfg: SonaConfig,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Blended relevance (users, items) and contributions (users, items, 5) over the catalogue.

    Sources are normalised over the request's candidates, weighted by ``weights`` renormalised
    over the active ones; cold start (shaped by context when given) fills in ``1 − β``.
    """
    blend = fit_blend(scores, mask, weights, qualifying, cfg)
    return blended(blend, scores.raw, scores.cold, mask)


def _explore(
    chosen: jnp.ndarray,
    pool_valid: jnp.ndarray,
    n_explore: jnp.ndarray,
    limit: jnp.ndarray,
    key: jax.Array,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Replace the last ``n_explore`` of the first ``limit`` slots by random unchosen pool items."""
    n_out, pool = chosen.shape[0], pool_valid.shape[0]
    taken = jnp.zeros(pool, bool).at[jnp.where(chosen >= 0, chosen, pool)].set(True, mode="drop")
    noise = jnp.where(taken | ~pool_valid, -jnp.inf, jax.random.uniform(key, (pool,)))
    values, order = jax.lax.top_k(noise, n_out)
    slot = jnp.arange(n_out)
    first = limit - n_explore
    pick = jnp.clip(slot - first, 0, n_out - 1)
    explore = (slot >= first) & (slot < limit) & jnp.isfinite(values[pick])
    return jnp.where(explore, order[pick], chosen), explore


def _listed(items: jnp.ndarray, lists: jnp.ndarray) -> jnp.ndarray:
    """(users, n) whether each of ``items`` (users, n) is in the user's ``lists`` (users, m)."""
    return jnp.any((items[:, :, None] == lists[:, None, :]) & (items[:, :, None] >= 0), axis=2)


def excluded_at(
    state: ServingState, users: UserBatch, request: RequestBatch, items: jnp.ndarray
) -> jnp.ndarray:
    """`excluded_items` at ``items`` (users, n) only: O(n · list length), not O(catalogue)."""
    watched = _listed(items, users.seen) & request.exclude_watched[:, None]
    return (
        watched | _listed(items, users.dismissed) | ~state.item_valid[jnp.maximum(items, 0)]
    ) | (items < 0)


class RequestCandidates(NamedTuple):
    """What `rank` ranks, by column (users, C = P + per_source): the viewer's retrieved
    candidates, then the context's. items (users, C) catalogue rows (-1 none); scores: raw
    (users, 4, C), cold (users, C), active (users, 4); mask (users, C) the candidates."""

    items: jnp.ndarray
    scores: SourceScores
    mask: jnp.ndarray


def request_candidates(
    state: ServingState,
    users: UserBatch,
    request: RequestBatch,
    candidates: Candidates,
    cfg: SonaConfig,
) -> RequestCandidates:
    """The viewer's candidates joined with the request context's (`retrieval.context_row`),
    with every source's raw score. A context candidate that retrieval did not keep counts each
    retrieved source's score as the candidates' lowest (`Candidates.floor`: it ranked below
    every kept item's own source); the items added since the model get their content score
    (one matrix product: the same rows for everyone). Context and cold start are computed for
    every column. (A per-viewer gather of the context candidates' embeddings for their content
    score cost 22 of 26 ms here for 64 viewers.)"""
    n_users = users.preference.shape[0]
    has_context = (request.device >= 0) | (request.time_of_day >= 0) | (request.mood >= 0)
    context_items = state.context_items[retrieval.context_row(state, request)]
    fresh = (
        has_context[:, None]
        & ~excluded_at(state, users, request, context_items)
        & ~_listed(context_items, candidates.items)
    )
    context_items = jnp.where(fresh, context_items, -1)
    items = jnp.concatenate([candidates.items, context_items], axis=1)
    n_context = context_items.shape[1]
    floor = jnp.broadcast_to(candidates.floor[:, :, None], (n_users, 3, n_context))
    raw = jnp.concatenate(
        [
            jnp.concatenate([jnp.swapaxes(candidates.raw, 1, 2), floor], axis=2),
            sources.context_scores(state, users, request, cfg, items)[:, None, :],
        ],
        axis=1,
    )
    cold = sources.cold_start_scores(state, users, request, cfg, items)
    active = jnp.concatenate([retrieval.active_retrieved(users), has_context[:, None]], axis=1)
    mask = (items >= 0) & state.item_valid[jnp.maximum(items, 0)]
    return RequestCandidates(items, SourceScores(raw, cold, active), mask)


def new_item_scores(
    state: ServingState,
    users: UserBatch,
    request: RequestBatch,
    candidates: Candidates,
    cfg: SonaConfig,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """raw (users, 4, F) and cold (users, F) scores of the items added since the model, for
    the contributions of the slots they are offered in: content from one matrix product (the
    same rows for everyone), context and cold start at them, collaborative and graph at the
    candidates' floor (they have no engagement yet)."""
    rows = jnp.maximum(state.new_items, 0)
    n_users, n_new = users.preference.shape[0], rows.shape[0]
    queries = fold_queries(state.base, users.preference, users.adapter, cfg.lora.scale)
    content = jax.nn.sigmoid(queries @ state.base.item_embeddings[rows].T + state.base.bias)
    at = jnp.broadcast_to(state.new_items, (n_users, n_new))
    floor = jnp.broadcast_to(candidates.floor[:, :, None], (n_users, 3, n_new))
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
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """Put the items added since the model that fit each viewer best (cosine of preference and
    embedding at least ``catalogue.new_item_min_fit``) in slots ``[first, stop)`` (users,) of
    ``positions`` (users, n: columns of `RequestCandidates`, whose new items start at column
    ``n_before``), skipping any already ``listed`` (users, n: catalogue rows); they have no graph edges or popularity yet, so
    the fused score alone would rarely show them (item cold start).

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
) -> Recommendations:
    """Top ``limit`` (users,) recommendations per user in ``n_out`` columns (-1 past each
    user's limit) from each viewer's retrieved ``candidates`` and the request's context: the
    list length is traced, so one program serves every length up to ``n_out``."""
    joined = request_candidates(state, users, request, candidates, cfg)
    scores, mask = joined.scores, joined.mask
    blend = fit_blend(scores, mask, weights, users.qualifying, cfg)
    everywhere, _ = blended(blend, scores.raw, scores.cold, mask)

    n_columns = joined.items.shape[1]
    pool_size = min(max(cfg.diversity.pool_size, n_out), n_columns)
    pool_relevance, pool_positions = top_k_unordered(everywhere, pool_size)
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

    n_explore = jnp.round(exploration_share(users.qualifying, cfg) * limit).astype(jnp.int32)
    keys = jax.vmap(jax.random.PRNGKey)(request.seed)
    chosen, explored = jax.vmap(_explore)(chosen, pool_valid, n_explore, limit, keys)

    ok = chosen >= 0
    at = jnp.maximum(chosen, 0)
    positions = jnp.where(ok, jnp.take_along_axis(pool_positions, at, 1), -1)
    item_scores = jnp.where(ok, jnp.take_along_axis(pool_relevance, at, 1), 0.0)
    n_new = jnp.round(cfg.catalogue.new_item_share * limit).astype(jnp.int32)
    stop = limit - n_explore
    n_before = n_columns  # offered new items: columns past the candidates'
    listed = jnp.where(
        positions >= 0, jnp.take_along_axis(joined.items, jnp.maximum(positions, 0), axis=1), -1
    )
    positions, offered, fit = _offer_new_items(
        state,
        users,
        request,
        positions,
        listed,
        jnp.maximum(stop - n_new, 0),
        stop,
        n_before,
        cfg,
    )
    ok = positions >= 0
    safe_positions = jnp.maximum(positions, 0)
    new_rows = jnp.broadcast_to(state.new_items, (positions.shape[0], state.new_items.shape[0]))
    every_item = jnp.concatenate([joined.items, new_rows], axis=1)
    items = jnp.where(ok, jnp.take_along_axis(every_item, safe_positions, axis=1), -1)
    item_scores = jnp.where(offered, jnp.clip(fit, 0.0, 1.0), item_scores)
    safe_items = jnp.maximum(items, 0)
    all_raw, all_cold = scores.raw, scores.cold
    if state.new_items.shape[0]:
        new_raw, new_cold = new_item_scores(state, users, request, candidates, cfg)
        all_raw = jnp.concatenate([all_raw, new_raw], axis=2)
        all_cold = jnp.concatenate([all_cold, new_cold], axis=1)
    _, contrib = blended(
        blend,
        jnp.take_along_axis(all_raw, safe_positions[:, None, :], axis=2),
        jnp.take_along_axis(all_cold, safe_positions, axis=1),
        ok,
    )
    source_kind = jnp.argmax(contrib, axis=2)
    source_kind = jnp.where(contrib[:, :, :4].sum(axis=2) > 0, source_kind, COLD_START)
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
    return Recommendations(items, item_scores, jnp.where(ok, kind, -1), based_on, contrib)


@partial(jax.jit, static_argnames=("cfg", "n_out"))
def recommend(
    state: ServingState,
    users: UserBatch,
    request: RequestBatch,
    limit: jnp.ndarray,
    weights: jnp.ndarray,
    cfg: SonaConfig,
    n_out: int,
) -> Recommendations:
    """`retrieval.retrieve` then `rank`, in one call: what the service serves a viewer whose
    candidates it does not hold (and what evaluation measures)."""
    candidates = retrieval.retrieve(state, users, request.exclude_watched, cfg)
    return rank(state, users, request, candidates, limit, weights, cfg, n_out)


class ItemScores(NamedTuple):
    """score: (users, C) blended relevance in [0, 1]; components: (users, C, 5) normalised
    collaborative, content-based, graph-based, context and the LoRA boost (σ with the adapter
    minus σ without it)."""

    score: jnp.ndarray
    components: jnp.ndarray


@partial(jax.jit, static_argnames=("cfg",))
def score_items(
    state: ServingState,
    users: UserBatch,
    request: RequestBatch,
    items: jnp.ndarray,
    weights: jnp.ndarray,
    cfg: SonaConfig,
) -> ItemScores:
    """Personalisation scores of given items (users, C), normalised over the whole catalogue."""
    scores = source_scores(state, users, request, cfg)
    everything = ~excluded_items(
        state, users, request._replace(exclude_watched=jnp.zeros_like(request.exclude_watched))
    )
    relevance_, _ = relevance(scores, everything, weights, users.qualifying, cfg)
    normalised = normalise(scores.raw, everything[:, None, :]) * scores.active[:, :, None]
    safe = jnp.maximum(items, 0)
    picked = jnp.take_along_axis(normalised, safe[:, None, :], axis=2)  # (users, 4, C)
    with_adapter = jnp.take_along_axis(scores.raw[:, 1], safe, axis=1)
    without = jax.nn.sigmoid(
        candidate_logits(state.base, base_queries(state.base, users.preference), safe)
    )
    boost = jnp.where(scores.active[:, 1:2], with_adapter - without, 0.0)
    components = jnp.concatenate([jnp.swapaxes(picked, 1, 2), boost[:, :, None]], axis=2)
    score = jnp.take_along_axis(jnp.where(jnp.isfinite(relevance_), relevance_, 0.0), safe, axis=1)
    return ItemScores(jnp.where(items >= 0, score, 0.0), components)
