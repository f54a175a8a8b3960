"""The programs a served model version needs are written down (`program_plan`): at the default
served shapes the plan compiles exactly the programs listed here, and nothing a request can ask
for compiles another; program sets are freed with the last engine of their shape."""

from __future__ import annotations

import gc
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from sona_jax.config import SonaConfig
from sona_jax.data import generate_synthetic
from sona_jax.model.train import train_model
from sona_jax.serve import item_queries, viewers
from sona_jax.serve.batch import Query, RequestFilter
from sona_jax.serve.catalogue import grown_capacity, initial_capacity
from sona_jax.serve.engine import ServingEngine
from sona_jax.serve.program_plan import program_plan
from sona_jax.serve.programs import ProgramLibrary, ServedShapes, forget_jit_caches

CFG = SonaConfig().with_overrides({"model": {"embedding_dim": 16}})
NOW = 1.8e9

# What a served version compiles at the default `ServedShapes`: a change that adds a program
# must say so here (each one is paid at every start, restart and capacity step).
EXPECTED = Counter(
    {
        "sona_jax.serve.recommend.serve_lists": 6,  # one per batch size (1, 4, 8, 16, 32, 64)
        "sona_jax.serve.recommend.score_items": 6,
        "sona_jax.serve.retrieval.context_candidates": 1,
        "sona_jax.serve.item_queries.item_view": 1,
        "sona_jax.features.profile.add_profile_step": 1,
        "sona_jax.model.adapters.train_chunk": 1,
    }
)


@pytest.fixture(scope="module")
def model():
    return train_model(generate_synthetic(n_users=90, n_items=150, events_per_user=20, seed=3), CFG)


@pytest.fixture(scope="module")
def planned(model):
    library = ProgramLibrary(ServedShapes())
    engine = ServingEngine.load(model, CFG).with_headroom().served(library)
    for task in program_plan(engine, NOW):
        task()
    library.planned(engine.programs)
    return library, engine


def _names(engine: ServingEngine) -> Counter:
    return Counter(key[0] for key in engine.programs.executables)


def test_the_plan_is_the_listed_programs_and_at_most_16(planned):
    _, engine = planned
    assert _names(engine) == EXPECTED
    assert len(engine.programs) == sum(EXPECTED.values()) <= 16
    assert engine.programs.unplanned == 0


def test_no_request_compiles_a_program_outside_the_plan(planned):
    _, engine = planned
    profiles = [viewers.model_profile(engine, u) for u in engine.model.user_ids.tolist()]
    wide = replace(profiles[0], seen=np.arange(engine.widths.seen + 5, dtype=np.int32))
    dismissing = replace(
        profiles[1], dismissed=np.arange(engine.widths.dismissed + 3, dtype=np.int32)
    )
    lam = CFG.diversity.mmr_lambda
    for n in (1, 2, 7, 9, 40, 64, 65, 90):
        queries = [Query(p, 10, True, lam, seed=i) for i, p in enumerate(profiles[:n])]
        lists, found = engine.recommend_queries(queries + [Query(wide, 5, True, lam)])
        assert lists.items.shape[0] == n + 1 and (lists.items[:, :5] >= 0).all()
        kept = [replace(q, candidates=f) for q, f in zip(queries, found, strict=False)]
        engine.recommend_queries(kept[: n // 2] + queries[n // 2 :])  # some kept, some not
        scoring = [
            Query(p, items=np.arange(1 + i % 30, dtype=np.int32))
            for i, p in enumerate(profiles[:n])
        ]
        scores, _ = engine.score_queries(
            scoring + [Query(dismissing, items=np.arange(600, dtype=np.int32))]
        )
        assert [len(s.score) for s in scores] == [len(q.items) for q in scoring] + [600]
    item_queries.similar(engine, 3, 10, RequestFilter(genres_any=(0,)))
    item_queries.passing(engine, RequestFilter(year_min=1990.0), np.arange(700) % engine.capacity)
    events = [_Event("v", engine.item_ids[i % 100], NOW - i) for i in range(1300)]  # 3 steps
    viewers.viewer_profile(engine, "v", events, None, 0.0, NOW)
    trainees = [f"u{i}" for i in range(20)]
    theirs = [_Event(u, engine.item_ids[i], NOW - i) for u in trainees for i in range(12)]
    key = np.array([0, 1], np.uint32)
    trained = viewers.train_viewers(engine, trainees, profiles[:20], theirs + events, key)
    assert [r.events_used for r in trained] == [12] * 20
    viewers.train_viewers(engine, ["nobody"], profiles[:1], events, key)  # no events of theirs
    assert engine.programs.unplanned == 0
    assert _names(engine) == EXPECTED


def test_served_lists_equal_the_unserved_engines(planned, model):
    """Padding to the served sizes and widths changes no list."""
    _, engine = planned
    plain = ServingEngine.load(model, CFG).with_headroom()
    profiles = [viewers.model_profile(engine, u) for u in engine.model.user_ids[:20].tolist()]
    queries = [Query(p, 10, True, 0.7, seed=i) for i, p in enumerate(profiles)]
    served, _ = engine.recommend_queries(queries)
    reference, _ = plain.recommend_queries(queries)
    np.testing.assert_array_equal(served.items, reference.items)
    np.testing.assert_allclose(served.scores, reference.scores, rtol=1e-5, atol=1e-6)


def test_a_set_is_freed_with_the_last_engine_of_its_shape(model):
    library = ProgramLibrary(ServedShapes())
    engine = ServingEngine.load(model, CFG).with_headroom().served(library)
    item_queries.similar(engine, 0, 5)
    grown = engine.with_capacity(engine.capacity + 100)
    assert grown.programs is not engine.programs and len(library.live()) == 2
    same = engine.with_catalogue([])[0]
    assert same.programs is engine.programs  # a write within the capacity: the same set
    del engine, same
    forget_jit_caches()
    gc.collect()
    assert library.live() == [grown.programs]


def test_capacity_grows_geometrically():
    cfg = CFG.catalogue
    capacity, shapes = initial_capacity(3000, cfg), 1
    assert 3000 < capacity <= 3000 * 1.1  # a freshly loaded model pays for little headroom
    while capacity < 30_000:  # a catalogue that grows tenfold
        capacity = grown_capacity(capacity + 1, 3000, cfg)
        shapes += 1
    assert shapes <= 8


class _Event:
    def __init__(self, user_id: str, content_id: str, ts: float):
        self.user_id, self.content_id, self.ts = user_id, content_id, ts
        self.completion_rate, self.rating, self.is_rewatch = 0.9, 4, False
        self.dismissed, self.device_type, self.time_of_day = False, "tv", "evening"
