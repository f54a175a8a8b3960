"""Trial records and resume in an Optuna study (``study.db`` in the results folder, SQLite).

One study per experiment setup (`Experiment.setup_id`): a changed data set, split, base config
or default starts a new study, and trials of the old one are counted as ignored. Grid and
random plans are SONA's own (seeded, validated, grouped so each train-time digest trains one
model) and are enqueued into the study; ``tpe`` asks Optuna's TPE sampler for each point.
Each finished trial keeps SONA's record (params, metrics, objective, timing) as a user
attribute; a run killed mid-trial leaves that trial RUNNING, which the next run marks FAILED.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from sona_jax.search.space import Experiment, canonical, objective_value

RECORD = "record"  # user attribute holding SONA's trial record


def open_study(exp: Experiment, out_dir: Path) -> optuna.Study:
    """The experiment's study, created or resumed; stale RUNNING trials are marked FAILED."""
    optuna.logging.set_verbosity(logging.WARNING)
    sampler = (
        optuna.samplers.TPESampler(seed=exp.seed)
        if exp.search == "tpe"
        else optuna.samplers.RandomSampler(seed=exp.seed)  # unused: plans are enqueued
    )
    study = optuna.create_study(
        study_name=f"{exp.name}-{exp.setup_id}",
        storage=storage_url(out_dir),
        direction="maximize",
        sampler=sampler,
        load_if_exists=True,
    )
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)
    return study


def storage_url(out_dir: Path) -> str:
    return f"sqlite:///{out_dir / 'study.db'}"


def ignored_trials(exp: Experiment, out_dir: Path) -> int:
    """Trials recorded under other setups of this experiment's folder."""
    name = f"{exp.name}-{exp.setup_id}"
    return sum(
        summary.n_trials
        for summary in optuna.get_all_study_summaries(storage_url(out_dir))
        if summary.study_name != name
    )


def finished_records(study: optuna.Study, exp: Experiment) -> dict[str, dict]:
    """Records of the finished trials by params key (objective recomputed: the experiment's
    objective may have changed since)."""
    records = {}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        record = dict(trial.user_attrs[RECORD])
        record["objective"] = objective_value(record["metrics"], exp.objective)
        records[record["key"]] = record
    return records


def distributions(exp: Experiment, plan: list[dict] | None = None) -> dict[str, BaseDistribution]:
    """What Optuna records each key as: the values a plan takes, or the space's ranges."""
    out: dict[str, BaseDistribution] = {}
    for d in exp.space:
        if plan is not None:
            out[d.key] = CategoricalDistribution(sorted({p[d.key] for p in plan}, key=canonical))
        elif d.values:
            out[d.key] = CategoricalDistribution(list(d.values))
        elif d.integer:
            out[d.key] = IntDistribution(int(d.low), int(d.high), log=d.log)
        else:
            out[d.key] = FloatDistribution(float(d.low), float(d.high), log=d.log)
    return out


def ask(study: optuna.Study, dists: dict, params: dict[str, Any] | None = None):
    """A new trial: with ``params`` fixed (a planned point), else proposed by the sampler."""
    if params is not None:
        study.enqueue_trial(params)
    return study.ask(dists)


def tell(study: optuna.Study, trial, record: dict | None) -> None:
    """Finish a trial with SONA's record, or as pruned (an invalid proposed config)."""
    if record is None:
        study.tell(trial, state=TrialState.PRUNED)
        return
    trial.set_user_attr(RECORD, record)
    study.tell(trial, record["objective"])
