"""Retrieval, the first of the two stages of a recommendation: each viewer's candidates and the
scores of the sources that do not depend on the request, computed once per profile (and model
and catalogue state) instead of on every request.

Collaborative kNN, the LoRA content score and the graph walk each score the whole catalogue;
together with choosing each source's top items they were about two thirds of a recommend call
(1.2 of 2.5 ms for one viewer, 14.8 of 21 ms for 32, on 3,000 items here). What a request adds
— its context, mood, list length, λ, exploration and new items — is cheap over a few hundred
candidates (`rank.rank`). The service keeps each viewer's `Candidates` until their profile
changes; evaluation runs both stages back to back (`recommend.recommend`), so it measures
exactly what is served.

Context candidates are the other half of the candidate set: the items that fit a context best
for everyone (`context_candidates`, one short list per combination of device, time of day and
mood, refreshed with the popularity tables), joined at request time.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sona_jax.config import SonaConfig
from sona_jax.serve import filters, sources
from sona_jax.serve.filters import ItemFilter
from sona_jax.serve.fusion import CONTEXT, TRANSFORMER, cold_start_rows
from sona_jax.serve.selection import compact, top_k_mask, top_k_unordered
from sona_jax.serve.state import RequestBatch, ServingState, UserBatch

RETRIEVED_SOURCES = CONTEXT  # every source but context: SOURCE_NAMES[:CONTEXT]
assert TRANSFORMER == RETRIEVED_SOURCES - 1  # `per_ranking` lists the retrieved sources in order
NO_TABLE = jnp.zeros((0, 0))


class Candidates(NamedTuple):
    """Per-viewer candidates (users, P): items in index order (-1 padded), raw scores of the
    request-independent sources (users, P, RETRIEVED_SOURCES) in SOURCE_NAMES order, and
    floor (users, RETRIEVED_SOURCES)
    the lowest raw score of each among the candidates: what an item outside them counts as.

    What scoring given items needs besides (`recommend.score_items`), so that it never reads
    the whole pool or multiplies the whole catalogue again: neighbours (users, K) the nearest
    pool viewers' rows (-1 none; `sources.nearest_viewers`) and content_span (users, 2) the
    lowest and highest content score over every servable, undismissed item."""

    items: jnp.ndarray
    raw: jnp.ndarray
    floor: jnp.ndarray
    neighbours: jnp.ndarray
    content_span: jnp.ndarray


class KeptForScores(NamedTuple):
    """The part of `Candidates` that scoring given items reads (`recommend.score_items`):
    neighbours (users, K) and content_span (users, 2)."""

    neighbours: jnp.ndarray
    content_span: jnp.ndarray


def placeholder(users: int, cfg: SonaConfig, pool_rows: int) -> Candidates:
    """Host `Candidates` of ``users`` rows with nothing in them, shaped as `retrieve` returns
    them (a program that retrieves takes one where it would take kept candidates)."""
    width, k = candidate_width(cfg), min(cfg.collaborative.neighbours, pool_rows)
    return Candidates(
        np.full((users, width), -1, np.int32),
        np.zeros((users, width, RETRIEVED_SOURCES), np.float32),
        np.zeros((users, RETRIEVED_SOURCES), np.float32),
        np.full((users, k), -1, np.int32),
        np.zeros((users, 2), np.float32),
    )


def per_ranking(cfg: SonaConfig) -> tuple[int, ...]:
    """How many top items each retrieved ranking adds to the candidates: the retrieved sources
    in SOURCE_NAMES order (none from the transformer when ``cfg`` trains no network, so a model
    without one keeps the narrower candidate set), cold start without a mood, trending."""
    c = cfg.candidates
    transformer = c.per_source if cfg.transformer.epochs > 0 else 0
    return (c.per_source,) * (TRANSFORMER) + (transformer, c.per_source, c.trending)


def candidate_width(cfg: SonaConfig) -> int:
    """P: room for the union of every retrieved ranking's top items (`per_ranking`), so none
    is ever dropped."""
    return sum(per_ranking(cfg))


def no_context(users: int, cfg: SonaConfig) -> RequestBatch:
    """Requests without context or mood under ``cfg``'s cold-start settings (what cold start
    ranks by at retrieval)."""
    absent = jnp.full(users, -1, jnp.int32)
    return RequestBatch(
        absent,
        absent,
        absent,
        jnp.ones(users, bool),
        jnp.ones(users),
        jnp.zeros(users, jnp.int32),
        cold_start_rows(cfg, users),
    )


def unscorable_items(state: ServingState, users: UserBatch) -> jnp.ndarray:
    """(users, items) True for rows that are not servable or that the viewer dismissed."""
    return _listed(state, users.dismissed) | ~state.item_valid[None, :]


def _listed(state: ServingState, lists: jnp.ndarray) -> jnp.ndarray:
    """(users, items) True at the items of each row of ``lists`` (users, n; -1 none)."""
    n_items = state.item_valid.shape[0]
    return sources.scatter_rows(n_items, lists, jnp.ones(lists.shape)) > 0


def active_retrieved(state: ServingState, users: UserBatch) -> jnp.ndarray:
    """(users, RETRIEVED_SOURCES) whether collaborative, content, graph, sequential and the
    transformer have anything to say."""
    has_profile = jnp.sum(users.preference**2, axis=1) > 0
    has_seeds = users.recent_items[:, 0] >= 0
    reads = sources.transformer_reads(state, users)
    return jnp.stack([has_profile, has_profile, has_seeds, has_seeds, reads], axis=1)


def _when_any(active: jnp.ndarray, compute, nothing=None):
    """``compute()`` when any viewer of the batch (``active`` (users,)) has the source, else
    ``nothing()`` (default: zeros of its shape). A source with nothing to say for a viewer is
    masked out of their candidates and fusion whatever it scored, so a batch of new viewers
    skips its catalogue-wide work (3 of 6.5 ms at 10,240 items for 8 such viewers)."""
    if nothing is None:
        shape = jax.eval_shape(compute)

        def nothing():
            return jnp.zeros(shape.shape, shape.dtype)

    return jax.lax.cond(jnp.any(active), compute, nothing)


@partial(jax.jit, static_argnames=("cfg",))
def retrieve(
    state: ServingState,
    users: UserBatch,
    exclude_watched: jnp.ndarray,
    cfg: SonaConfig,
    neighbours: jnp.ndarray | None = None,
    item_filter: ItemFilter | None = None,
) -> Candidates:
    """Each viewer's candidates: the union of the top ``candidates.per_source`` items of each
    active source, of cold start (no mood) and the top ``candidates.trending`` trending items,
    none of them excluded (`unscorable_items`, or watched where ``exclude_watched``).
    ``neighbours`` (users, N): pool rows an approximate search found for each viewer (default:
    search every pool viewer); ``item_filter``: the requests' filters, whose refused items are
    excluded too."""
    n_users, n_items = users.preference.shape[0], state.item_valid.shape[0]
    active = active_retrieved(state, users)

    def collaborative() -> tuple[jnp.ndarray, jnp.ndarray]:
        nearest = sources.nearest_viewers(state, users, cfg, neighbours)
        return sources.collaborative_votes(state, *nearest, cfg), nearest[0]

    found = jax.eval_shape(collaborative)
    votes, nearest_rows = _when_any(  # no neighbours found: rows -1
        active[:, 0],
        collaborative,
        lambda: (
            jnp.zeros(found[0].shape, found[0].dtype),
            jnp.full(found[1].shape, -1, found[1].dtype),
        ),
    )
    content = _when_any(active[:, 1], lambda: sources.content_scores(state, users, cfg))
    raw = jnp.stack(
        [
            votes,
            content,
            _when_any(active[:, 2], lambda: sources.graph_scores(state, users, cfg)),
            _when_any(active[:, 3], lambda: sources.sequential_scores(state, users, cfg)),
            _when_any(active[:, 4], lambda: sources.transformer_scores(state, users, cfg)),
        ],
        axis=1,
    )
    unscorable = unscorable_items(state, users)
    scorable = ~unscorable
    content_span = jnp.stack(
        [
            jnp.min(jnp.where(scorable, content, jnp.inf), axis=1),
            jnp.max(jnp.where(scorable, content, -jnp.inf), axis=1),
        ],
        axis=1,
    )
    cold = sources.cold_start_scores(state, users, no_context(n_users, cfg), cfg)
    excluded = unscorable | _listed(state, jnp.where(exclude_watched[:, None], users.seen, -1))
    if item_filter is not None:
        excluded = excluded | ~filters.passes(state, item_filter)
    ranked = jnp.concatenate(
        [
            jnp.where(~active[:, :, None], -jnp.inf, raw),
            cold[:, None, :],
            jnp.broadcast_to(state.trending, (n_users, 1, n_items)),
        ],
        axis=1,
    )
    ranked = jnp.where(excluded[:, None, :], -jnp.inf, ranked)
    widths = jnp.array(per_ranking(cfg))
    chosen = top_k_mask(ranked, widths[None, :, None]) & (widths[None, :, None] > 0)
    mask = jnp.any(chosen, axis=1) & ~excluded
    items = compact(mask, candidate_width(cfg))
    inside = items >= 0
    picked = jnp.take_along_axis(raw, jnp.maximum(items, 0)[:, None, :], axis=2)
    floor = jnp.min(jnp.where(inside[:, None, :], picked, jnp.inf), axis=2)
    return Candidates(
        items,
        jnp.swapaxes(jnp.where(inside[:, None, :], picked, 0.0), 1, 2),
        jnp.where(jnp.isfinite(floor), floor, 0.0),
        nearest_rows,
        jnp.where(jnp.isfinite(content_span), content_span, 0.0),
    )


@partial(jax.jit, static_argnames=("cfg",))
def context_candidates(state: ServingState, cfg: SonaConfig) -> tuple[jnp.ndarray, jnp.ndarray]:
    """``context_fit`` (combinations, items): `sources.global_context_scores` of every context
    combination over the catalogue; and (combinations, per_source) the servable items that fit
    each best (-1 padded; the row of no context is never read)."""
    fit = sources.global_context_scores(
        state._replace(context_fit=NO_TABLE), sources.context_combinations(state, cfg), cfg
    )
    _, items = top_k_unordered(
        jnp.where(state.item_valid[None, :], fit, -jnp.inf), cfg.candidates.per_source
    )
    return fit, items
