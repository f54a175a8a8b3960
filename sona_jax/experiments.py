"""Research workflow: seeded searches over SONA settings on a validation split (`sona experiment`).

An experiment file (TOML, see ``configs/experiments/``) names the data, the protocol, the search
(grid or random), an objective and a space of dotted config keys (``"lora.rank" = [4, 8]``).
`run_experiment` carves a validation split out of the training split, trains one model per
distinct *training* setting (serving-only keys such as fusion weights, MMR λ and graph decay reuse
it), scores every trial with the same `recommend` call the service makes, appends each trial to
``trials.jsonl`` (a re-run skips finished ones), then evaluates the best setting once on the test
split beside the base config and writes ``summary.md``, ``best.toml``, ``final.json`` and plots.

Host-side orchestration (numpy, files, matplotlib); the engine calls stay in `evaluation` and
`recommend`. Plots use `matplotlib.figure.Figure` directly, so no pyplot backend is needed.

Example:
    >>> exp = parse_experiment({"experiment": {"name": "demo", "search": "grid"},
    ...                         "space": {"lora.rank": [4, 8]}})
    >>> plan_trials(exp)
    [{'lora.rank': 4}, {'lora.rank': 8}]
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sona_jax.config import ConfigError, SonaConfig, config_from_dict, read_toml
from sona_jax.datasets import Dataset, load_dataset
from sona_jax.evaluation import (
    EVAL_BATCH,
    HybridRanker,
    Split,
    first_events_mask,
    list_metrics,
    make_split,
    subset,
    train_model,
)
from sona_jax.model import TrainedModel
from sona_jax.recommend import KIND_NAMES, SOURCE_NAMES, fusion_weights, recommend
from sona_jax.serving_state import model_user_rows, plain_requests, serving_state

METRICS: tuple[str, ...] = ("ndcg@10", "hr@10", "precision@10", "coverage", "ild@10")
DATA_KINDS: tuple[str, ...] = ("synthetic", "ml-100k", "ml-latest")
LAMBDA_SWEEP: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))
# Keys read only when serving (by `recommend` and the sources from their static config), never
# when training or building the serving state: trials that differ only in these share one trained
# model. "section" or "section.key"; any key not listed (a new one too) retrains, which is safe.
SERVING_ONLY: frozenset[str] = frozenset(
    {
        "fusion",
        "serving",
        "diversity.mmr_lambda",
        "diversity.pool_size",
        "cold_start.min_events",
        "cold_start.blend_events",
        "cold_start.exploration_floor",
        "cold_start.exploration_start",
        "cold_start.exploration_decay",
        "cold_start.genre_strength",
        "graph.hops",
        "graph.decay",
        "graph.seed_position_decay",
        "graph.frontier",
        "graph.recent_items",
        "collaborative.neighbours",
        "candidates.per_source",
        "candidates.trending",
        "context.tv_min_minutes",
        "context.mobile_max_minutes",
    }
)
SYNTHETIC_OPTIONS = {
    "users": "n_users",
    "items": "n_items",
    "events_per_user": "events_per_user",
    "seed": "seed",
}
LogFn = Callable[[str], None]


class ExperimentError(ValueError):
    """An experiment file is invalid; the message names the key and what to change."""


def _quiet(message: str) -> None:
    """A log function that drops its message."""


def _round(value: float) -> float:
    """Four significant digits: sampled values stay readable and their JSON keys stable."""
    return float(f"{value:.4g}")


def canonical(value: Any) -> str:
    """Canonical JSON (sorted keys, no spaces): the key of a trial's params."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def nested(params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"lora.rank": 4}`` -> ``{"lora": {"rank": 4}}``."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in params.items():
        section, _, name = key.partition(".")
        out.setdefault(section, {})[name] = value
    return out


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Nested dict merge; ``extra`` wins."""
    out = dict(base)
    for key, value in extra.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = merge(out[key], value) if both else value
    return out


# ---- the search space -------------------------------------------------------------------------


@dataclass(frozen=True)
class Dimension:
    """One searched key: a list of ``values``, or a ``low``..``high`` range.

    A range is uniform (log-uniform with ``log``), integer when both ends are integers, and needs
    ``steps`` points to be part of a grid.
    """

    key: str
    values: tuple = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    steps: int = 0

    @property
    def integer(self) -> bool:
        return all(type(end) is int for end in (self.low, self.high))

    def _cast(self, x: float) -> int | float:
        return int(round(x)) if self.integer else _round(x)

    def grid(self) -> list:
        """The values a grid search takes, in order."""
        if self.values:
            return list(self.values)
        if not self.steps:
            raise ExperimentError(f"space.{self.key}: a grid needs a list or a range with steps")
        points = (np.geomspace if self.log else np.linspace)(self.low, self.high, self.steps)
        return list(dict.fromkeys(self._cast(float(p)) for p in points))

    def sample(self, rng: np.random.Generator) -> Any:
        """One seeded random value."""
        if self.values:
            return self.values[int(rng.integers(len(self.values)))]
        if self.integer and not self.log:
            return int(rng.integers(self.low, self.high + 1))
        if self.log:
            return self._cast(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return self._cast(rng.uniform(self.low, self.high))

    def ends(self) -> list:
        """Values to validate against the config: the list, or both ends of the range."""
        return list(self.values) if self.values else [self.low, self.high]


def _check_key(key: str) -> None:
    section, _, name = key.partition(".")
    field_info = SonaConfig.model_fields.get(section)
    if not name or field_info is None or name not in field_info.annotation.model_fields:
        raise ExperimentError(f"space: {key!r} is not a config key (section.key, e.g. lora.rank)")


def parse_dimension(key: str, spec: Any) -> Dimension:
    """A `Dimension` from its TOML value: a list, a scalar (fixed) or {low, high, log, steps}."""
    _check_key(key)
    if isinstance(spec, list):
        if not spec:
            raise ExperimentError(f"space.{key}: empty list")
        return Dimension(key, values=tuple(spec))
    if not isinstance(spec, dict):
        return Dimension(key, values=(spec,))
    unknown = set(spec) - {"low", "high", "log", "steps"}
    if unknown or not {"low", "high"} <= set(spec):
        raise ExperimentError(f"space.{key}: a range is {{low, high, log?, steps?}}, got {spec}")
    low, high = spec["low"], spec["high"]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high)):
        raise ExperimentError(f"space.{key}: low and high must be numbers")
    if not low < high or (spec.get("log") and low <= 0):
        raise ExperimentError(f"space.{key}: need low < high (and low > 0 with log)")
    return Dimension(
        key, low=low, high=high, log=bool(spec.get("log", False)), steps=int(spec.get("steps", 0))
    )


def _check_values(dimension: Dimension, base: SonaConfig) -> None:
    for value in dimension.ends():
        try:
            base.with_overrides(nested({dimension.key: value}))
        except ConfigError as error:
            raise ExperimentError(f"space.{dimension.key} = {value!r}: {error}") from None


# ---- the experiment file ----------------------------------------------------------------------


@dataclass(frozen=True)
class Experiment:
    """A parsed experiment file.

    objective: metric name -> weight (the objective is the weighted sum, higher is better);
    base: nested config overrides every trial starts from; synthetic: `generate_synthetic`
    options; max_users: score at most this many (seeded) validation users, 0 for all.
    """

    name: str
    space: tuple[Dimension, ...]
    data: str = "synthetic"
    path: str | None = None
    protocol: str = "p1"
    search: str = "random"
    trials: int = 16
    seed: int = 0
    objective: dict[str, float] = field(default_factory=lambda: {"ndcg@10": 1.0})
    base: dict[str, Any] = field(default_factory=dict)
    synthetic: dict[str, Any] = field(default_factory=dict)
    max_users: int = 0

    def base_config(self) -> SonaConfig:
        """Defaults with the file's ``[base]`` overrides: the "default" every trial changes."""
        return config_from_dict(self.base, source=f"{self.name}: base")

    def default_params(self) -> dict[str, Any]:
        """The base config's value of every searched key."""
        cfg = self.base_config()
        return {
            d.key: getattr(getattr(cfg, d.key.split(".")[0]), d.key.split(".")[1])
            for d in self.space
        }

    @property
    def objective_name(self) -> str:
        if list(self.objective.values()) == [1.0]:
            return next(iter(self.objective))
        return " + ".join(f"{w:g}·{m}" for m, w in self.objective.items())

    def setup(self) -> dict[str, Any]:
        """What the trials' metrics depend on besides their params (data, split, base)."""
        return {
            "data": self.data,
            "path": self.path,
            "protocol": self.protocol,
            "seed": self.seed,
            "synthetic": self.synthetic,
            "base": self.base,
            "max_users": self.max_users,
        }

    @property
    def setup_id(self) -> str:
        """Hash of `setup` and of the resolved base config (a changed default changes it too)."""
        resolved = self.setup() | {"resolved": self.base_config().model_dump()}
        return hashlib.sha256(canonical(resolved).encode()).hexdigest()[:12]


