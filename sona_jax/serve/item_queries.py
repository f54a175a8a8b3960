"""What the service asks the served engine about items, outside the batched viewer calls:
the items most like an item, and which items pass a request's filters (batch scores). Host
functions over a `ServingEngine`'s device arrays, one small jitted call each, over the whole
catalogue (so any number of items asked about shares one program)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sona_jax.serve import filters
from sona_jax.serve.batch import RequestFilter
from sona_jax.serve.engine import ServingEngine
from sona_jax.serve.filters import ItemFilter
from sona_jax.serve.state import ServingState


class ItemView(NamedTuple):
    """similarity (items,): base-tier embedding cosine to an item (-inf for itself, rows not
    servable and items the filter refuses; all -inf when not asked for); passes (items,):
    whether each item passes the filter (one_per_series aside)."""

    similarity: jnp.ndarray
    passes: jnp.ndarray


@jax.jit
def item_view(
    state: ServingState, item: jnp.ndarray, item_filter: ItemFilter, with_similarity: jnp.ndarray
) -> ItemView:
    """The catalogue seen from row ``item`` (an int32 scalar) through ``item_filter`` (one
    row): one program for similar items and for the filter mask of batch scores (the product
    with every embedding only when ``with_similarity``)."""
    vectors = state.base.item_embeddings
    passes = filters.passes(state, item_filter)[0]
    rows = jnp.arange(vectors.shape[0])
    shown = state.item_valid & (rows != item) & passes
    similarity = jax.lax.cond(
        with_similarity,
        lambda: jnp.where(shown, vectors @ vectors[item], -jnp.inf),
        lambda: jnp.full(vectors.shape[0], -jnp.inf),
    )
    return ItemView(similarity, passes)


def _view(engine: ServingEngine, item: int, item_filter: RequestFilter | None, similarity: bool):
    return engine.run(
        item_view,
        (engine.state, np.int32(item), engine.filter_batch([item_filter], 1), np.bool_(similarity)),
    )


def passing(engine: ServingEngine, item_filter: RequestFilter, items: np.ndarray) -> np.ndarray:
    """(n,) whether each of ``items`` (n,) rows passes ``item_filter`` (one_per_series aside):
    the catalogue's pass mask, read at the items."""
    passes = np.asarray(_view(engine, 0, item_filter, False).passes)
    return passes[np.asarray(items, np.int64)]


def similar(
    engine: ServingEngine, item: int, limit: int, item_filter: RequestFilter | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Items most similar to ``item`` by base-tier embedding cosine (itself excluded), of those
    ``item_filter`` lets through, and their cosines. one_per_series keeps the most similar of a
    series, on the host over the sorted catalogue: one pass, where ranking's device rule
    (`filters.best_of_each_series`) compares candidates pairwise."""
    similarity = np.asarray(_view(engine, item, item_filter, True).similarity)
    order = np.argsort(-similarity, kind="stable")
    order = order[np.isfinite(similarity[order])]
    if item_filter is not None and item_filter.one_per_series:
        series = np.asarray(engine.state.series)[order]
        first = np.zeros(len(order), bool)
        first[np.unique(series, return_index=True)[1]] = True
        order = order[(series < 0) | first]
    top = order[:limit]
    return top, similarity[top]
