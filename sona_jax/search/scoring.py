"""Scoring experiment settings (pure): a setting's metrics on the validation split, served by
the same `ServingEngine.recommend` as the service, and the best-vs-default report.

Settings that share a train-time digest (`SonaConfig.train_digest`) share one trained model;
serve-time keys (fusion weights, MMR λ, graph walk, cold start, ...) reuse it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sona_jax.config import SonaConfig
from sona_jax.data.schema import Dataset
from sona_jax.eval.metrics import list_metrics
from sona_jax.eval.ranking import rank
from sona_jax.eval.splits import Split, make_split, subset
from sona_jax.model.train import train_model
from sona_jax.search.space import (
    LAMBDA_SWEEP,
    METRICS,
    Experiment,
    canonical,
    objective_value,
    trial_config,
)
from sona_jax.serve.engine import ServingEngine
from sona_jax.serve.fusion import fusion_matrix

Clock = Callable[[], float]


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


class Scorer:
    """Scores settings on one split with the service's `ServingEngine.recommend`.

    Trains on ``split.train`` one model per distinct train-time digest and keeps the ``keep``
    most recent ones; scores ``split.users`` (at most ``max_users``, seeded) against
    ``split.test``, with the test events' context under P1 as `eval.protocols.evaluate` does.
    """

    def __init__(
        self,
        dataset: Dataset,
        split: Split,
        protocol: str,
        max_users: int = 0,
        seed: int = 0,
        keep: int = 2,
    ):
        users = split.users
        if 0 < max_users < len(users):
            users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
        self.dataset, self.split, self.users = dataset, split, users
        context = protocol == "p1"
        self.time_of_day = split.test_time_of_day[users] if context else None
        self.device = split.test_device[users] if context else None
        self.keep, self.trained = keep, 0
        self._models: OrderedDict[str, ServingEngine] = OrderedDict()

    def engine(self, cfg: SonaConfig) -> ServingEngine:
        """``cfg``'s trained model (trained now if not cached), served under ``cfg``."""
        key = cfg.train_digest()
        if key not in self._models:
            model = train_model(subset(self.dataset, self.split.train), cfg)
            self._models[key] = ServingEngine.load(model)
            self.trained += 1
            while len(self._models) > self.keep:
                self._models.popitem(last=False)
        self._models.move_to_end(key)
        return self._models[key].with_config(cfg)

    def top(self, cfg: SonaConfig, mmr_lambda: float | None = None) -> np.ndarray:
        """(users, 10) served lists under ``cfg`` (its fusion weights and MMR λ by default)."""
        lam = cfg.diversity.mmr_lambda if mmr_lambda is None else mmr_lambda
        return rank(
            self.engine(cfg),
            self.users,
            np.asarray(fusion_matrix(cfg)),
            lam,
            self.time_of_day,
            self.device,
        )

    def metrics(self, cfg: SonaConfig, mmr_lambda: float | None = None) -> dict[str, float]:
        """NDCG@10, HR@10, Precision@10, coverage and ILD@10 of the served lists."""
        vectors = np.asarray(self.engine(cfg).model.base.item_embeddings)
        return list_metrics(self.top(cfg, mmr_lambda), self.split.test, self.users, vectors)


def lambda_sweep(
    scorer: Scorer, cfg: SonaConfig, lambdas: Iterable[float] = LAMBDA_SWEEP
) -> list[dict[str, float]]:
    """Metrics of ``cfg`` at each MMR λ (one model, no retraining): [{mmr_lambda, metrics...}]."""
    return [{"mmr_lambda": float(lam), **scorer.metrics(cfg, lam)} for lam in lambdas]


def run_trial(
    scorer: Scorer, exp: Experiment, index: int, params: dict, clock: Clock = lambda: 0.0
) -> dict:
    """Score one trial on validation and return its record (``clock`` times it)."""
    started, trained = clock(), scorer.trained
    metrics = scorer.metrics(trial_config(exp.base_config(), params))
    return {
        "trial": index,
        "key": canonical(params),
        "params": params,
        "metrics": metrics,
        "objective": objective_value(metrics, exp.objective),
        "setup": exp.setup_id,
        "trained": scorer.trained > trained,
        "seconds": round(clock() - started, 3),
    }


def by_training(exp: Experiment, pending: list[tuple[int, dict]]) -> list[tuple[int, dict]]:
    """Pending trials grouped by training setting (stable), so each model is trained once."""
    base = exp.base_config()
    first: dict[str, int] = {}
    keys = [first.setdefault(trial_config(base, p).train_digest(), len(first)) for _, p in pending]
    return [trial for _, trial in sorted(zip(keys, pending, strict=True), key=lambda t: t[0])]


def best_record(records: list[dict]) -> dict:
    """The record with the highest objective (the earliest trial on ties)."""
    return max(records, key=lambda r: (r["objective"], -r["trial"]))


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
    test = Scorer(splits.dataset, splits.test, exp.protocol)
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
