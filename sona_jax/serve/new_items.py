"""Items added since the model, offered in a list's new-item slots (item cold start: they have
no graph edges or popularity yet, so the fused score alone would rarely show them), with the
source scores their slots are explained by."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from sona_jax.config import SonaConfig
from sona_jax.model.lora import fold_queries
from sona_jax.serve import filters, retrieval, sources
from sona_jax.serve.filters import ItemFilter
from sona_jax.serve.fusion import N_SOURCES
from sona_jax.serve.request_candidates import excluded_at, listed_in
from sona_jax.serve.retrieval import Candidates
from sona_jax.serve.state import RequestBatch, ServingState, UserBatch


class NewItemSlots(NamedTuple):
    """A list's columns after the new-item slots (users, n): positions (columns of
    `RequestCandidates`, new item j at ``n_columns + j``), which slots hold a new item, their
    fit, and their raw (users, N_SOURCES, n) and cold (users, n) scores."""

    positions: jnp.ndarray
    offered: jnp.ndarray
    fit: jnp.ndarray
    raw: jnp.ndarray
    cold: jnp.ndarray


def new_item_scores(
    state: ServingState,
    users: UserBatch,
    request: RequestBatch,
    candidates: Candidates,
    cfg: SonaConfig,
    at: jnp.ndarray,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """raw (users, N_SOURCES, n) and cold (users, n) scores of the items added since the model
    at ``at`` (users, n: indices into ``state.new_items``), for the contributions of the slots
    they are offered in: content, context and cold start at them, collaborative, graph and
    sequential at the candidates' floor (they have no engagement yet). Only the offered slots
    are scored: over every new-item row (the catalogue's free capacity rows too) this was half
    of a ranking call at 10,240 rows."""
    items = state.new_items[at]
    queries = fold_queries(state.base, users.preference, users.adapter, cfg.lora.scale)
    embeddings = state.base.item_embeddings[jnp.maximum(items, 0)]
    content = jax.nn.sigmoid(jnp.einsum("ud,und->un", queries, embeddings) + state.base.bias)
    floor = jnp.broadcast_to(
        candidates.floor[:, :, None],
        (*items.shape[:1], retrieval.RETRIEVED_SOURCES, items.shape[1]),
    )
    raw = jnp.concatenate(
        [
            floor.at[:, 1].set(content),
            sources.context_scores(state, users, request, cfg, items)[:, None, :],
        ],
        axis=1,
    )
    return raw, sources.cold_start_scores(state, users, request, cfg, items)


def offer_new_items(
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
        & ~listed_in(new_rows, listed)
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


def new_item_slots(
    state: ServingState,
    users: UserBatch,
    request: RequestBatch,
    candidates: Candidates,
    positions: jnp.ndarray,
    listed: jnp.ndarray,
    first: jnp.ndarray,
    stop: jnp.ndarray,
    n_columns: int,
    cfg: SonaConfig,
    item_filter: ItemFilter | None = None,
) -> NewItemSlots:
    """`offer_new_items` in slots ``[first, stop)`` (users,) of ``positions`` (users, n), and
    the offered items' scores. Items added since the model are few and often none: then their
    slots cost nothing (their fit and scores over the catalogue's free capacity rows were 30 %
    of a call)."""
    n_slots, n_added = positions.shape[1], state.new_items.shape[0]

    def offered(_):
        placed, offered_, fit_ = offer_new_items(
            state, users, request, positions, listed, first, stop, n_columns, cfg, item_filter
        )
        at_new = jnp.clip(placed - n_columns, 0, n_added - 1)
        raw, cold = new_item_scores(state, users, request, candidates, cfg, at_new)
        return NewItemSlots(placed, offered_, fit_, raw, cold)

    def none_added(_):
        nothing = jnp.zeros(positions.shape)
        return NewItemSlots(
            positions,
            jnp.zeros(positions.shape, bool),
            nothing,
            jnp.zeros((positions.shape[0], N_SOURCES, n_slots)),
            nothing,
        )

    if not n_added:
        return none_added(None)
    any_added = jnp.any((state.new_items >= 0) & state.item_valid[jnp.maximum(state.new_items, 0)])
    return jax.lax.cond(any_added, offered, none_added, None)
