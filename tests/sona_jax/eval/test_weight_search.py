"""The fixed-weight search: it returns the best weights it scored, and its coordinate steps
reach a planted optimum that random draws only approach."""

from __future__ import annotations

import numpy as np

from sona_jax.eval.weight_search import WeightSearch, search_weights
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
