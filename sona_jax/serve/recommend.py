"""A whole recommendation in one call, and personalisation scores of given items.

`recommend` is `retrieval.retrieve` then `rank.rank` in one jitted call: what the service
serves a viewer whose candidates it does not hold, and what evaluation and experiments measure.
`score_items` scores given items against the whole catalogue's normalisation (re-ranking).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from sona_jax.config import SonaConfig
from sona_jax.model.lora import base_queries, candidate_logits
from sona_jax.serve import retrieval, sources
from sona_jax.serve.fusion import SourceScores, normalise, relevance
from sona_jax.serve.rank import Recommendations, rank
from sona_jax.serve.state import RequestBatch, ServingState, UserBatch, has_context


def source_scores(
    state: ServingState,
    users: UserBatch,
    request: RequestBatch,
    cfg: SonaConfig,
    neighbours: jnp.ndarray | None = None,
) -> SourceScores:
    """Every source over the whole catalogue for a batch of users (``neighbours`` as
    `sources.collaborative_scores`)."""
    raw = jnp.stack(
        [
            sources.collaborative_scores(state, users, cfg, neighbours),
            sources.content_scores(state, users, cfg),
            sources.graph_scores(state, users, cfg),
            sources.context_scores(state, users, request, cfg),
        ],
        axis=1,
    )
    active = jnp.concatenate(
        [retrieval.active_retrieved(users), has_context(request)[:, None]], axis=1
    )
    return SourceScores(raw, sources.cold_start_scores(state, users, request, cfg), active)


def excluded_items(state: ServingState, users: UserBatch, request: RequestBatch) -> jnp.ndarray:
    """(users, items) True for rows that are not servable, dismissed, or watched when the
    request excludes watched items (`retrieval.excluded_items`)."""
    return retrieval.excluded_items(state, users, request.exclude_watched)


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
) -> Recommendations:
    """`retrieval.retrieve` then `rank`, in one call: what the service serves a viewer whose
    candidates it does not hold (and what evaluation measures); ``neighbours`` as `retrieve`'s."""
    candidates = retrieval.retrieve(state, users, request.exclude_watched, cfg, neighbours)
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
    neighbours: jnp.ndarray | None = None,
) -> ItemScores:
    """Personalisation scores of given items (users, C), normalised over the whole catalogue."""
    scores = source_scores(state, users, request, cfg, neighbours)
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