_EXPERIMENT_KEYS = {
    "name",
    "data",
    "path",
    "protocol",
    "search",
    "trials",
    "seed",
    "objective",
    "synthetic",
    "max_users",
}


def _parse_objective(value: Any) -> dict[str, float]:
    objective = {value: 1.0} if isinstance(value, str) else dict(value)
    bad = [m for m in objective if m not in METRICS]
    if bad or not objective:
        raise ExperimentError(
            f"experiment.objective: {bad or value} not among {list(METRICS)} "
            "(a name, or a table of name = weight)"
        )
    return {m: float(w) for m, w in objective.items()}


def _parse_synthetic(value: dict[str, Any], seed: int) -> dict[str, Any]:
    unknown = set(value) - set(SYNTHETIC_OPTIONS)
    if unknown:
        raise ExperimentError(
            f"experiment.synthetic: unknown keys {sorted(unknown)}; use {sorted(SYNTHETIC_OPTIONS)}"
        )
    return {"seed": seed} | {SYNTHETIC_OPTIONS[k]: v for k, v in value.items()}


def _check_choice(key: str, value: Any, choices: Iterable[str]) -> None:
    if value not in choices:
        raise ExperimentError(f"experiment.{key}: {value!r}; use one of {', '.join(choices)}")


def parse_experiment(
    doc: dict[str, Any], default_name: str = "experiment", data_path: str | None = None
) -> Experiment:
    """Validate a parsed TOML document; ``data_path`` (``--path``) overrides the file's path."""
    unknown = set(doc) - {"experiment", "base", "space"}
    if unknown:
        raise ExperimentError(f"unknown tables {sorted(unknown)}; use experiment, base, space")
    head = dict(doc.get("experiment", {}))
    if set(head) - _EXPERIMENT_KEYS:
        raise ExperimentError(f"experiment: unknown keys {sorted(set(head) - _EXPERIMENT_KEYS)}")
    name = str(head.get("name", default_name))
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ExperimentError(f"experiment.name: {name!r} must be a plain folder name")
    data, protocol = head.get("data", "synthetic"), head.get("protocol", "p1")
    search, seed = head.get("search", "random"), int(head.get("seed", 0))
    _check_choice("data", data, DATA_KINDS)
    _check_choice("protocol", protocol, ("p1", "p2"))
    _check_choice("search", search, ("grid", "random"))
    path = data_path or head.get("path") or None
    if data != "synthetic" and not path:
        raise ExperimentError(f"{data} needs its folder: path in [experiment] or --path")
    trials = int(head.get("trials", 16))
    if trials < 1:
        raise ExperimentError("experiment.trials: need at least 1")
    base = doc.get("base", {})
    try:
        base_cfg = config_from_dict(base, source="base")
    except ConfigError as error:
        raise ExperimentError(str(error)) from None
    if not doc.get("space"):
        raise ExperimentError('space: empty; add dotted keys, e.g. "lora.rank" = [4, 8]')
    space = tuple(parse_dimension(k, v) for k, v in doc["space"].items())
    for dimension in space:
        _check_values(dimension, base_cfg)
    return Experiment(
        name=name,
        space=space,
        data=data,
        path=None if data == "synthetic" else str(path),
        protocol=protocol,
        search=search,
        trials=trials,
        seed=seed,
        objective=_parse_objective(head.get("objective", "ndcg@10")),
        base=base,
        synthetic=_parse_synthetic(head.get("synthetic", {}), seed) if data == "synthetic" else {},
        max_users=int(head.get("max_users", 0)),
    )


