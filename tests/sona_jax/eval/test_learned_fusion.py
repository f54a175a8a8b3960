"""The learned fusion: it finds a planted per-viewer preference, and on a trained model its
record is what ranking with its matrix measures."""

import tomllib

import jax.numpy as jnp
import numpy as np

from sona_jax.config import SonaConfig, config_from_dict
from sona_jax.eval import protocols
from sona_jax.eval.engines import TrainedEngines
from sona_jax.eval.learned_fusion import FusionFitSettings, fit_fusion, learn_on_validation
from sona_jax.eval.metrics import per_user_ndcg
from sona_jax.eval.ranking import rank
from sona_jax.eval.sasrec import SASRecSettings
from sona_jax.eval.splits import protocol_splits, subset
from sona_jax.eval.weight_search import WeightSearch
from sona_jax.serve.fusion import (
    CONTEXT,
    N_SOURCES,
    SourceScores,
    blended,
    cold_start_row,
    fit_blend,
    fusion_matrix,
    fusion_weights,
    viewer_weights,
)
from sona_jax.serve.rank import RequestCandidates

CFG = SonaConfig()


def planted_table(seed: int, n_users: int = 200, n_candidates: int = 40):
    """Viewers with a long history watch the collaborative source's best candidate, viewers
    with a short one the graph source's."""
    rng = np.random.default_rng(seed)
    raw = rng.random((n_users, N_SOURCES, n_candidates)).astype(np.float32)
    active = np.ones((n_users, N_SOURCES), bool)
    active[:, CONTEXT] = False  # no context
    long_history = np.arange(n_users) % 2 == 0
    qualifying = np.where(long_history, 400, 20).astype(np.float32)
    watched = np.where(long_history, raw[:, 0].argmax(1), raw[:, 2].argmax(1))
    positives = np.zeros((n_users, n_candidates), bool)
    positives[np.arange(n_users), watched] = True
    table = RequestCandidates(
        jnp.tile(jnp.arange(n_candidates), (n_users, 1)),
        SourceScores(jnp.asarray(raw), jnp.zeros((n_users, n_candidates)), jnp.asarray(active)),
        jnp.ones((n_users, n_candidates), bool),
    )
    return table, positives, qualifying, long_history


def top1(table, matrix, qualifying):
    blend = fit_blend(
        table.scores, table.mask, jnp.asarray(matrix), jnp.asarray(qualifying), cold_start_row(CFG)
    )
    relevance, _ = blended(blend, table.scores.raw, table.scores.cold, table.mask)
    return np.asarray(relevance).argmax(1)


def test_the_learned_gates_find_a_planted_per_viewer_preference():
    table, positives, qualifying, long_history = planted_table(0)
    fixed = np.full(N_SOURCES, 1.0 / N_SOURCES, np.float32)
    settings = FusionFitSettings(steps=300)
    matrix = fit_fusion(table, positives, qualifying, fixed, 1e-4, CFG, settings)
    per_viewer = np.asarray(
        viewer_weights(
            jnp.asarray(matrix), jnp.asarray(qualifying), jnp.zeros(200), cold_start_row(CFG)
        )
    )
    assert (per_viewer[long_history, 0] > per_viewer[long_history, 2]).all()
    assert (per_viewer[~long_history, 2] > per_viewer[~long_history, 0]).all()
    hits = top1(table, matrix, qualifying) == positives.argmax(1)
    fixed_hits = top1(table, fixed, qualifying) == positives.argmax(1)
    # equal weights find the watched item for 12 % of viewers; gates of one feature, ~80 %
    assert hits.mean() > 0.7 and fixed_hits.mean() < 0.3
    # a strong pull towards the fixed weights keeps them, gates closed
    held = fit_fusion(table, positives, qualifying, fixed, 1e4, CFG, settings)
    np.testing.assert_allclose(held[0], fixed, rtol=1e-2)
    np.testing.assert_allclose(held[1:], 0.0, atol=1e-2)


def test_learning_on_validation_records_what_ranking_measures(synthetic_small):
    cfg = SonaConfig().with_overrides({"model": {"embedding_dim": 32}})
    options = protocols.EvalOptions(protocol="p2")
    split, val_split = protocol_splits(synthetic_small, options)
    engine = TrainedEngines(subset(synthetic_small, val_split.train))(cfg)
    users = val_split.users
    fixed = np.asarray(fusion_weights(cfg))
    settings = FusionFitSettings(steps=60, l2_grid=(0.1, 1.0))
    matrix, record = learn_on_validation(
        engine, val_split.test, users, None, None, fixed, cfg, settings, 10
    )
    assert matrix.shape == (3, N_SOURCES) and (matrix[0] > 0).all()
    assert set(record["cross_fitted_ndcg"]) == {0.1, 1.0} and record["l2"] in (0.1, 1.0)
    assert 0.0 < record["candidates_holding_a_held_out_item"] <= 1.0
    ranked = rank(engine, users, fixed, 1.0, None, None, 10)
    fixed_ndcg = per_user_ndcg(ranked, val_split.test, users)[0].mean()
    assert record["fixed_ndcg"] == fixed_ndcg
    low, high = record["learned_minus_fixed_95ci"]
    assert low <= high
    assert np.asarray(record["matrix"]).tolist() == matrix.tolist()
    # the printed [fusion] table loads into a config that serves the same matrix
    served = config_from_dict(tomllib.loads(record["toml"]))
    np.testing.assert_allclose(fusion_matrix(served), matrix, rtol=1e-5)


def test_eval_reports_the_learned_and_the_fixed_fusion_side_by_side(synthetic_small):
    options = protocols.EvalOptions(
        protocol="p2",
        graph_settings=(),
        weight_search=WeightSearch(random_trials=2, refine_trials=0, coordinate_rounds=0),
        mmr_lambdas=(1.0,),
        cold_start_points=(),
        ease_l2_grid=(200.0,),
        als_grid=((16, 0.05),),
        rp3beta_grid=((1.0, 0.5, 50),),
        sasrec=SASRecSettings(dim=16, max_len=16, max_epochs=2),
        fusion_fit=FusionFitSettings(steps=40, l2_grid=(1.0,)),
    )
    cfg = SonaConfig().with_overrides({"model": {"embedding_dim": 32}})
    result = protocols.evaluate(synthetic_small, cfg, options)
    learned = result["fusion"]["learned"]
    rows = {row["name"]: row for row in result["rows"]}
    other = "sona-hybrid fixed weights" if learned["used"] else "sona-hybrid learned fusion"
    assert rows[other]["kind"] == "hybrid variant"
    headline = rows["sona-hybrid"]["weights"]
    assert ("gate_history" in headline) == learned["used"]
    assert ("gate_history" in rows[other]["weights"]) != learned["used"]
    low, high = rows[other]["hybrid_minus_95ci"]
    assert low <= rows[other]["hybrid_minus"] <= high
