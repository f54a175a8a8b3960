"""The cosine co-engagement graph (large catalogues) against a dense numpy reference: each
item's list holds its strongest positive cosine edges, strongest first, whatever the block
size (one item row at a time up to the whole catalogue)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sona_jax.config import SonaConfig
from sona_jax.model.tables import build_graph
from sona_lab.datasets import load_dataset


def reference_cosine(events, n_users: int, n_items: int, per_user: int) -> np.ndarray:
    """(items, items) cosine co-engagement of each viewer's ``per_user`` most recent items,
    counted once each, zero diagonal: one viewer at a time."""
    x = np.zeros((n_users, n_items))
    for user in range(n_users):
        mine = np.flatnonzero(events.user == user)
        newest = mine[np.argsort(-events.timestamp[mine], kind="stable")][:per_user]
        x[user, events.item[newest]] = 1.0
    co = x.T @ x
    degree = np.maximum(x.sum(0), 1.0)
    cosine = co / np.sqrt(degree[:, None] * degree[None, :])
    np.fill_diagonal(cosine, 0.0)
    return cosine


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 1000), st.sampled_from([1, 7, 2048]), st.sampled_from([3, 8]))
def test_cosine_lists_are_each_items_strongest_edges(seed, block, per_user):
    data = load_dataset("synthetic", n_users=80, n_items=50, seed=seed)
    cfg = SonaConfig().with_overrides(
        {
            "graph": {
                "weighting": "cosine",
                "neighbours": 6,
                "block_items": block,
                "max_user_items": per_user,
            }
        }
    )
    weights = np.ones(len(data.events), np.float32)
    graph = build_graph(data.events, weights, data.n_users, data.n_items, cfg)
    cosine = reference_cosine(data.events, data.n_users, data.n_items, per_user)
    for item in range(data.n_items):
        positive = np.sort(cosine[item][cosine[item] > 0])[::-1][:6]
        kept = graph.weights[item] > 0
        assert kept.sum() == len(positive)
        np.testing.assert_allclose(graph.weights[item][kept], positive, rtol=1e-5)
        np.testing.assert_allclose(
            cosine[item, graph.neighbours[item][kept]], graph.weights[item][kept], rtol=1e-5
        )
        assert np.all(graph.neighbours[item][~kept] == item)  # padding points at the item