def load_experiment(path: str | Path, data_path: str | None = None) -> Experiment:
    """Read and validate an experiment TOML file (the folder name defaults to the file stem)."""
    path = Path(path)
    doc = read_toml(path, ExperimentError)
    try:
        return parse_experiment(doc, path.stem, data_path)
    except (ExperimentError, TypeError, ValueError) as error:
        raise ExperimentError(f"{path}: {error}") from None


# ---- planning trials --------------------------------------------------------------------------


def trial_config(base: SonaConfig, params: dict[str, Any]) -> SonaConfig:
    """The validated config of one trial."""
    return base.with_overrides(nested(params))


def _candidates(exp: Experiment) -> list[dict[str, Any]]:
    keys = [d.key for d in exp.space]
    if exp.search == "grid":
        return [
            dict(zip(keys, combo, strict=True))
            for combo in itertools.product(*(d.grid() for d in exp.space))
        ]
    rng = np.random.default_rng(exp.seed)
    found: dict[str, dict[str, Any]] = {}
    for _ in range(50 * exp.trials):
        params = {d.key: d.sample(rng) for d in exp.space}
        found.setdefault(canonical(params), params)
        if len(found) == exp.trials:
            break
    return list(found.values())


def plan_trials(exp: Experiment, log_fn: LogFn = _quiet) -> list[dict[str, Any]]:
    """The trials' params, in order: every grid point, or ``trials`` distinct seeded samples.

    Points whose config is invalid (all fusion weights zero, say) are dropped with a message.
    """
    base, plan = exp.base_config(), []
    for params in _candidates(exp):
        try:
            trial_config(base, params)
            plan.append(params)
        except ConfigError as error:
            log_fn(f"dropped {canonical(params)}: {error}")
    if exp.search == "random" and len(plan) < exp.trials:
        log_fn(f"the space holds only {len(plan)} distinct valid points (asked for {exp.trials})")
    return plan


