"""`sona experiment`: seeded plans, validated files, and a tiny grid end to end through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from service.cli.experiment import experiment
from sona_jax.config import SonaConfig
from sona_jax.search.space import ExperimentError, canonical, parse_experiment, plan_trials
from sona_lab.experiments import load_experiment, to_toml
from sona_lab.files import load_config

ROOT = Path(__file__).resolve().parents[2]

TINY = """\
[experiment]
name = "tiny"
data = "synthetic"
protocol = "p1"
search = "grid"
seed = 3
objective = "ndcg@10"

[experiment.synthetic]
users = 150
items = 200
events_per_user = 20

[base]
model = { embedding_dim = 32 }
lora = { iterations = 2 }

[space]
"fusion.collaborative" = [0.05, 0.6]
"fusion.graph_based" = [0.1, 0.9]
"diversity.mmr_lambda" = [0.5, 1.0]
"""


def _random_doc(seed: int) -> dict:
    return {
        "experiment": {"name": "r", "search": "random", "trials": 12, "seed": seed},
        "space": {
            "fusion.collaborative": {"low": 0.0, "high": 1.0},
            "lora.learning_rate": {"low": 0.001, "high": 0.1, "log": True},
            "lora.rank": {"low": 2, "high": 16},
            "diversity.mmr_lambda": [0.5, 0.7, 1.0],
        },
    }


def test_random_plan_is_seeded_distinct_and_in_range():
    plan = plan_trials(parse_experiment(_random_doc(0)))
    assert plan == plan_trials(parse_experiment(_random_doc(0)))
    assert plan != plan_trials(parse_experiment(_random_doc(1)))
    assert len({canonical(p) for p in plan}) == len(plan) == 12
    for params in plan:
        assert 0.0 <= params["fusion.collaborative"] <= 1.0
        assert 0.001 <= params["lora.learning_rate"] <= 0.1
        assert isinstance(params["lora.rank"], int) and 2 <= params["lora.rank"] <= 16
        assert params["diversity.mmr_lambda"] in (0.5, 0.7, 1.0)


def test_grid_plan_is_the_product_without_invalid_points():
    doc = {
        "experiment": {"search": "grid"},
        "base": {"fusion": {"content_based": 0.0, "context": 0.0}},
        "space": {
            "fusion.collaborative": [0.0, 0.5],
            "fusion.graph_based": {"low": 0.0, "high": 1.0, "steps": 3},
        },
    }
    messages = []
    plan = plan_trials(parse_experiment(doc), messages.append)
    # 2 x 3 points, minus the one where every fusion weight is zero
    assert len(plan) == 5
    assert {"fusion.collaborative": 0.0, "fusion.graph_based": 0.0} not in plan
    assert len(messages) == 1 and "fusion" in messages[0]


@pytest.mark.parametrize(
    ("doc", "named"),
    [
        ({"space": {"lora.bogus": [1]}}, "lora.bogus"),
        ({"space": {"lora.rank": [4, 0]}}, "lora.rank"),
        ({"space": {"graph.decay": {"low": 0.5}}}, "graph.decay"),
        ({"space": {}}, "space"),
        ({"experiment": {"data": "ml-100k"}, "space": {"lora.rank": [4]}}, "path"),
        ({"experiment": {"objective": "auc"}, "space": {"lora.rank": [4]}}, "objective"),
        (
            {"experiment": {"search": "grid"}, "space": {"lora.alpha": {"low": 1, "high": 2}}},
            "steps",
        ),
    ],
)
def test_invalid_experiments_name_the_key(doc, named):
    with pytest.raises(ExperimentError, match=named):
        plan_trials(parse_experiment(doc))


def test_trials_share_a_model_only_when_their_train_time_settings_agree():
    cfg = SonaConfig()
    serving = cfg.with_overrides(
        {
            "fusion": {"collaborative": 0.9},
            "diversity": {"mmr_lambda": 0.3},
            "graph": {"decay": 0.5, "seed_position_decay": 1.0},
            "collaborative": {"neighbours": 7},
            "cold_start": {"blend_events": 5},
        }
    )
    assert serving.train_digest() == cfg.train_digest()
    for change in ({"lora": {"rank": 4}}, {"lora": {"alpha": 4.0}}, {"model": {"seed": 1}}):
        assert cfg.with_overrides(change).train_digest() != cfg.train_digest()


def test_shipped_experiment_files_parse():
    for path in sorted((ROOT / "configs" / "experiments").glob("*.toml")):
        assert path.read_text().startswith(f"# sona experiment configs/experiments/{path.name}")
        exp = load_experiment(path)
        assert len(plan_trials(exp)) == exp.trials


def test_fragment_toml_loads_as_config(tmp_path):
    fragment = {
        "lora": {"alpha": 8.0, "rank": 4},
        "fusion": {"collaborative": 0.5},
        "graph": {"weighting": "cosine"},
    }
    (tmp_path / "f.toml").write_text(to_toml(fragment))
    cfg = load_config(tmp_path / "f.toml")
    assert (cfg.lora.rank, cfg.lora.alpha, cfg.fusion.collaborative) == (4, 8.0, 0.5)
    assert cfg.graph.weighting == "cosine"


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The tiny grid run once through the CLI: (spec file, results root, CLI result)."""
    root = tmp_path_factory.mktemp("experiment")
    spec = root / "tiny.toml"
    spec.write_text(TINY)
    result = CliRunner().invoke(experiment, [str(spec), "--out", str(root / "results"), "--quiet"])
    assert result.exit_code == 0, result.output
    return spec, root / "results", result


