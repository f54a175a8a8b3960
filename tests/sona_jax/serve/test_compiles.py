"""Serve-time settings passed as arrays (fusion weights, MMR λ) and serving settings (port,
batch window, ...) compile nothing new; a served config must agree with the model's train-time
config."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from service.serving.runtime import Runtime
from service.settings import ServingSettings
from sona_jax.config import ConfigError, SonaConfig
from sona_jax.data import generate_synthetic
from sona_jax.model.train import train_model
from sona_jax.serve import viewers
from sona_jax.serve.batch import Query, request_rows
from sona_jax.serve.engine import ServingEngine
from sona_jax.serve.fusion import (
    KIND_NAMES,
    N_SOURCES,
    SOURCE_NAMES,
    cold_start_row,
    fusion_matrix,
    fusion_weights,
)

CFG = SonaConfig().with_overrides({"model": {"embedding_dim": 16}})
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@pytest.fixture(scope="module")
def model():
    return train_model(generate_synthetic(n_users=80, n_items=120, events_per_user=15, seed=5), CFG)


@pytest.fixture(scope="module")
def compiles():
    seen: list[str] = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda name, *_, **__: seen.append(name) if name == COMPILE_EVENT else None
    )
    return seen


def _recommend(engine: ServingEngine, n: int = 5):
    rows = np.arange(n)
    return engine.recommend_rows(
        rows, request_rows(n, engine.cfg.diversity.mmr_lambda, engine.host_cold_start), 10
    )


def test_fusion_weights_and_mmr_lambda_compile_nothing(model, compiles):
    engine = ServingEngine.load(model, CFG)
    first = _recommend(engine)
    compiles.clear()
    for weights, lam, gate in (
        ((0.9, 0.0, 0.1, 0.0, 0.0, 0.0), 0.2, (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)),
        ((0.1, 0.5, 0.3, 0.2, 0.3, 0.1), 1.0, (0.5, -1.0, 0.0, 1.0, -0.5, 2.0)),
    ):
        cfg = CFG.with_overrides(
            {
                "fusion": dict(
                    zip(SOURCE_NAMES, weights, strict=True),
                    gate_history=gate,
                    gate_context=gate,
                ),
                "diversity": {"mmr_lambda": lam},
            }
        )
        lists = _recommend(engine.with_config(cfg))
        assert lists.items.shape == first.items.shape
    assert compiles == []
    # a serve-time setting that shapes the program does compile (the counter is live)
    _recommend(engine.with_config(CFG.with_overrides({"diversity": {"pool_size": 40}})))
    assert len(compiles) >= 1


def test_a_configured_learned_fusion_is_what_the_engine_serves(model):
    gates = {"gate_history": (-2.0, 1.5, 0.5, 0.0, 0.0, 0.0), "gate_context": (0.0,) * N_SOURCES}
    learned = CFG.with_overrides({"fusion": gates})
    engine = ServingEngine.load(model, CFG)
    served = _recommend(engine.with_config(learned), 40)
    weights = np.asarray(fusion_weights(CFG))
    matrix = np.array([weights, gates["gate_history"], gates["gate_context"]])
    requests = request_rows(40, CFG.diversity.mmr_lambda, engine.host_cold_start)
    by_matrix = engine.recommend_rows(np.arange(40), requests, 10, matrix)
    np.testing.assert_array_equal(served.items, by_matrix.items)
    fixed = _recommend(engine, 40)
    assert (served.items != fixed.items).any()  # the gates change some viewer's list
    closed = learned.with_overrides({"fusion": {"gate_history": (0.0,) * N_SOURCES}})
    np.testing.assert_array_equal(_recommend(engine.with_config(closed), 40).items, fixed.items)
    # an item explained by a source is explained by its largest per-viewer contribution
    by_source = (served.items >= 0) & (served.kinds < N_SOURCES)
    assert by_source.any()
    top_share = served.contributions.argmax(axis=2)
    np.testing.assert_array_equal(served.kinds[by_source], top_share[by_source])


def test_serving_settings_compile_nothing(model, compiles):
    first = Runtime(model, CFG, ServingSettings(port=8082, warm_up=False))
    query = Query(viewers.empty_profile(first.engine), 10, True, 0.7)
    first.recommend_batch([query] * 3)
    compiles.clear()
    other = Runtime(
        model, CFG, ServingSettings(port=9999, batch_window_ms=7.0, max_queue=5, warm_up=False)
    )
    assert len(other.recommend_batch([query] * 3)[0]["rows"]) == 10
    assert compiles == []


def test_a_served_config_must_agree_with_the_models_train_time_config(model):
    ServingEngine.load(model, CFG.with_overrides({"graph": {"decay": 0.5}}))  # serve-time: fine
    with pytest.raises(ConfigError, match=r"lora\.rank: 4 vs 8"):
        ServingEngine.load(model, CFG.with_overrides({"lora": {"rank": 4}}))
    with pytest.raises(ConfigError, match=r"model\.embedding_dim"):
        Runtime(model, SonaConfig(), ServingSettings(warm_up=False))


def test_ten_variants_in_one_batch_compile_nothing_and_serve_their_own_config(model, compiles):
    """Experiment variants ride on each query (`Query.fusion`, `mmr_lambda`, `cold_start`): a batch of ten
    viewers under ten variants is one program, and each row's list is the list the engine
    serves under that variant's config."""
    engine = ServingEngine.load(model, CFG)
    profiles = [viewers.model_profile(engine, u) for u in engine.model.user_ids[:10].tolist()]
    engine.recommend_queries([Query(p, 10, True, 0.7) for p in profiles])  # compiles
    compiles.clear()
    rng = np.random.default_rng(0)
    configs = [
        CFG.with_overrides(
            {
                "fusion": dict(zip(SOURCE_NAMES, rng.uniform(0.05, 1.0, N_SOURCES), strict=True))
                | {"gate_history": tuple(rng.normal(0, 1, N_SOURCES))},
                "diversity": {"mmr_lambda": float(rng.uniform(0.3, 1.0))},
                # half the variants keep these viewers in cold start's blend (β < 1), with
                # exploration slots and a genre fit of their own
                "cold_start": {
                    "min_events": int(rng.integers(0, 30)),
                    "blend_events": int(rng.integers(1, 60)),
                    "exploration_floor": float(rng.uniform(0.0, 0.1)),
                    "exploration_start": float(rng.uniform(0.1, 0.3)),
                    "exploration_decay": float(rng.uniform(0.95, 1.0)),
                    "genre_strength": float(rng.uniform(0.0, 2.0)),
                },
            }
        )
        for _ in range(10)
    ]
    matrices = [np.asarray(fusion_matrix(c)) for c in configs]
    queries = [
        Query(p, 10, True, c.diversity.mmr_lambda, fusion=m, cold_start=cold_start_row(c))
        for p, c, m in zip(profiles, configs, matrices, strict=True)
    ]
    mixed, found = engine.recommend_queries(queries)
    assert compiles == []
    # Each reference engine compiles programs of its own (about 8 s apiece here): every third
    # row, a spread of weights, λ and cold-start settings, is checked against one.
    for row in range(0, len(configs), 3):
        profile, cfg = profiles[row], configs[row]
        # retrieval keeps the served config's genre fit: give the variant's engine the same
        # candidates
        alone, _ = engine.with_config(cfg).recommend_queries(
            [Query(profile, 10, True, cfg.diversity.mmr_lambda, candidates=found[row])]
        )
        np.testing.assert_array_equal(mixed.items[row], alone.items[0])
        np.testing.assert_array_equal(mixed.kinds[row], alone.kinds[0])
    kinds = {kind for row in mixed.kinds.tolist() for kind in row}
    assert len({tuple(mixed.items[r]) for r in range(10)}) > 1
    assert {KIND_NAMES.index("cold_start"), KIND_NAMES.index("exploration")} <= kinds