def _serving_only(section: str, key: str) -> bool:
    return section in SERVING_ONLY or f"{section}.{key}" in SERVING_ONLY


def training_key(cfg: SonaConfig) -> str:
    """Canonical JSON of every setting that changes the trained model (not the serving ones)."""
    dump = cfg.model_dump()
    return canonical(
        {s: {k: v for k, v in keys.items() if not _serving_only(s, k)} for s, keys in dump.items()}
    )


def scoring_config(cfg: SonaConfig, reference: SonaConfig) -> SonaConfig:
    """``cfg`` with fusion weights and MMR λ set to ``reference``'s.

    `recommend` gets both as array arguments (weights, request.mmr_lambda), never from its static
    config, so trials that differ only in them share one compiled program.
    """
    return cfg.with_overrides(
        {
            "fusion": reference.fusion.model_dump(),
            "diversity": {"mmr_lambda": reference.diversity.mmr_lambda},
        }
    )


def objective_value(metrics: dict[str, float], objective: dict[str, float]) -> float:
    """Weighted sum of metrics; higher is better."""
    return float(sum(weight * metrics[name] for name, weight in objective.items()))


# ---- data, splits and scoring -----------------------------------------------------------------


@dataclass(frozen=True)
class Splits:
    """test: held-out events of the whole log; validation: carved from ``test.train`` the same way
    (seed + 1). Search on validation, report on test."""

    dataset: Dataset
    protocol: str
    test: Split
    validation: Split


def make_splits(dataset: Dataset, protocol: str, seed: int) -> Splits:
    """The test split and the validation split inside its training events."""
    log, n_users, n_items = dataset.events, dataset.n_users, dataset.n_items
    test = make_split(protocol, log, np.ones(len(log), bool), n_users, n_items, seed)
    validation = make_split(protocol, log, test.train, n_users, n_items, seed + 1)
    return Splits(dataset, protocol, test, validation)


def load_experiment_data(exp: Experiment) -> Dataset:
    """The experiment's dataset through the engine's loaders."""
    return load_dataset(exp.data, exp.path, **exp.synthetic)


class Scorer:
    """Scores settings on one split with the service's `recommend`.

    Trains on ``split.train`` one model per distinct `training_key` and keeps the ``keep`` most
    recent ones; scores ``split.users`` (at most ``max_users``, seeded) against ``split.test``,
    with the test events' context under P1 as `evaluation.evaluate` does.
    """

    def __init__(
        self,
        dataset: Dataset,
        split: Split,
        protocol: str,
        reference: SonaConfig,
        max_users: int = 0,
        seed: int = 0,
        keep: int = 2,
    ):
        users = split.users
        if 0 < max_users < len(users):
            users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
        self.dataset, self.split, self.users, self.reference = dataset, split, users, reference
        context = protocol == "p1"
        self.time_of_day = split.test_time_of_day[users] if context else None
        self.device = split.test_device[users] if context else None
        self.keep, self.trained = keep, 0
        self._models: OrderedDict[str, tuple[HybridRanker, np.ndarray]] = OrderedDict()

    def ranker(self, cfg: SonaConfig) -> tuple[HybridRanker, np.ndarray]:
        """The ranker of ``cfg``'s trained model (trained now if not cached) and its item vectors."""
        key = training_key(cfg)
        if key not in self._models:
            model = train_model(subset(self.dataset, self.split.train), cfg)
            self._models[key] = (HybridRanker(model, cfg), np.asarray(model.base.item_embeddings))
            self.trained += 1
            while len(self._models) > self.keep:
                self._models.popitem(last=False)
        self._models.move_to_end(key)
        ranker, vectors = self._models[key]
        return ranker.with_config(scoring_config(cfg, self.reference)), vectors

    def top(self, cfg: SonaConfig, mmr_lambda: float | None = None) -> np.ndarray:
        """(users, 10) served lists under ``cfg`` (its fusion weights and MMR λ by default)."""
        ranker, _ = self.ranker(cfg)
        lam = cfg.diversity.mmr_lambda if mmr_lambda is None else mmr_lambda
        return ranker.top(
            self.users, np.asarray(fusion_weights(cfg)), lam, self.time_of_day, self.device
        )

    def metrics(self, cfg: SonaConfig, mmr_lambda: float | None = None) -> dict[str, float]:
        """NDCG@10, HR@10, Precision@10, coverage and ILD@10 of the served lists."""
        _, vectors = self.ranker(cfg)
        top = self.top(cfg, mmr_lambda)
        return list_metrics(top, self.split.test, self.users, vectors)