def test_tiny_grid_writes_every_result_file(tiny_run):
    _, out, result = tiny_run
    folder = out / "tiny"
    for name in ("trials.jsonl", "summary.md", "best.toml", "final.json"):
        assert (folder / name).stat().st_size > 0, name
    for name in ("ndcg_vs_diversity.png", "weights_effect.png"):
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert (folder / name).stat().st_size > 20_000, name
    assert "best (trial" in result.output and "8 run, 0 skipped" in result.output

    trials = _lines(folder / "trials.jsonl")
    assert len(trials) == 8
    assert len({t["key"] for t in trials}) == 8
    for trial in trials:
        assert trial["objective"] == pytest.approx(trial["metrics"]["ndcg@10"])
        assert 0.0 <= trial["metrics"]["ndcg@10"] <= 1.0
    # MMR λ changes the served lists: the λ = 0.5 twins are more diverse than the λ = 1 ones.
    by_key = {canonical(t["params"]): t for t in trials}
    more_diverse = [
        by_key[canonical(t["params"] | {"diversity.mmr_lambda": 0.5})]["metrics"]["ild@10"]
        > t["metrics"]["ild@10"]
        for t in trials
        if t["params"]["diversity.mmr_lambda"] == 1.0
    ]
    assert sum(more_diverse) >= 3


def test_best_toml_is_the_best_trial_and_a_valid_config(tiny_run):
    folder = tiny_run[1] / "tiny"
    trials = _lines(folder / "trials.jsonl")
    best = max(trials, key=lambda t: t["objective"])
    cfg = load_config(folder / "best.toml")
    for key, value in best["params"].items():
        section, name = key.split(".")
        assert getattr(getattr(cfg, section), name) == value, key
    assert cfg.model.embedding_dim == 32 and cfg.lora.iterations == 2

    final = json.loads((folder / "final.json").read_text())
    assert final["best"]["params"] == best["params"]
    assert final["best"]["validation"]["ndcg@10"] == pytest.approx(best["metrics"]["ndcg@10"])
    assert set(final["best"]["test"]) >= {"ndcg@10", "hr@10", "coverage", "ild@10"}
    assert final["default"]["params"] == {
        "fusion.collaborative": 0.35,
        "fusion.graph_based": 0.30,
        "diversity.mmr_lambda": 0.7,
    }
    sweep = final["lambda_sweep"]
    assert [p["mmr_lambda"] for p in sweep] == pytest.approx([i / 10 for i in range(11)])
    assert sweep[0]["ild@10"] > sweep[-1]["ild@10"]
    summary = (folder / "summary.md").read_text()
    assert f"| 1 | {best['trial']} | {best['objective']:.4g} |" in summary


