"""The fixed-weight search: it returns the best weights it scored, and its coordinate steps
reach a planted optimum that random draws only approach."""

from __future__ import annotations

import numpy as np

from sona_jax.eval.weight_search import WeightSearch, coordinate_steps, search_weights
from sona_jax.serve.fusion import N_SOURCES

TARGET = np.array([0.5, 0.0, 0.5, 0.0, 0.0, 0.0])  # two sources on, the rest dropped


def planted(weights: np.ndarray) -> float:
    return -float(np.abs(weights / weights.sum() - TARGET).sum())


def test_coordinate_steps_find_what_draws_only_approach():
    scored = []

    def score(weights):
        scored.append((planted(weights), weights))
        return scored[-1][0]

    configured = np.full(N_SOURCES, 1.0 / N_SOURCES, np.float32)
    draws_only = WeightSearch(coordinate_rounds=0)
    best_drawn, _, n_drawn = search_weights(score, configured, draws_only)
    assert n_drawn == 1 + N_SOURCES + draws_only.random_trials + draws_only.refine_trials
    assert best_drawn == max(s for s, _ in scored) < -0.05
    scored.clear()
    best, weights, n = search_weights(score, configured, WeightSearch())
    assert n == len(scored) > n_drawn
    assert best == max(s for s, _ in scored) == planted(weights)
    assert best > best_drawn
    np.testing.assert_allclose(weights[[1, 3, 4, 5]], 0.0)  # factor 0 dropped them


def test_a_dropped_source_is_tried_back_at_its_share():
    """Scaling cannot bring back a source at weight 0; the coordinate step tries it at
    ``revive_share``, and the search keeps it when validation prefers it."""
    search = WeightSearch(random_trials=0, refine_trials=0, coordinate_rounds=1)
    wanted = np.array([0.45, search.revive_share, 0.45, 0.0, 0.0, 0.0])
    configured = np.array([0.5, 0.0, 0.5, 0.0, 0.0, 0.0], np.float32)
    (back,) = coordinate_steps(configured, 1, search)
    np.testing.assert_allclose(back, wanted, atol=1e-6)

    def score(weights):
        return -float(np.abs(weights - wanted).sum())

    best, weights, _ = search_weights(score, configured, search)
    assert score(configured) < -0.15 and best > -1e-5
    np.testing.assert_allclose(weights, wanted, atol=1e-6)