def lambda_sweep(
    scorer: Scorer, cfg: SonaConfig, lambdas: Iterable[float] = LAMBDA_SWEEP
) -> list[dict[str, float]]:
    """Metrics of ``cfg`` at each MMR λ (one model, no retraining): [{mmr_lambda, metrics...}]."""
    return [{"mmr_lambda": float(lam), **scorer.metrics(cfg, lam)} for lam in lambdas]


# ---- trial records ----------------------------------------------------------------------------


def read_trials(path: Path, setup_id: str) -> tuple[dict[str, dict], int]:
    """Finished trials of this setup in ``trials.jsonl`` by key, and how many lines were ignored
    (another setup, or unreadable)."""
    done: dict[str, dict] = {}
    ignored = 0
    if not path.exists():
        return done, ignored
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
            if record["setup"] == setup_id:
                done[canonical(record["params"])] = record
                continue
        except (json.JSONDecodeError, KeyError, TypeError):
            pass
        ignored += bool(line.strip())
    return done, ignored


def append_trial(path: Path, record: dict) -> None:
    """Append one trial as a JSON line (flushed: an interrupted run keeps what it finished)."""
    with path.open("a") as handle:
        handle.write(json.dumps(record) + "\n")


def run_trial(scorer: Scorer, exp: Experiment, index: int, params: dict) -> dict:
    """Score one trial on validation and return its record."""
    clock, trained = time.perf_counter(), scorer.trained
    metrics = scorer.metrics(trial_config(exp.base_config(), params))
    return {
        "trial": index,
        "key": canonical(params),
        "params": params,
        "metrics": metrics,
        "objective": objective_value(metrics, exp.objective),
        "setup": exp.setup_id,
        "trained": scorer.trained > trained,
        "seconds": round(time.perf_counter() - clock, 3),
    }


def _by_training(exp: Experiment, pending: list[tuple[int, dict]]) -> list[tuple[int, dict]]:
    """Pending trials grouped by training setting (stable), so each model is trained once."""
    base = exp.base_config()
    first: dict[str, int] = {}
    keys = [first.setdefault(training_key(trial_config(base, p)), len(first)) for _, p in pending]
    return [trial for _, trial in sorted(zip(keys, pending, strict=True), key=lambda t: t[0])]


def run_search(
    exp: Experiment,
    scorer: Scorer | Callable[[], Scorer],
    plan: list[dict],
    done: dict[str, dict],
    path: Path,
    progress: bool = True,
) -> list[dict]:
    """Run the trials of ``plan`` not in ``done``, appending each to ``path``; all records of the
    plan come back in plan order. ``scorer`` may be a factory, called only if work is left."""
    from tqdm import tqdm

    pending = [(i, p) for i, p in enumerate(plan) if canonical(p) not in done]
    records = {  # objective recomputed: the file's objective may have changed since
        key: done[key]
        | {"trial": i, "objective": objective_value(done[key]["metrics"], exp.objective)}
        for i, key in enumerate(map(canonical, plan))
        if key in done
    }
    if pending and not isinstance(scorer, Scorer):
        scorer = scorer()
    bar = tqdm(
        total=len(plan),
        initial=len(plan) - len(pending),
        desc=exp.name,
        unit="trial",
        disable=not progress,
    )
    best = max((r["objective"] for r in records.values()), default=float("nan"))
    for index, params in _by_training(exp, pending):
        record = run_trial(scorer, exp, index, params)
        append_trial(path, record)
        records[record["key"]] = record
        best = float(np.nanmax([best, record["objective"]]))
        bar.set_postfix({exp.objective_name: f"{best:.4f}"})
        bar.update()
    bar.close()
    return [records[canonical(p)] for p in plan]