def test_trials_are_recorded_in_an_optuna_study(tiny_run):
    import optuna

    folder = tiny_run[1] / "tiny"
    (summary,) = optuna.get_all_study_summaries(f"sqlite:///{folder / 'study.db'}")
    study = optuna.load_study(
        study_name=summary.study_name, storage=f"sqlite:///{folder / 'study.db'}"
    )
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 8
    exported = {t["key"]: t for t in _lines(folder / "trials.jsonl")}
    for trial in done:
        record = trial.user_attrs["record"]
        assert trial.value == pytest.approx(record["objective"])
        assert trial.params == record["params"] and exported[record["key"]] == record


def test_tpe_search_proposes_valid_points(tmp_path):
    spec = tmp_path / "tpe.toml"
    spec.write_text(
        TINY.replace('name = "tiny"', 'name = "tpe"')
        .replace('search = "grid"', 'search = "tpe"\ntrials = 3')
        .replace(
            '"fusion.graph_based" = [0.1, 0.9]', '"fusion.graph_based" = {low = 0.1, high = 0.9}'
        )
    )
    result = CliRunner().invoke(experiment, [str(spec), "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    trials = _lines(tmp_path / "tpe" / "trials.jsonl")
    assert len(trials) == 3 and "3 run, 0 skipped" in result.output
    assert all(0.1 <= t["params"]["fusion.graph_based"] <= 0.9 for t in trials)
    again = CliRunner().invoke(experiment, [str(spec), "--out", str(tmp_path), "--quiet"])
    assert "0 run, 3 skipped" in again.output


def test_rerun_skips_finished_trials(tiny_run):
    spec, out, _ = tiny_run
    before = _lines(out / "tiny" / "trials.jsonl")
    again = CliRunner().invoke(experiment, [str(spec), "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert "0 run, 8 skipped" in again.output
    assert "already in final.json" in again.output
    assert _lines(out / "tiny" / "trials.jsonl") == before


def test_same_file_and_seed_reproduce_the_trials(tiny_run, tmp_path):
    spec, out, _ = tiny_run
    result = CliRunner().invoke(experiment, [str(spec), "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output

    def metrics(folder):
        return {t["key"]: t["metrics"] for t in _lines(folder / "tiny" / "trials.jsonl")}

    assert metrics(tmp_path) == metrics(out)
    first = json.loads((out / "tiny" / "final.json").read_text())
    second = json.loads((tmp_path / "tiny" / "final.json").read_text())
    assert first["best"] == second["best"] and first["default"] == second["default"]


def test_movielens_path_option(ml100k_path, tmp_path):
    spec = tmp_path / "ml.toml"
    spec.write_text(
        '[experiment]\nname = "ml"\ndata = "ml-100k"\npath = "/nonexistent"\nsearch = "grid"\n'
        "max_users = 200\n[base]\nmodel = { embedding_dim = 32 }\n"
        '[space]\n"fusion.graph_based" = [0.1, 0.6]\n'
    )
    args = [str(spec), "--out", str(tmp_path), "--quiet"]
    missing = CliRunner().invoke(experiment, args)
    assert missing.exit_code != 0 and "/nonexistent" in missing.output
    result = CliRunner().invoke(experiment, [*args, "--path", str(ml100k_path)])
    assert result.exit_code == 0, result.output
    final = json.loads((tmp_path / "ml" / "final.json").read_text())
    assert final["users"]["validation"] == 200 and final["users"]["test"] > 900
    assert final["setup_detail"]["path"] == str(ml100k_path)


def test_bad_file_is_a_clean_cli_error(tmp_path):
    spec = tmp_path / "bad.toml"
    spec.write_text('[space]\n"lora.rank" = [0]\n')
    result = CliRunner().invoke(experiment, [str(spec), "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert "lora.rank" in result.output and "Traceback" not in result.output
