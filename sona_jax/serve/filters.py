"""Request filters and "not interested", as masks and penalties inside the batched
engine: retrieval drops the items a request's filters refuse from the whole catalogue before it
takes each source's top items, and ranking drops them from the context's and the new items'
candidates and keeps one item per series, all before MMR, so a list stays full whenever enough
items qualify. Every request of a batch carries an `ItemFilter` row (no filter: every item
passes), so filtered and unfiltered requests share one program; the masks are computed only
when some request of the batch filters (`jax.lax.cond`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from sona_jax.config import FiltersConfig
from sona_jax.serve.state import ServingState


class ItemFilter(NamedTuple):
    """Per-request filters (requests, ...). excluded (requests, E) item rows, -1 padded;
    genres_any / genres_none (requests, G) bool over the model's genres (genres_any all False:
    any genre passes); year_min / year_max, duration_min / duration_max (requests,) float32,
    -inf / +inf when absent (an item whose year or duration is unknown fails a bound that is
    set); one_per_series (requests,) bool."""

    excluded: jnp.ndarray
    genres_any: jnp.ndarray
    genres_none: jnp.ndarray
    year_min: jnp.ndarray
    year_max: jnp.ndarray
    duration_min: jnp.ndarray
    duration_max: jnp.ndarray
    one_per_series: jnp.ndarray


def filtering(f: ItemFilter) -> jnp.ndarray:
    """(requests,) whether each request filters items out (one_per_series aside)."""
    bounded = (
        jnp.isfinite(f.year_min)
        | jnp.isfinite(f.year_max)
        | jnp.isfinite(f.duration_min)
        | jnp.isfinite(f.duration_max)
    )
    return (
        jnp.any(f.excluded >= 0, axis=1)
        | jnp.any(f.genres_any, axis=1)
        | jnp.any(f.genres_none, axis=1)
        | bounded
    )


def _within(values: jnp.ndarray, low: jnp.ndarray, high: jnp.ndarray) -> jnp.ndarray:
    """values (users, n) against per-user bounds (users,): unknown (-1) fails a set bound."""
    known = values >= 0
    above = ~jnp.isfinite(low)[:, None] | (known & (values >= low[:, None]))
    below = ~jnp.isfinite(high)[:, None] | (known & (values <= high[:, None]))
    return above & below


def _passes(state: ServingState, f: ItemFilter, items: jnp.ndarray | None) -> jnp.ndarray:
    n_users = f.year_min.shape[0]
    if items is None:  # the whole catalogue: genre tests as one matrix product
        n_items = state.item_valid.shape[0]
        genres_any = f.genres_any.astype(jnp.float32) @ state.item_genres.T > 0
        genres_none = f.genres_none.astype(jnp.float32) @ state.item_genres.T > 0
        year = jnp.broadcast_to(state.release_year, (n_users, n_items))
        duration = jnp.broadcast_to(state.duration, (n_users, n_items))
        rows = jnp.arange(n_users)[:, None]
        excluded = (
            jnp.zeros((n_users, n_items), bool)
            .at[rows, jnp.where(f.excluded >= 0, f.excluded, n_items)]
            .set(True, mode="drop")
        )
    else:
        at = jnp.maximum(items, 0)
        genres = state.item_genres[at]  # (users, n, G)
        genres_any = jnp.einsum("ung,ug->un", genres, f.genres_any.astype(jnp.float32)) > 0
        genres_none = jnp.einsum("ung,ug->un", genres, f.genres_none.astype(jnp.float32)) > 0
        year, duration = state.release_year[at], state.duration[at]
        excluded = jnp.any(
            (items[:, :, None] == f.excluded[:, None, :]) & (f.excluded[:, None, :] >= 0), axis=2
        )
    any_genre = ~jnp.any(f.genres_any, axis=1)[:, None] | genres_any
    return (
        any_genre
        & ~genres_none
        & _within(year, f.year_min, f.year_max)
        & _within(duration, f.duration_min, f.duration_max)
        & ~excluded
    )


def passes(state: ServingState, f: ItemFilter, items: jnp.ndarray | None = None) -> jnp.ndarray:
    """Whether each of ``items`` (users, n), or every catalogue row (None: (users, items)),
    passes its request's filters; all True, at no cost, when no request of the batch filters."""
    n_users = f.year_min.shape[0]
    shape = (n_users, state.item_valid.shape[0] if items is None else items.shape[1])
    return jax.lax.cond(
        jnp.any(filtering(f)),
        lambda: _passes(state, f, items),
        lambda: jnp.ones(shape, bool),
    )


def best_of_each_series(
    state: ServingState, f: ItemFilter, items: jnp.ndarray, relevance: jnp.ndarray
) -> jnp.ndarray:
    """(users, n) whether each of ``items`` (users, n) may be listed under one_per_series: it
    has no series, or no other candidate of its series is more relevant (``relevance``
    (users, n), -inf for non-candidates; ties go to the earlier column)."""

    def keep() -> jnp.ndarray:
        series = jnp.where(items >= 0, state.series[jnp.maximum(items, 0)], -1)
        same = (series[:, :, None] == series[:, None, :]) & (series[:, :, None] >= 0)
        column = jnp.arange(items.shape[1])
        better = (relevance[:, None, :] > relevance[:, :, None]) | (
            (relevance[:, None, :] == relevance[:, :, None])
            & (column[None, None, :] < column[None, :, None])
        )
        beaten = jnp.any(same & better & jnp.isfinite(relevance)[:, None, :], axis=2)
        return ~(beaten & f.one_per_series[:, None])

    return jax.lax.cond(jnp.any(f.one_per_series), keep, lambda: jnp.ones(items.shape, bool))


def share_series(state: ServingState, items: jnp.ndarray, others: jnp.ndarray) -> jnp.ndarray:
    """(users, n) whether each of ``items`` (users, n) has a series that one of ``others``
    (users, m) has."""
    series = jnp.where(items >= 0, state.series[jnp.maximum(items, 0)], -1)
    theirs = jnp.where(others >= 0, state.series[jnp.maximum(others, 0)], -1)
    return jnp.any((series[:, :, None] == theirs[:, None, :]) & (series[:, :, None] >= 0), axis=2)


def dismissal_penalty(
    state: ServingState, dismissed: jnp.ndarray, items: jnp.ndarray, cfg: FiltersConfig
) -> jnp.ndarray:
    """(users, n) relevance to take off each of ``items`` (users, n) for being close to what
    the viewer dismissed (``dismissed`` (users, D), -1 padded): ``dismissal_penalty`` times how
    far the largest cosine to a dismissed item (MMR's space) lies between
    ``dismissal_min_similarity`` and 1."""

    def penalty() -> jnp.ndarray:
        cosine = jnp.einsum(
            "unk,udk->und",
            state.item_diversity[jnp.maximum(items, 0)],
            state.item_diversity[jnp.maximum(dismissed, 0)],
        )
        closest = jnp.max(jnp.where(dismissed[:, None, :] >= 0, cosine, -1.0), axis=2)
        low = cfg.dismissal_min_similarity
        return cfg.dismissal_penalty * jnp.clip((closest - low) / (1.0 - low), 0.0, 1.0)

    return jax.lax.cond(
        jnp.any(dismissed >= 0) & (cfg.dismissal_penalty > 0),
        penalty,
        lambda: jnp.zeros(items.shape),
    )