def best_record(records: list[dict]) -> dict:
    """The record with the highest objective (the earliest trial on ties)."""
    return max(records, key=lambda r: (r["objective"], -r["trial"]))


# ---- the final evaluation ---------------------------------------------------------------------


def _setting(exp: Experiment, scorers: dict[str, Scorer], params: dict) -> dict:
    cfg = trial_config(exp.base_config(), params)
    out: dict[str, Any] = {"params": params}
    for split_name, scorer in scorers.items():
        metrics = scorer.metrics(cfg)
        out[split_name] = metrics | {"objective": objective_value(metrics, exp.objective)}
    return out


def final_evaluation(exp: Experiment, splits: Splits, validation: Scorer, best: dict) -> dict:
    """The best setting and the base config on validation and, once, on test; plus the best
    setting's validation metrics across `LAMBDA_SWEEP`."""
    base = exp.base_config()
    test = Scorer(splits.dataset, splits.test, exp.protocol, base)
    scorers = {"validation": validation, "test": test}
    best_setting = _setting(exp, scorers, best["params"]) | {"trial": best["trial"]}
    return {
        "experiment": exp.name,
        "setup": exp.setup_id,
        "setup_detail": exp.setup(),
        "objective": exp.objective_name,
        "best_key": best["key"],
        "best": best_setting,
        "default": _setting(exp, scorers, exp.default_params()),
        "lambda_sweep": lambda_sweep(validation, trial_config(base, best["params"])),
        "users": {"validation": int(len(validation.users)), "test": int(len(test.users))},
    }


def format_final_table(final: dict) -> str:
    """Markdown table: the best setting and the base config on validation and test."""
    columns = ["objective", *METRICS]
    lines = [
        f"| setting | split | {' | '.join(columns)} |",
        "| --- | --- |" + " ---: |" * len(columns),
    ]
    for name, label in (
        ("best", f"best (trial {final['best']['trial']})"),
        ("default", "default (base config)"),
    ):
        for split_name in ("validation", "test"):
            values = final[name][split_name]
            row = " | ".join(f"{values[c]:.4f}" for c in columns)
            lines.append(f"| {label} | {split_name} | {row} |")
    return "\n".join(lines)


# ---- result files -----------------------------------------------------------------------------


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
    path.write_text("\n".join(header) + to_toml(merge(exp.base, nested(best["params"]))))


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


# ---- plots ------------------------------------------------------------------------------------


def _figure(**options):
    from matplotlib.figure import Figure

    return Figure(layout="constrained", **options)


def draw_lambda_curve(ax, sweep: list[dict], label: str = "λ swept 0..1") -> None:
    """NDCG@10 against ILD@10 of a λ sweep on ``ax``, points labelled with their λ."""
    ild = [p["ild@10"] for p in sweep]
    ndcg = [p["ndcg@10"] for p in sweep]
    ax.plot(ild, ndcg, "-o", color="black", markersize=3, linewidth=1, label=label)
    for point in sweep:
        if abs(point["mmr_lambda"] * 10 - round(point["mmr_lambda"] * 10)) > 1e-6:
            continue  # label multiples of 0.1 only
        ax.annotate(
            f"{point['mmr_lambda']:g}",
            (point["ild@10"], point["ndcg@10"]),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=7,
        )


def ndcg_vs_diversity_figure(records: list[dict], default_lambda: float, final: dict | None = None):
    """NDCG@10 vs intra-list diversity of every trial coloured by MMR λ; with ``final``, the
    best setting's λ sweep and the best and base settings marked."""
    fig = _figure(figsize=(7.5, 5))
    ax = fig.subplots()
    lam = [r["params"].get("diversity.mmr_lambda", default_lambda) for r in records]
    points = ax.scatter(
        [r["metrics"]["ild@10"] for r in records],
        [r["metrics"]["ndcg@10"] for r in records],
        c=lam,
        cmap="viridis",
        vmin=0.0,
        vmax=1.0,
        s=28,
        label="trials",
    )
    fig.colorbar(points, ax=ax, label="MMR λ (1 = relevance only)")
    if final:
        draw_lambda_curve(ax, final["lambda_sweep"], "best setting, λ swept 0..1")
        for name, marker, colour in (("best", "*", "red"), ("default", "X", "tab:orange")):
            values = final[name]["validation"]
            ax.scatter(
                values["ild@10"],
                values["ndcg@10"],
                marker=marker,
                s=160,
                c=colour,
                edgecolors="black",
                zorder=3,
                label=f"{name} (validation)",
            )
    ax.set_xlabel("intra-list diversity ILD@10 (mean pairwise cosine distance)")
    ax.set_ylabel("NDCG@10 (validation)")
    ax.set_title("Relevance vs diversity across MMR λ")
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    return fig


