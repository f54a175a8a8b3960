"""`sona experiment` on the host: read the experiment file, run the search on a validation
split with every trial recorded in an Optuna study (``study.db``; a re-run skips finished
trials, `sona_lab.study`), evaluate the best setting once on the test split beside the base
config, and write ``trials.jsonl`` (an export of the study), ``summary.md``, ``best.toml``,
``final.json`` and the plots.

The space, the plan and the scoring are the engine's (`sona_jax.search`); this module owns the
files, the progress bar and the clock.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sona_jax.config import ConfigError, SonaConfig, deep_merge
from sona_jax.data.schema import Dataset
from sona_jax.search.scoring import (
    Scorer,
    best_record,
    by_training,
    final_evaluation,
    format_final_table,
    make_splits,
    run_trial,
)
from sona_jax.search.space import (
    METRICS,
    Experiment,
    ExperimentError,
    LogFn,
    canonical,
    nested,
    parse_experiment,
    plan_trials,
    trial_config,
)
from sona_lab.datasets import load_dataset
from sona_lab.files import read_toml
from sona_lab.plots import ndcg_vs_diversity_figure, save_figure, weights_effect_figure
from sona_lab.study import (
    ask,
    distributions,
    finished_records,
    ignored_trials,
    open_study,
    tell,
)


def _quiet(message: str) -> None:
    """A log function that drops its message."""


def load_experiment(path: str | Path, data_path: str | None = None) -> Experiment:
    """Read and validate an experiment TOML file (the folder name defaults to the file stem)."""
    path = Path(path)
    doc = read_toml(path, ExperimentError)
    try:
        return parse_experiment(doc, path.stem, data_path)
    except (ExperimentError, TypeError, ValueError) as error:
        raise ExperimentError(f"{path}: {error}") from None


def load_experiment_data(exp: Experiment) -> Dataset:
    """The experiment's dataset through the loaders."""
    return load_dataset(exp.data, exp.path, **exp.synthetic)


def write_trials(path: Path, records: list[dict]) -> None:
    """``trials.jsonl``: every finished trial, one JSON line each, in trial order (an export of
    the study for readers and tools; the study is the record)."""
    path.write_text(
        "".join(json.dumps(r) + "\n" for r in sorted(records, key=lambda r: r["trial"]))
    )


def run_search(
    exp: Experiment,
    scorer: Scorer | Callable[[], Scorer],
    plan: list[dict],
    study,
    progress: bool = True,
) -> list[dict]:
    """Run the trials of ``plan`` the study has not finished (or, for ``tpe``, until
    ``exp.trials`` have finished) and return every finished record. ``scorer`` may be a
    factory, called only if work is left."""
    from tqdm import tqdm

    records = finished_records(study, exp)
    if exp.search == "tpe":
        pending = [None] * max(0, exp.trials - len(records))
    else:
        pending = [(i, p) for i, p in enumerate(plan) if canonical(p) not in records]
        pending = by_training(exp, pending)
    if pending and not isinstance(scorer, Scorer):
        scorer = scorer()
    total = exp.trials if exp.search == "tpe" else len(plan)
    bar = tqdm(
        total=total, initial=total - len(pending), desc=exp.name, unit="trial", disable=not progress
    )
    best = max((r["objective"] for r in records.values()), default=float("nan"))
    dists = distributions(exp, None if exp.search == "tpe" else plan)
    base, index = exp.base_config(), len(records)
    for item in pending:
        index, params = item if item is not None else (index, None)
        trial = ask(study, dists, params)
        params = dict(trial.params) if params is None else params
        try:
            trial_config(base, params)
        except ConfigError:
            tell(study, trial, None)  # the sampler proposed an invalid point
            continue
        record = run_trial(scorer, exp, index, params, time.perf_counter)
        tell(study, trial, record)
        records[record["key"]] = record
        index += 1
        best = float(np.nanmax([best, record["objective"]]))
        bar.set_postfix({exp.objective_name: f"{best:.4f}"})
        bar.update()
    bar.close()
    if exp.search == "tpe":
        return sorted(records.values(), key=lambda r: r["trial"])
    return [records[canonical(p)] for p in plan]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def to_toml(fragment: dict[str, dict[str, Any]]) -> str:
    """A two-level config fragment as TOML, sections and keys in `SonaConfig` order."""
    lines = []
    for section, section_field in SonaConfig.model_fields.items():
        if fragment.get(section):
            order = list(section_field.annotation.model_fields)
            lines += [f"[{section}]"] + [
                f"{k} = {_toml_value(fragment[section][k])}"
                for k in sorted(fragment[section], key=order.index)
            ]
            lines.append("")
    return "\n".join(lines)


