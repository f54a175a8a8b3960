"""What the service asks the served engine about items, outside the batched viewer calls:
the items most like an item, and which items pass a request's filters (batch scores). Host
functions over a `ServingEngine`'s device arrays, one small jitted call each, over the whole
catalogue (so any number of items asked about shares one program)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sona_jax.serve import filters
from sona_jax.serve.batch import RequestFilter
from sona_jax.serve.engine import ServingEngine
from sona_jax.serve.filters import ItemFilter
from sona_jax.serve.state import ServingState


@jax.jit
def similarity_to(state: ServingState, item: jnp.ndarray, item_filter: ItemFilter) -> jnp.ndarray:
    """(items,) base-tier embedding cosine of every item to row ``item`` (an int32 scalar),
    -inf for the item itself, rows not servable and items ``item_filter`` (one row) refuses."""
    vectors = state.base.item_embeddings
    cosine = vectors @ vectors[item]
    rows = jnp.arange(vectors.shape[0])
    shown = state.item_valid & (rows != item) & filters.passes(state, item_filter)[0]
    return jnp.where(shown, cosine, -jnp.inf)


@jax.jit
def catalogue_passes(state: ServingState, item_filter: ItemFilter) -> jnp.ndarray:
    """(requests, items) whether each item passes each request's filter (one_per_series
    aside)."""
    return filters.passes(state, item_filter)


def passing(engine: ServingEngine, item_filter: RequestFilter, items: np.ndarray) -> np.ndarray:
    """(n,) whether each of ``items`` (n,) rows passes ``item_filter`` (one_per_series aside):
    the catalogue's pass mask, read at the items."""
    found = engine.run(catalogue_passes, (engine.state, engine.filter_batch([item_filter], 1)))
    return np.asarray(found)[0, np.asarray(items, np.int64)]


def similar(
    engine: ServingEngine, item: int, limit: int, item_filter: RequestFilter | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Items most similar to ``item`` by base-tier embedding cosine (itself excluded), of those
    ``item_filter`` lets through, and their cosines. one_per_series keeps the most similar of a
    series, on the host over the sorted catalogue: one pass, where ranking's device rule
    (`filters.best_of_each_series`) compares candidates pairwise."""
    similarity = np.asarray(
        engine.run(
            similarity_to,
            (engine.state, np.int32(item), engine.filter_batch([item_filter], 1)),
        )
    )
    order = np.argsort(-similarity, kind="stable")
    order = order[np.isfinite(similarity[order])]
    if item_filter is not None and item_filter.one_per_series:
        series = np.asarray(engine.state.series)[order]
        first = np.zeros(len(order), bool)
        first[np.unique(series, return_index=True)[1]] = True
        order = order[(series < 0) | first]
    top = order[:limit]
    return top, similarity[top]