def fusion_shares(records: list[dict], base: SonaConfig) -> np.ndarray:
    """(trials, 4) each trial's fusion weights as shares of their sum, SOURCE_NAMES order."""
    weights = np.array(
        [np.asarray(fusion_weights(trial_config(base, r["params"]))) for r in records]
    )
    return weights / weights.sum(1, keepdims=True)


def weight_effects(records: list[dict], base: SonaConfig) -> dict[str, dict[str, float]]:
    """Per fusion weight: OLS slope of the objective on its share, and Pearson r (NaN if the
    share never varies)."""
    shares = fusion_shares(records, base)
    y = np.array([r["objective"] for r in records])
    out = {}
    for s, name in enumerate(SOURCE_NAMES):
        x = shares[:, s]
        varies = len(records) > 1 and np.ptp(x) > 1e-9 and np.ptp(y) > 0
        slope = float(np.polyfit(x, y, 1)[0]) if varies else float("nan")
        r = float(np.corrcoef(x, y)[0, 1]) if varies else float("nan")
        out[name] = {"slope": slope, "r": r}
    return out


def weights_effect_figure(
    records: list[dict], base: SonaConfig, objective_name: str, protocol: str = "p1"
):
    """One panel per fusion weight: the objective against that weight's share of the total
    (weights are renormalised when serving), coloured by MMR λ (which moves the objective too),
    with a least-squares line (slope per unit share, Pearson r) and the best trial."""
    shares = fusion_shares(records, base)
    y = np.array([r["objective"] for r in records])
    lam = [r["params"].get("diversity.mmr_lambda", base.diversity.mmr_lambda) for r in records]
    effects = weight_effects(records, base)
    varies = len(set(lam)) > 1
    best = int(np.argmax(y))
    fig = _figure(figsize=(9.5, 6.5))
    axes = fig.subplots(2, 2, sharey=True)
    for s, (ax, name) in enumerate(zip(axes.ravel(), SOURCE_NAMES, strict=True)):
        x = shares[:, s]
        colour = {"c": lam, "cmap": "viridis", "vmin": 0.0, "vmax": 1.0} if varies else {}
        points = ax.scatter(x, y, s=24, **colour)
        ax.scatter(x[best], y[best], marker="*", s=160, c="red", edgecolors="black", zorder=3)
        effect = effects[name]
        if np.isfinite(effect["slope"]):
            line = np.linspace(x.min(), x.max(), 2)
            ax.plot(line, np.polyval(np.polyfit(x, y, 1), line), color="tab:red", linewidth=1)
        note = " (no request context under P2)" if name == "context" and protocol == "p2" else ""
        ax.set_title(
            f"{name}{note}: slope {effect['slope']:+.3f}, r {effect['r']:+.2f}", fontsize=9
        )
        ax.set_xlabel(f"{name} share of fusion weights (w / Σw)")
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"{objective_name} (validation)")
    if varies:
        fig.colorbar(points, ax=axes, label="MMR λ", shrink=0.6)
    fixed = "" if varies else f", MMR λ = {lam[0]:g}"
    fig.suptitle(
        f"Effect of each fusion weight on the objective (★ best trial; red: OLS fit{fixed})"
    )
    return fig


def lambda_tradeoff_figure(sweep: list[dict]):
    """Two panels over MMR λ: NDCG@10 vs ILD@10 (the trade-off curve), and ILD@10 / coverage /
    NDCG@10 against λ."""
    fig = _figure(figsize=(11, 4.5))
    left, right = fig.subplots(1, 2)
    draw_lambda_curve(left, sweep)
    left.set_xlabel("intra-list diversity ILD@10")
    left.set_ylabel("NDCG@10")
    left.set_title("Relevance vs diversity (labels: λ)")
    lam = [p["mmr_lambda"] for p in sweep]
    for metric, style in (("ndcg@10", "-o"), ("ild@10", "-s"), ("coverage", "-^")):
        values = np.array([p[metric] for p in sweep])
        right.plot(
            lam,
            values / max(values.max(), 1e-12),
            style,
            markersize=4,
            label=f"{metric} (max {values.max():.3f})",
        )
    right.set_xlabel("MMR λ (1 = relevance only)")
    right.set_ylabel("share of the metric's maximum over λ")
    right.set_title("Each metric across λ")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    right.legend(fontsize=8)
    return fig


def save_figure(fig, path: Path) -> None:
    """Write a figure as PNG."""
    fig.savefig(path, dpi=120)


