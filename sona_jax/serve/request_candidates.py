"""What a request ranks: the viewer's retrieved candidates joined with the request context's
candidates, each with every source's raw score, and the exclusions retrieval applies over the
catalogue, checked at given items instead."""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from sona_jax.config import SonaConfig
from sona_jax.serve import filters, retrieval, sources
from sona_jax.serve.filters import ItemFilter
from sona_jax.serve.fusion import SourceScores
from sona_jax.serve.retrieval import Candidates
from sona_jax.serve.state import RequestBatch, ServingState, UserBatch, has_context


def listed_in(items: jnp.ndarray, lists: jnp.ndarray) -> jnp.ndarray:
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
    watched = listed_in(items, users.seen) & request.exclude_watched[:, None]
    return (
        watched | listed_in(items, users.dismissed) | ~state.item_valid[jnp.maximum(items, 0)]
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
