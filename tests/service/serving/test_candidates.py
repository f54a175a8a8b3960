"""The per-process candidate cache: LRU and age bounds, and what an entry is keyed on (a cold
viewer's candidates are retired by the next popularity-table refresh, a warm viewer's are not)."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from service.serving.candidates import CandidateCache, candidate_key
from sona_jax.config import SonaConfig
from sona_jax.data import generate_synthetic
from sona_jax.model.tables import popularity_tables
from sona_jax.model.train import train_model
from sona_jax.serve import viewers
from sona_jax.serve.batch import ViewerCandidates
from sona_jax.serve.engine import ServingEngine

CFG = SonaConfig().with_overrides({"model": {"embedding_dim": 16}})


@pytest.fixture(scope="module")
def engine() -> ServingEngine:
    return ServingEngine.load(train_model(generate_synthetic(60, 80, seed=3), CFG))


def _candidates(marker: int) -> ViewerCandidates:
    return ViewerCandidates(
        np.full(4, marker, np.int32),
        np.zeros((4, 3), np.float32),
        np.zeros(3, np.float32),
        np.full(5, -1, np.int32),
        np.zeros(2, np.float32),
    )


def test_least_recently_used_entries_go_first_and_old_ones_are_not_served():
    cache = CandidateCache(max_entries=2, max_age=0.2)
    cache.put("a", _candidates(1))
    cache.put("b", _candidates(2))
    assert cache.get("a").items[0] == 1  # now "b" is the least recently used
    cache.put("c", _candidates(3))
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None
    time.sleep(0.25)
    assert cache.get("a") is None
    hits, misses, entries = cache.counts()
    assert (hits, misses, entries) == (3, 2, 2)


def test_entries_put_together_expire_spread_over_the_last_half_of_max_age():
    cache = CandidateCache(max_entries=1000, max_age=60.0, seed=1)
    for viewer in range(1000):
        cache.put(viewer, _candidates(viewer))
    now = time.monotonic()
    lives = np.array([expires - now for expires, _ in cache.entries.values()])
    assert lives.max() <= 60.0 and lives.min() >= 30.0 - 0.1
    # spread, not synchronised: no second holds more than a few percent of them
    assert np.histogram(lives, bins=np.arange(30.0, 61.0))[0].max() < 0.1 * len(lives)


def test_a_table_refresh_retires_cold_viewers_candidates_only(engine):
    refreshed = engine.with_popularity(
        popularity_tables(engine.model.popularity, CFG, engine.item_valid)
    )
    assert refreshed.tables == engine.tables + 1
    cold = viewers.empty_profile(engine)
    warm = dataclasses.replace(cold, qualifying=float(CFG.cold_start.blend_events))
    for profile, retired in ((cold, True), (warm, False)):
        before = candidate_key("v", (1, 2), profile, True, engine, CFG)
        after = candidate_key("v", (1, 2), profile, True, refreshed, CFG)
        assert (before != after) == retired
    # the profile's version and the exclusion are always part of the key
    assert candidate_key("v", (1, 3), warm, True, engine, CFG) != candidate_key(
        "v", (1, 2), warm, True, engine, CFG
    )
    assert candidate_key("v", (1, 2), warm, False, engine, CFG) != candidate_key(
        "v", (1, 2), warm, True, engine, CFG
    )