# ---- the whole run ----------------------------------------------------------------------------


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
    if not plan:
        raise ExperimentError(f"{exp.name}: no valid point in the space")
    done, ignored = read_trials(out_dir / "trials.jsonl", exp.setup_id)
    skipped = sum(canonical(p) in done for p in plan)
    if ignored:
        log_fn(f"ignoring {ignored} lines of trials.jsonl from another setup")
    log_fn(
        f"{exp.name}: {len(plan)} trials, {skipped} already done, objective "
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
                dataset,
                state["splits"].validation,
                exp.protocol,
                exp.base_config(),
                exp.max_users,
                exp.seed,
            )
        return state["scorer"]

    records = run_search(exp, validation_scorer, plan, done, out_dir / "trials.jsonl", progress)
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
        len(plan) - skipped,
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


# ---- helpers for the notebooks ----------------------------------------------------------------


def notebook_small() -> bool:
    """True when ``SONA_NOTEBOOK_SMALL=1``: notebooks use small synthetic data (tests)."""
    return os.environ.get("SONA_NOTEBOOK_SMALL", "") not in ("", "0")


def ml100k_folder() -> Path:
    """``$SONA_ML100K``, else ``../shared/datasets/ml-100k`` beside the repository."""
    repo = Path(__file__).resolve().parents[1]
    return Path(os.environ.get("SONA_ML100K", repo.parent / "shared" / "datasets" / "ml-100k"))


def research_dataset(seed: int = 0) -> Dataset:
    """The notebooks' data: small synthetic (300 x 400) with ``SONA_NOTEBOOK_SMALL=1``, else
    MovieLens 100K when found (`ml100k_folder`), else synthetic 2 000 x 3 000."""
    if notebook_small():
        return load_dataset("synthetic", n_users=300, n_items=400, events_per_user=30, seed=seed)
    if (ml100k_folder() / "u.data").is_file():
        return load_dataset("ml-100k", str(ml100k_folder()))
    return load_dataset("synthetic", n_users=2_000, n_items=3_000, seed=seed)


def _pad(values: np.ndarray | None, start: int, fill) -> np.ndarray | None:
    """Rows ``start .. start + EVAL_BATCH`` of ``values``, padded with ``fill`` (None stays)."""
    if values is None:
        return None
    rows = values[start : start + EVAL_BATCH]
    return np.concatenate([rows, np.full(EVAL_BATCH - len(rows), fill, rows.dtype)])


def served(
    model: TrainedModel,
    cfg: SonaConfig,
    users: np.ndarray,
    mmr_lambda: float,
    time_of_day: np.ndarray | None = None,
    device: np.ndarray | None = None,
    k: int = 10,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the service would serve ``users`` (model rows), from the same `recommend` call.

    Returns (users, k) items, (users, k) index into `KIND_NAMES` of why each was served, and
    (users, k, 5) each item's weighted relevance from the four sources and from cold start.
    Users go in batches of `EVAL_BATCH`, the last one padded.
    """
    state, weights = serving_state(model), np.asarray(fusion_weights(cfg))
    parts: list[tuple[np.ndarray, ...]] = []
    for start in range(0, len(users), EVAL_BATCH):
        n = min(EVAL_BATCH, len(users) - start)
        request = plain_requests(
            EVAL_BATCH,
            mmr_lambda,
            time_of_day=_pad(time_of_day, start, -1),
            device=_pad(device, start, -1),
        )
        rows = model_user_rows(model, _pad(users, start, users[start]))
        limit = np.full(EVAL_BATCH, k, np.int32)
        result = recommend(state, rows, request, limit, weights, cfg, k)
        parts.append(
            tuple(np.asarray(x)[:n] for x in (result.items, result.kind, result.contributions))
        )
    return tuple(np.concatenate(column) for column in zip(*parts, strict=True))


__all__ = [
    "KIND_NAMES",
    "LAMBDA_SWEEP",
    "METRICS",
    "Dimension",
    "Experiment",
    "ExperimentError",
    "ExperimentResult",
    "Scorer",
    "Splits",
    "best_record",
    "canonical",
    "first_events_mask",
    "format_final_table",
    "lambda_sweep",
    "lambda_tradeoff_figure",
    "load_experiment",
    "make_splits",
    "ndcg_vs_diversity_figure",
    "parse_experiment",
    "plan_trials",
    "research_dataset",
    "run_experiment",
    "save_figure",
    "served",
    "trial_config",
    "training_key",
    "weight_effects",
    "weights_effect_figure",
]
