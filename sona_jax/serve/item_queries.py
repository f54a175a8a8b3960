"""What the service asks the served engine about items, outside the batched viewer calls:
the items most like an item, and which items pass a request's filters (batch scores). Host
functions over a `ServingEngine`'s device arrays, one small jitted call each."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sona_jax.buckets import SCORE_BUCKETS, bucket
from sona_jax.serve import filters
from sona_jax.serve.batch import RequestFilter
from sona_jax.serve.engine import ServingEngine

_passes = jax.jit(filters.passes)


@jax.jit
def _cosine_to(vectors: jnp.ndarray, query: jnp.ndarray) -> jnp.ndarray:
    return vectors @ query


def passing(engine: ServingEngine, item_filter: RequestFilter, items: np.ndarray) -> np.ndarray:
    """(n,) whether each of ``items`` (n,) rows passes ``item_filter`` (one_per_series aside),
    in a bucketed width so lengths share programs."""
    table = np.full((1, bucket(len(items), SCORE_BUCKETS)), -1, np.int32)
    table[0, : len(items)] = items
    found = _passes(engine.state, engine.filter_batch([item_filter], 1), table)
    return np.asarray(found)[0, : len(items)]


def similar(
    engine: ServingEngine, item: int, limit: int, item_filter: RequestFilter | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Items most similar to ``item`` by base-tier embedding cosine (itself excluded), of those
    ``item_filter`` lets through, and their cosines. one_per_series keeps the most similar of a
    series, on the host over the sorted catalogue: one pass, where ranking's device rule
    (`filters.best_of_each_series`) compares candidates pairwise."""
    state = engine.state
    vectors = state.base.item_embeddings
    similarity = np.array(_cosine_to(vectors, vectors[item]))
    similarity[~engine.item_valid] = -np.inf
    similarity[item] = -np.inf
    if item_filter is not None:
        passing_items = _passes(state, engine.filter_batch([item_filter], 1))
        similarity[~np.asarray(passing_items)[0]] = -np.inf
    order = np.argsort(-similarity, kind="stable")
    order = order[np.isfinite(similarity[order])]
    if item_filter is not None and item_filter.one_per_series:
        series = np.asarray(state.series)[order]
        first = np.zeros(len(order), bool)
        first[np.unique(series, return_index=True)[1]] = True
        order = order[(series < 0) | first]
    top = order[:limit]
    return top, similarity[top]