def test_scores_follow_each_querys_variant_and_compile_nothing(model, compiles):
    """A viewer's scores are fused as their list is: with the fusion and cold-start settings
    their query brings (an experiment arm's), in the one scoring program."""
    engine = ServingEngine.load(model, CFG)
    profiles = [viewers.model_profile(engine, u) for u in engine.model.user_ids[:4].tolist()]
    items = np.arange(12, dtype=np.int32)
    _, found = engine.score_queries([Query(p, items=items) for p in profiles])  # compiles
    compiles.clear()
    variant = CFG.with_overrides(
        {
            "fusion": dict(zip(SOURCE_NAMES, (0.9, 0.02, 0.05, 0.5, 0.01, 0.3), strict=True)),
            "cold_start": {"blend_events": 50},  # these viewers back in cold start's blend
        }
    )
    arm = {"fusion": np.asarray(fusion_matrix(variant)), "cold_start": cold_start_row(variant)}
    queries = [
        Query(p, items=items, candidates=c, **(arm if row % 2 else {}))
        for row, (p, c) in enumerate(zip(profiles, found, strict=True))
    ]
    mixed, _ = engine.score_queries(queries)
    assert compiles == []
    plain, _ = engine.score_queries(
        [Query(p, items=items, candidates=c) for p, c in zip(profiles, found, strict=True)]
    )
    alone, _ = engine.with_config(variant).score_queries(
        [Query(profiles[1], items=items, candidates=found[1])]
    )
    np.testing.assert_allclose(mixed[0].score, plain[0].score, rtol=1e-6)
    np.testing.assert_allclose(mixed[1].score, alone[0].score, rtol=1e-5, atol=1e-6)
    assert not np.allclose(mixed[1].score, plain[1].score)
