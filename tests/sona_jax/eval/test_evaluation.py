"""SPEC 7: splits, metrics, and a small end-to-end `sona eval` on synthetic data."""

import json

import numpy as np
import pytest
import scipy.sparse as sp
from click.testing import CliRunner

from service.cli import main
from sona_jax.config import SonaConfig
from sona_jax.eval import cold_start, metrics, protocols, report, splits
from sona_jax.eval.sasrec import SASRecSettings
from sona_jax.serve.fusion import fusion_weights

SMALL = SonaConfig().with_overrides({"model": {"embedding_dim": 32}})


def test_next_watch_split_holds_out_each_users_last_event(synthetic_small):
    log = synthetic_small.events
    everything = np.ones(len(log), bool)
    split = splits.split_next_watch(
        log, everything, synthetic_small.n_users, synthetic_small.n_items
    )
    for user in split.users[:50]:
        test_items = split.test.indices[split.test.indptr[user] : split.test.indptr[user + 1]]
        mine = log.user == user
        last = log.item[mine][np.argmax(log.timestamp[mine])]
        assert list(test_items) == [last]
        assert last not in set(log.item[mine & split.train])  # unseen in train


def test_random_split_is_seeded_and_about_a_quarter(synthetic_small):
    log = synthetic_small.events
    args = (log, np.ones(len(log), bool), synthetic_small.n_users, synthetic_small.n_items)
    a, b = splits.split_random(*args, seed=3), splits.split_random(*args, seed=3)
    assert np.array_equal(a.train, b.train)
    pairs = len(np.unique(log.user.astype(np.int64) * synthetic_small.n_items + log.item))
    assert 0.15 < a.test.nnz / pairs < 0.26
    train = sp.csr_matrix(
        (np.ones(a.train.sum()), (log.user[a.train], log.item[a.train])), shape=a.test.shape
    )
    assert train.multiply(a.test).nnz == 0  # no test pair is in train


def test_ranking_metrics_on_a_known_example():
    test = sp.csr_matrix(np.array([[0, 1, 0, 0, 1], [1, 0, 0, 0, 0]]))
    top = np.array([[1, 0, 4], [2, 3, 4]])
    found = metrics.ranking_metrics(top, test, np.array([0, 1]))
    ideal = 1 + 1 / np.log2(3)
    assert set(found) == {"hr@3", "ndcg@3", "precision@3"}  # labelled with the list length
    assert found["hr@3"] == 0.5
    assert found["ndcg@3"] == pytest.approx(((1 + 1 / np.log2(4)) / ideal + 0) / 2)
    assert found["precision@3"] == pytest.approx((2 / 3 + 0) / 2)
    vectors = np.eye(5)
    assert metrics.intra_list_diversity(top, vectors) == pytest.approx(1.0)
    assert metrics.coverage(top, 5) == 1.0


def test_small_end_to_end_eval_beats_popularity(synthetic_small):
    options = protocols.EvalOptions(
        protocol="p1",
        tune_fusion=False,
        cold_start_points=(0, 3),
        cold_start_users=150,
        ease_l2_grid=(50.0, 200.0),
        als_grid=((16, 0.05),),
        rp3beta_grid=((1.0, 0.0, 50), (0.5, 0.5, 50)),
        sasrec=SASRecSettings(dim=16, max_len=16, max_epochs=4),
    )
    result = protocols.evaluate(synthetic_small, SMALL, options)
    rows = {row["name"]: row for row in result["rows"]}
    assert [row["kind"] for row in result["rows"]].count("hybrid") == 1
    assert {"popularity", "ease", "implicit-als", "rp3beta", "sasrec"} <= set(rows)
    assert 2 <= rows["sasrec"]["chosen_on_validation"]["epochs"] <= 4
    for row in result["rows"][1:]:  # every row against the hybrid, paired over viewers
        low, high = row["hybrid_minus_95ci"]
        difference = rows["sona-hybrid"]["metrics"]["ndcg@10"] - row["metrics"]["ndcg@10"]
        assert low <= row["hybrid_minus"] <= high
        assert row["hybrid_minus"] == pytest.approx(difference, abs=1e-6)
    assert result["tie_break"] == "hashed"
    (tie_pass,) = result["random_ties"]
    assert {row["name"] for row in tie_pass["rows"]} >= {"sona-hybrid", "sasrec", "ease"}
    hybrid = rows["sona-hybrid"]["metrics"]
    print({name: round(row["metrics"]["ndcg@10"], 4) for name, row in rows.items()})
    assert hybrid["ndcg@10"] > rows["popularity"]["metrics"]["ndcg@10"]
    for key in (
        "hr@10",
        "ndcg@10",
        "precision@10",
        "coverage",
        "ild@10",
        "ndcg@10_mmr",
        "ild@10_mmr",
    ):
        assert 0.0 <= hybrid[key] <= 2.0
    assert set(result["context"]) >= {"ndcg@10_with_context", "ndcg@10_without_context"}
    assert [p["events"] for p in result["cold_start"]] == [0, 3]
    for point in result["cold_start"]:
        for key in ("served_minus_popularity_95ci", "no_exploration_minus_popularity_95ci"):
            low, high = point[key]
            assert low <= high
    assert "first n events" in report.format_table(result)


def test_cold_start_genre_strength_is_chosen_on_validation(synthetic_small):
    ds = synthetic_small
    everything = np.ones(len(ds.events), bool)
    split = splits.make_split("p2", ds.events, everything, ds.n_users, ds.n_items, 0)
    val_split = splits.make_split("p2", ds.events, split.train, ds.n_users, ds.n_items, 1)
    options = protocols.EvalOptions(
        protocol="p2",
        cold_start_users=150,
        cold_genre_strengths=(0.0, 1.0),
        cold_tune_points=(1, 3),
    )
    weights = np.asarray(fusion_weights(SMALL))
    strength, trials = cold_start.tune_cold_start(ds, val_split, SMALL, weights, options, False)
    assert set(trials) == {"0", "1"}
    assert trials[f"{strength:g}"] == max(trials.values())
    # The synthetic viewers' tastes are planted by genre, so leaning on the genres of a cold
    # viewer's first events must pay off there.
    assert strength == 1.0 and trials["1"] > trials["0"]


def test_eval_command_writes_the_json_other_tools_read(tmp_path):
    config = tmp_path / "small.toml"
    config.write_text("[model]\nembedding_dim = 32\n")
    out = tmp_path / "result.json"
    result = CliRunner().invoke(
        main,
        [
            "eval",
            "--data",
            "synthetic",
            "--users",
            "80",
            "--items",
            "120",
            "--protocol",
            "p2",
            "--no-tune",
            "--ties",
            "random",
            "--config",
            str(config),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    assert document["data"] == "synthetic" and document["protocol"] == "p2"
    assert document["tie_break"] == "random"
    assert [row["kind"] for row in document["rows"]].count("hybrid") == 1
    assert all({"name", "kind", "metrics"} <= set(row) for row in document["rows"])
    assert "precision@10" in document["rows"][0]["metrics"]