def write_best_toml(path: Path, exp: Experiment, final: dict, out_dir: Path) -> None:
    """The best setting (the ``[base]`` overrides plus its params) as a loadable config."""
    best = final["best"]
    header = [
        f"# Best of experiment {exp.name!r} by {final['objective']} on the validation split:",
        f"# trial {best['trial']}, validation {best['validation']['objective']:.4f}, "
        f"test {best['test']['objective']:.4f} (base config: validation "
        f"{final['default']['validation']['objective']:.4f}, test "
        f"{final['default']['test']['objective']:.4f}).",
        f"# serve it: sona serve --config {out_dir / 'best.toml'}",
        "",
    ]
    path.write_text("\n".join(header) + to_toml(deep_merge(exp.base, nested(best["params"]))))


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_summary(path: Path, exp: Experiment, records: list[dict], final: dict) -> None:
    """``summary.md``: the setup, the final table and every trial sorted by the objective."""
    keys = [d.key for d in exp.space]
    ranked = sorted(records, key=lambda r: (-r["objective"], r["trial"]))
    data = exp.data + (f" ({exp.path})" if exp.path else f" {exp.synthetic}")
    lines = [
        f"# Experiment `{exp.name}`",
        "",
        f"{exp.search} search, {len(records)} trials, seed {exp.seed}; data {data}; protocol "
        f"{exp.protocol.upper()}; objective **{exp.objective_name}** on the validation split "
        f"({final['users']['validation']} users); test split ({final['users']['test']} users) "
        "used once, for the best setting and the base config.",
        "",
        "## Best vs base config",
        "",
        format_final_table(final),
        "",
        "![NDCG vs diversity](ndcg_vs_diversity.png) ![fusion weights](weights_effect.png)",
        "",
        "## Trials (validation), best first",
        "",
        "| rank | trial | objective | " + " | ".join(METRICS) + " | " + " | ".join(keys) + " |",
        "| ---: | ---: | ---: |" + " ---: |" * (len(METRICS) + len(keys)),
    ]
    for rank, record in enumerate(ranked, 1):
        cells = [rank, record["trial"], record["objective"]]
        cells += [record["metrics"][m] for m in METRICS] + [record["params"][k] for k in keys]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    path.write_text("\n".join(lines) + "\n")


@dataclass
class ExperimentResult:
    """What `run_experiment` did and wrote."""

    out_dir: Path
    records: list[dict]
    best: dict
    final: dict
    ran: int
    skipped: int
    ignored: int
    seconds: float


def _cached_final(path: Path, exp: Experiment, best: dict) -> dict | None:
    if not path.exists():
        return None
    final = json.loads(path.read_text())
    same = final.get("setup") == exp.setup_id and final.get("best_key") == best["key"]
    same = same and final.get("objective") == exp.objective_name
    same = same and final.get("default", {}).get("params") == exp.default_params()
    return final if same else None


def run_experiment(
    exp: Experiment, out_root: str | Path = "results", progress: bool = True, log_fn: LogFn = _quiet
) -> ExperimentResult:
    """Search on validation, evaluate the best setting once on test, write ``out_root/name/``."""
    clock = time.perf_counter()
    out_dir = Path(out_root) / exp.name
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = plan_trials(exp, log_fn)
    if not plan and exp.search != "tpe":
        raise ExperimentError(f"{exp.name}: no valid point in the space")
    study = open_study(exp, out_dir)
    done = finished_records(study, exp)
    skipped = len(done) if exp.search == "tpe" else sum(canonical(p) in done for p in plan)
    ignored = ignored_trials(exp, out_dir)
    if ignored:
        log_fn(f"ignoring {ignored} trials of this folder's study.db from another setup")
    planned = exp.trials if exp.search == "tpe" else len(plan)
    log_fn(
        f"{exp.name}: {planned} trials, {skipped} already done, objective "
        f"{exp.objective_name} on validation"
    )
    state: dict[str, Any] = {}

    def validation_scorer() -> Scorer:
        if "scorer" not in state:
            dataset = load_experiment_data(exp)
            log_fn(
                f"data {dataset.name}: {dataset.n_users} users, {dataset.n_items} items, "
                f"{len(dataset.events)} events"
            )
            state["splits"] = make_splits(dataset, exp.protocol, exp.seed)
            state["scorer"] = Scorer(
                dataset, state["splits"].validation, exp.protocol, exp.max_users, exp.seed
            )
        return state["scorer"]

    records = run_search(exp, validation_scorer, plan, study, progress)
    write_trials(out_dir / "trials.jsonl", records)
    best = best_record(records)
    final = _cached_final(out_dir / "final.json", exp, best)
    if final is None:
        log_fn(f"best trial {best['trial']} ({best['objective']:.4f}); evaluating it once on test")
        scorer = validation_scorer()
        final = final_evaluation(exp, state["splits"], scorer, best)
        (out_dir / "final.json").write_text(json.dumps(final, indent=2) + "\n")
    else:
        log_fn("final test evaluation of this best setting already in final.json; kept")
    write_outputs(out_dir, exp, records, final)
    return ExperimentResult(
        out_dir,
        records,
        best,
        final,
        planned - skipped,
        skipped,
        ignored,
        time.perf_counter() - clock,
    )


def write_outputs(out_dir: Path, exp: Experiment, records: list[dict], final: dict) -> None:
    """``summary.md``, ``best.toml`` and the two plots."""
    base = exp.base_config()
    write_summary(out_dir / "summary.md", exp, records, final)
    write_best_toml(out_dir / "best.toml", exp, final, out_dir)
    save_figure(
        ndcg_vs_diversity_figure(records, base.diversity.mmr_lambda, final),
        out_dir / "ndcg_vs_diversity.png",
    )
    save_figure(
        weights_effect_figure(records, base, exp.objective_name, exp.protocol),
        out_dir / "weights_effect.png",
    )
