"""Experiment spaces (pure): an experiment document (parsed TOML) in, a validated `Experiment`
and its seeded plan of trials out.

An experiment names the data, the protocol, the search (grid, seeded random, or ``tpe``: Optuna's
adaptive sampler, which proposes points as it goes), an objective and a space of dotted config
keys (``"lora.rank" = [4, 8]``). Reading the file and running the trials
is host-side (`sona_lab.experiments`).

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
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sona_jax.config import ConfigError, SonaConfig, config_from_dict

METRICS: tuple[str, ...] = ("ndcg@10", "hr@10", "precision@10", "coverage", "ild@10")
DATA_KINDS: tuple[str, ...] = ("synthetic", "ml-100k", "ml-latest")
LAMBDA_SWEEP: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))
SYNTHETIC_OPTIONS = {
    "users": "n_users",
    "items": "n_items",
    "events_per_user": "events_per_user",
    "seed": "seed",
}
SEARCHES: tuple[str, ...] = ("grid", "random", "tpe")  # tpe: Optuna's sampler, host-side
RANDOM_DRAWS_PER_TRIAL = 50  # a random plan gives up after this many draws per wanted trial
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
    _check_choice("search", search, SEARCHES)
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
    for _ in range(RANDOM_DRAWS_PER_TRIAL * exp.trials):
        params = {d.key: d.sample(rng) for d in exp.space}
        found.setdefault(canonical(params), params)
        if len(found) == exp.trials:
            break
    return list(found.values())


def plan_trials(exp: Experiment, log_fn: LogFn = _quiet) -> list[dict[str, Any]]:
    """The trials' params, in order: every grid point, or ``trials`` distinct seeded samples
    (a ``tpe`` search has no plan up front: its sampler proposes each point).

    Points whose config is invalid (all fusion weights zero, say) are dropped with a message.
    """
    if exp.search == "tpe":
        return []
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


def objective_value(metrics: dict[str, float], objective: dict[str, float]) -> float:
    """Weighted sum of metrics; higher is better."""
    return float(sum(weight * metrics[name] for name, weight in objective.items()))
