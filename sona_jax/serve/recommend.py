"""A whole recommendation in one call, and personalisation scores of given items.

`recommend` is `retrieval.retrieve` then `rank.rank` in one jitted call: what the service
serves a viewer whose candidates it does not hold, and what evaluation and experiments measure.
`score_items` scores given items against the whole catalogue's normalisation (re-ranking),
from the viewer's retrieved candidates as ranking does.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from sona_jax.config import SonaConfig
from sona_jax.model.lora import base_queries, candidate_logits, personalised_scores
from sona_jax.serve import retrieval, sources
from sona_jax.serve.filters import ItemFilter
from sona_jax.serve.fusion import MinMax, blend_with, blended, fit_min_max
from sona_jax.serve.rank import Recommendations, rank
from sona_jax.serve.request_candidates import RequestCandidates, request_candidates
from sona_jax.serve.retrieval import Candidates, KeptForScores
from sona_jax.serve.state import RequestBatch, ServingState, UserBatch, has_context


@partial(jax.jit, static_argnames=("cfg", "n_out"))
def recommend(
    state: ServingState,
    users: UserBatch,
    request: RequestBatch,
    limit: jnp.ndarray,
    weights: jnp.ndarray,
    cfg: SonaConfig,
    n_out: int,
    neighbours: jnp.ndarray | None = None,
    item_filter: ItemFilter | None = None,
) -> Recommendations:
    """`retrieval.retrieve` then `rank`, in one call: what the service serves a viewer whose
    candidates it does not hold (and what evaluation measures); ``neighbours`` as `retrieve`'s."""
    candidates = retrieval.retrieve(
        state, users, request.exclude_watched, cfg, neighbours, item_filter
    )
    return rank(state, users, request, candidates, limit, weights, cfg, n_out, item_filter)


@partial(jax.jit, static_argnames=("cfg", "n_out"))
def serve_lists(
    state: ServingState,
    users: UserBatch,
    request: RequestBatch,
    kept: Candidates,
    retrieve: jnp.ndarray,
    limit: jnp.ndarray,
    weights: jnp.ndarray,
    cfg: SonaConfig,
    n_out: int,
    neighbours: jnp.ndarray | None = None,
    item_filter: ItemFilter | None = None,
) -> tuple[Recommendations, Candidates]:
    """What the service runs for a batch of list requests, in one program whichever stage it
    needs: the viewers' candidates retrieved when ``retrieve`` (a bool scalar; ``kept`` is
    then a placeholder of its shape) or ``kept`` from an earlier call, then `rank`. Returns
    the lists and the candidates ranked from (to keep, when retrieved here). One program per
    batch size instead of two keeps a served version to a few programs (`program_plan`)."""
    candidates = jax.lax.cond(
        retrieve,
        lambda: retrieval.retrieve(
            state, users, request.exclude_watched, cfg, neighbours, item_filter
        ),
        lambda: kept,
    )
    lists = rank(state, users, request, candidates, limit, weights, cfg, n_out, item_filter)
    return lists, candidates


@partial(jax.jit, static_argnames=("cfg",))
def candidate_table(
    state: ServingState,
    users: UserBatch,
    request: RequestBatch,
    cfg: SonaConfig,
    neighbours: jnp.ndarray | None = None,
) -> RequestCandidates:
    """What `recommend` fuses, before fusion: each viewer's candidates (retrieved and the
    context's) with every source's raw score. Fitting the learned fusion reads it and fuses
    with `fusion.fit_blend` / `fusion.blended`, as ranking does."""
    candidates = retrieval.retrieve(state, users, request.exclude_watched, cfg, neighbours)
    return request_candidates(state, users, request, candidates, cfg)


class ItemScores(NamedTuple):
    """score: (users, C) blended relevance in [0, 1]; components: (users, C, N_SOURCES + 1)
    each source normalised, in SOURCE_NAMES order, and the LoRA boost (σ with the adapter
    minus σ without it)."""

    score: jnp.ndarray
    components: jnp.ndarray


@partial(jax.jit, static_argnames=("cfg",))
def score_items(
    state: ServingState,
    users: UserBatch,
    request: RequestBatch,
    kept: KeptForScores,
    items: jnp.ndarray,
    weights: jnp.ndarray,
    cfg: SonaConfig,
) -> ItemScores:
    """Personalisation scores of given ``items`` (users, C; -1 padding), each source normalised
    over every servable, undismissed item of the catalogue (watched ones included), from what
    retrieval ``kept`` of each viewer: collaborative from their nearest viewers and content at
    the items only, against its catalogue span (the two sources that read the whole pool or
    multiply the whole catalogue); graph, sequential, transformer, context and cold start over
    the catalogue (walks and small products). An item added or deleted since retrieval can leave the kept span wider or
    narrower than the catalogue's: a content score outside it counts as its end, until the
    viewer's candidates are retrieved again."""
    scorable = ~retrieval.unscorable_items(state, users)
    catalogue = jnp.stack(
        [
            sources.collaborative_scores(state, users, cfg, kept.neighbours),
            sources.graph_scores(state, users, cfg),
            sources.sequential_scores(state, users, cfg),
            sources.transformer_scores(state, users, cfg),
            sources.context_scores(state, users, request, cfg),
        ],
        axis=1,
    )  # (users, N_SOURCES - 1, items): every source but content
    cold = sources.cold_start_scores(state, users, request, cfg)
    low, high = kept.content_span[:, 0], kept.content_span[:, 1]
    safe = jnp.maximum(items, 0)
    with_adapter = personalised_scores(
        state.base, users.preference, users.adapter, safe, cfg.lora.scale
    )
    others = fit_min_max(catalogue, scorable[:, None, :])
    normalisers = MinMax(
        _with_content(others.low, low[:, None]), _with_content(others.spread, (high - low)[:, None])
    )
    active = jnp.concatenate(
        [retrieval.active_retrieved(state, users), has_context(request)[:, None]], axis=1
    )
    blend = blend_with(
        normalisers,
        fit_min_max(cold, scorable),
        active,
        weights,
        users.qualifying,
        request.cold_start,
    )
    raw = _with_content(
        jnp.take_along_axis(catalogue, safe[:, None, :], axis=2),
        jnp.clip(with_adapter, low[:, None], high[:, None]),
    )
    mask = jnp.take_along_axis(scorable, safe, axis=1) & (items >= 0)
    score, _ = blended(blend, raw, jnp.take_along_axis(cold, safe, axis=1), mask)
    normalised = blend.sources(raw, mask[:, None, :]) * active[:, :, None]
    without = jax.nn.sigmoid(
        candidate_logits(state.base, base_queries(state.base, users.preference), safe)
    )
    boost = jnp.where(active[:, 1:2], with_adapter - without, 0.0)
    components = jnp.concatenate([jnp.swapaxes(normalised, 1, 2), boost[:, :, None]], axis=2)
    return ItemScores(jnp.where(mask, score, 0.0), components)


def _with_content(others: jnp.ndarray, content: jnp.ndarray) -> jnp.ndarray:
    """(users, N_SOURCES, n) in SOURCE_NAMES order from the other sources (users,
    N_SOURCES - 1, n) in that order and content (users, n)."""
    return jnp.concatenate([others[:, :1], content[:, None], others[:, 1:]], axis=1)
