"""The next-watch successor lists (the sequential source's table) against a reference that
walks each viewer's engaged events one at a time."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sona_jax.config import SonaConfig
from sona_jax.model.tables import build_sequence_graph
from sona_lab.datasets import load_dataset


def reference_successors(events, weights, n_items: int, window: int, decay: float) -> np.ndarray:
    """(items, items) row-normalised successor weights: for each viewer's engaged events in
    time order (same-second events newest first in log order, as the history table), item
    a -> the item ``step`` engaged events later adds decay^(step - 1); diagonal dropped."""
    links = np.zeros((n_items, n_items))
    for user in np.unique(events.user):
        mine = np.flatnonzero((events.user == user) & (weights > 0))
        newest_first = mine[np.argsort(-events.timestamp[mine], kind="stable")]
        in_time = events.item[newest_first][::-1]
        for i, earlier in enumerate(in_time):
            for step in range(1, window + 1):
                if i + step < len(in_time):
                    links[earlier, in_time[i + step]] += decay ** (step - 1)
    np.fill_diagonal(links, 0.0)
    total = links.sum(1, keepdims=True)
    return np.where(total > 0, links / np.where(total > 0, total, 1.0), 0.0)


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 1000), st.sampled_from([1, 3]), st.sampled_from([1.0, 0.5]))
def test_successor_lists_are_each_items_strongest_next_watches(seed, window, decay):
    data = load_dataset("synthetic", n_users=40, n_items=30, seed=seed)
    cfg = SonaConfig().with_overrides(
        {"sequential": {"window": window, "window_decay": decay, "neighbours": 5}}
    )
    events = data.events
    # every second event not engaged: those neither link nor are linked to
    weights = (np.arange(len(events)) % 2 == 0).astype(np.float32)
    neighbours, out = build_sequence_graph(events, weights, data.n_items, cfg)
    want = reference_successors(events, weights, data.n_items, window, decay)
    assert neighbours.shape == out.shape == (data.n_items, 5)
    for item in range(data.n_items):
        strongest = np.sort(want[item][want[item] > 0])[::-1][:5]
        kept = out[item] > 0
        assert kept.sum() == len(strongest)
        np.testing.assert_allclose(out[item][kept], strongest, rtol=1e-5)
        np.testing.assert_allclose(want[item, neighbours[item][kept]], out[item][kept], rtol=1e-5)
        assert np.all(neighbours[item][~kept] == item)  # padding points at the item
