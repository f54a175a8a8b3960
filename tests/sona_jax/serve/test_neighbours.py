"""Nearest viewers found by an approximate search (faiss HNSW) and scored exactly: with the
exact neighbours as input the collaborative source and retrieval are unchanged; the index finds
the exact neighbours of most viewers; an engine past `approximate_from` serves through it."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings

from sona_jax.config import SonaConfig
from sona_jax.data import generate_synthetic
from sona_jax.model.train import train_model
from sona_jax.serve import retrieval, sources, viewers
from sona_jax.serve.batch import Query
from sona_jax.serve.engine import ServingEngine
from sona_jax.serve.neighbours import ViewerIndex, viewer_index
from tests.sona_jax.serve.fixtures import SMALL_CFG as CFG
from tests.sona_jax.serve.fixtures import random_state, random_users, seeds, sizes


def _exact_rows(state, users, n: int) -> np.ndarray:
    """The ``n`` most similar pool rows of each user, by plain numpy."""
    similarity = np.asarray(users.preference) @ np.asarray(state.pool_preferences).T
    return np.argsort(-similarity, axis=1, kind="stable")[:, :n].astype(np.int32)


@settings(max_examples=10, deadline=None)
@given(seeds, sizes)
def test_exact_neighbours_as_input_change_nothing(seed, n):
    state = random_state(seed)
    users = random_users(seed, state, n)
    k = CFG.collaborative.neighbours
    pool = state.pool_preferences.shape[0]
    rows = _exact_rows(state, users, min(k + 1, pool))  # one spare: a viewer finds themself
    full = np.asarray(sources.collaborative_scores(state, users, CFG))
    given_rows = np.asarray(sources.collaborative_scores(state, users, CFG, jnp.asarray(rows)))
    np.testing.assert_allclose(given_rows, full, rtol=1e-5, atol=1e-6)
    exclude = jnp.asarray(np.random.default_rng(seed).random(n) < 0.5)
    a = retrieval.retrieve(state, users, exclude, CFG)
    b = retrieval.retrieve(state, users, exclude, CFG, jnp.asarray(rows))
    np.testing.assert_array_equal(np.asarray(a.items), np.asarray(b.items))
    np.testing.assert_allclose(np.asarray(a.raw), np.asarray(b.raw), rtol=1e-5, atol=1e-6)


def test_missing_neighbours_vote_nothing():
    state = random_state(7)
    users = random_users(7, state, 3)
    none = jnp.full((3, 4), -1, jnp.int32)
    assert not np.asarray(sources.collaborative_scores(state, users, CFG, none)).any()


def test_the_index_finds_most_exact_neighbours():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(4_000, 32)).astype(np.float32)
    cfg = SonaConfig().collaborative.model_copy(update={"approximate_from": 1})
    index = viewer_index(vectors, cfg)
    assert isinstance(index, ViewerIndex) and index.n == len(vectors)
    queries = vectors[:200]
    found = index.search(queries, 50)
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :50]
    recall = np.mean([len(set(a) & set(b)) / 50 for a, b in zip(found, exact, strict=True)])
    assert recall >= 0.95, recall
    assert viewer_index(vectors, SonaConfig().collaborative) is None  # 4,000 < 200,000


def test_an_engine_past_the_threshold_serves_through_the_index():
    cfg = SonaConfig().with_overrides({"model": {"embedding_dim": 16}})
    model = train_model(generate_synthetic(300, 120, seed=2), cfg)
    exact = ServingEngine.load(model, cfg)
    approximate = exact.with_config(cfg.with_overrides({"collaborative": {"approximate_from": 1}}))
    assert exact.viewer_search is None and approximate.viewer_search is not None
    # only found rows are read: the pool keeps the stored float16 (half the bytes)
    assert exact.state.pool_preferences.dtype == np.float32
    assert approximate.state.pool_preferences.dtype == np.float16
    back = approximate.with_config(cfg)
    assert back.viewer_search is None
    np.testing.assert_array_equal(back.state.pool_preferences, exact.state.pool_preferences)
    queries = [
        Query(viewers.model_profile(exact, u), 10, True, 1.0, seed=i)
        for i, u in enumerate(model.user_ids.tolist()[:32])
    ]
    lists_exact, _ = exact.recommend_queries(queries)
    lists_approx, found = approximate.recommend_queries(queries)
    assert all(f is not None for f in found)
    same = np.mean(
        [
            len(set(a[a >= 0]) & set(b[b >= 0])) / max(1, (a >= 0).sum())
            for a, b in zip(lists_exact.items, lists_approx.items, strict=True)
        ]
    )
    assert same >= 0.9, same  # 300 viewers: HNSW finds nearly every exact neighbour
