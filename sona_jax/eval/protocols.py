"""SPEC 7: one protocol end to end — the side-by-side rows of `sona eval`.

* P1 next-watch / P2 random split (`sona_jax.eval.splits`); items seen in train are never
  ranked; every rating counts as a positive. Same-second events are ordered by
  `EvalOptions.tie_break` before anything else; P1 adds a robustness pass where they are
  ordered at random (seeded), with the settings chosen on the main validation split.
* Baselines: popularity, EASE, implicit-ALS, RP3beta (each setting from its grid chosen on
  validation, then refit on train) and SASRec (`sona_jax.eval.sasrec`: epochs chosen by early
  stopping on validation; its test lists read each viewer's whole train sequence). The
  hybrid's transformer source reads that same network (`transformer_from`), so a run trains
  it once per order of the events.
* Every row carries a paired bootstrap 95 % interval of the hybrid's per-viewer NDCG minus
  that row's (`hybrid_minus_95ci`).
* Validation splits are carved from train with the same protocol; EASE's λ, ALS's settings and
  (optionally) the fusion weights, graph walk, MMR λ and cold start's genre strength are chosen
  there, never on test. Settings that differ in a train-time key get their own trained model
  (one per `SonaConfig.train_digest`); serve-time settings share it.
* Cold start (`sona_jax.eval.cold_start`): test users cut to their first n train events.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from sona_jax.config import SonaConfig
from sona_jax.data.schema import Dataset
from sona_jax.eval.baseline_rows import baseline_rows, fit_sasrec, hybrid_intervals
from sona_jax.eval.cold_start import cold_start_curve, tune_cold_start
from sona_jax.eval.engines import TrainedEngines, context_arrays, transformer_from
from sona_jax.eval.metrics import list_metrics, per_user_ndcg, ranking_metrics
from sona_jax.eval.options import Clock, EvalOptions, LogFn
from sona_jax.eval.ranking import rank
from sona_jax.eval.splits import order_ties, protocol_splits, subset
from sona_jax.eval.tie_pass import random_tie_pass
from sona_jax.eval.validation_tuning import tune_on_validation
from sona_jax.eval.weight_search import one_hot_weights
from sona_jax.serve.fusion import SOURCE_NAMES, fusion_matrix


def fusion_record(weights) -> dict:
    """The JSON of fusion weights (N_SOURCES,) or a learned fusion matrix (3, N_SOURCES), by
    source name."""
    rows = np.atleast_2d(np.asarray(weights, np.float64))
    record = dict(zip(SOURCE_NAMES, map(float, rows[0]), strict=True))
    if len(rows) > 1:
        record |= {
            "gate_history": dict(zip(SOURCE_NAMES, map(float, rows[1]), strict=True)),
            "gate_context": dict(zip(SOURCE_NAMES, map(float, rows[2]), strict=True)),
        }
    return record


class Tuned(NamedTuple):
    """What validation chose: the config (tuned weights, graph settings, the transformer
    source), fusion weights or matrix, the headline MMR λ and the fusion record; and the
    SASRec baseline trained on the validation split (its seconds), whose network the hybrid's
    transformer source reads."""

    cfg: SonaConfig
    weights: np.ndarray
    headline_lambda: float
    fusion: dict
    sasrec: object
    sasrec_seconds: float
    transformer: object


def _tuned(dataset, val_split, cfg, options: EvalOptions, log_fn: LogFn, clock: Clock) -> Tuned:
    weights = np.asarray(fusion_matrix(cfg))  # gates as configured (zeros: fixed)
    headline_lambda, fusion = 1.0, {"configured": weights.tolist()}
    log_fn("training SASRec on the validation split ...")
    sasrec_started = clock()
    sasrec = fit_sasrec(dataset, val_split, options)
    sasrec_seconds = clock() - sasrec_started
    transformer = None
    if options.transformer_source:
        cfg, transformer = transformer_from(cfg, sasrec)
    if options.tune_fusion:
        log_fn("training on the validation split to tune fusion weights ...")
        cfg, weights, headline_lambda, tuned = tune_on_validation(
            dataset, val_split, cfg, options, log_fn, transformer
        )
        fusion |= tuned
    return Tuned(cfg, weights, headline_lambda, fusion, sasrec, sasrec_seconds, transformer)


def _hybrid_rows(top, split, vectors, tuned: Tuned, options: EvalOptions):
    """The headline row (the λ chosen on validation; ``_plain``: λ = 1, ``_mmr``: the
    configured λ), the fusion the headline did not use beside it, and their per-viewer NDCG.
    Returns (rows, per_user, headline lists, the headline's metrics)."""
    users, cfg, weights = split.users, tuned.cfg, tuned.weights
    plain = top(weights, 1.0)
    diverse = top(weights, cfg.diversity.mmr_lambda)
    headline = plain if tuned.headline_lambda == 1.0 else top(weights, tuned.headline_lambda)
    metrics = list_metrics(headline, split.test, users, vectors)
    metrics |= list_metrics(plain, split.test, users, vectors, suffix="_plain")
    metrics |= list_metrics(diverse, split.test, users, vectors, suffix="_mmr")
    per_user = {}
    rows = [
        {
            "name": "sona-hybrid",
            "kind": "hybrid",
            "metrics": metrics,
            "weights": fusion_record(weights),
            "mmr_lambda": tuned.headline_lambda,
        }
    ]
    learned = tuned.fusion.get("learned")
    if learned:
        name, other = (
            ("sona-hybrid fixed weights", tuned.fusion["tuned"])
            if learned["used"]
            else ("sona-hybrid learned fusion", learned["matrix"])
        )
        other_top = top(np.asarray(other, np.float32), tuned.headline_lambda)
        per_user[name] = per_user_ndcg(other_top, split.test, users)[0]
        rows.append(
            {
                "name": name,
                "kind": "hybrid variant",
                "metrics": list_metrics(other_top, split.test, users, vectors),
                "weights": fusion_record(other),
            }
        )
    return rows, per_user, headline, metrics


def _source_rows(top, split, vectors, use_context: bool):
    """Each source alone (context only where the protocol has it): rows and per-viewer NDCG."""
    rows, per_user = [], {}
    for s, name in enumerate(SOURCE_NAMES):
        if name == "context" and not use_context:
            continue
        source_top = top(one_hot_weights(s), 1.0)
        per_user[name] = per_user_ndcg(source_top, split.test, split.users)[0]
        rows.append(
            {
                "name": name,
                "kind": "source",
                "metrics": list_metrics(source_top, split.test, split.users, vectors),
            }
        )
    return rows, per_user


def _cold_start(dataset, split, val_split, cfg, options: EvalOptions, use_context, log_fn):
    """The cold-start curve and, when tuning, the genre strength chosen on validation. Cold
    users are served with the configured weights (tuned ones fit warm users)."""
    found, weights = {}, np.asarray(fusion_matrix(cfg))
    k = options.k
    if options.tune_fusion and options.cold_genre_strengths:
        log_fn("choosing the cold-start genre strength on the validation split ...")
        strength, trials = tune_cold_start(dataset, val_split, cfg, weights, options, use_context)
        cfg = cfg.with_overrides({"cold_start": {"genre_strength": strength}})
        found["cold_start_tuning"] = {
            "genre_strength": strength,
            f"validation_{options.ndcg}": trials,
            "points": list(options.cold_tune_points),
        }
        log_fn(
            f"cold-start genre strength {strength:g} (validation NDCG@{k} "
            + ", ".join(f"{name}: {v:.4f}" for name, v in trials.items())
            + ")"
        )
    found["cold_start"] = cold_start_curve(
        dataset, split, cfg, weights, options, use_context, log_fn
    )
    return found


def evaluate(
    dataset: Dataset,
    cfg: SonaConfig,
    options: EvalOptions,
    log_fn: LogFn = lambda message: None,
    clock: Clock = lambda: 0.0,
) -> dict:
    """One protocol end to end: the `sona eval` JSON document (``clock``: seconds, a float)."""
    started = clock()
    dataset = order_ties(dataset, options.tie_break, options.seed)
    split, val_split = protocol_splits(dataset, options)
    users, k = split.users, options.k
    use_context = options.protocol == "p1"
    configured_cfg = cfg
    tuned = _tuned(dataset, val_split, cfg, options, log_fn, clock)
    cfg, weights = tuned.cfg, tuned.weights

    log_fn("training on the train split ...")
    engines = TrainedEngines(subset(dataset, split.train), tuned.transformer)
    engine = engines(cfg)
    vectors = np.asarray(engine.model.base.item_embeddings)
    tod, device = context_arrays(split, users, use_context)

    def top(weights_, lam: float, engine_=engine, tod_=tod, device_=device) -> np.ndarray:
        return rank(engine_, users, weights_, lam, tod_, device_, k)

    rows, per_user, headline, hybrid_metrics = _hybrid_rows(top, split, vectors, tuned, options)
    if options.tune_fusion:  # the configured setting on its own trained model
        configured = top(fusion_matrix(configured_cfg), 1.0, engines(configured_cfg))
        tuned.fusion["test_configured_metrics"] = list_metrics(
            configured, split.test, users, vectors
        )
    source_rows, source_per_user = _source_rows(top, split, vectors, use_context)
    rows += source_rows
    log_fn(f"hybrid: {hybrid_metrics[options.ndcg]:.4f} NDCG@{k}")
    more_rows, more_per_user, chosen = baseline_rows(
        dataset, val_split, split, vectors, options, log_fn, clock, tuned.sasrec,
        tuned.sasrec_seconds,
    )  # fmt: skip
    rows += more_rows
    hybrid_intervals(
        rows,
        per_user | source_per_user | more_per_user,
        per_user_ndcg(headline, split.test, users)[0],
        options.seed,
    )
    result = {
        "data": dataset.name,
        "protocol": options.protocol,
        "k": k,
        "rows": rows,
        "users": int(len(users)),
        "items": int(dataset.n_items),
        "fusion": tuned.fusion,
        "mmr_lambda": cfg.diversity.mmr_lambda,
        "tie_break": options.tie_break,
    }
    if options.protocol == "p1" and options.random_tie_seeds:
        result["random_ties"] = [
            random_tie_pass(
                dataset, cfg, weights, tuned.headline_lambda, chosen, seed, options, log_fn
            )
            for seed in options.random_tie_seeds
            if not (options.tie_break == "random" and seed == options.seed)  # the main run
        ]
    if use_context:
        no_context = top(weights, 1.0, tod_=None, device_=None)  # as `plain`, no context
        result["context"] = {
            f"{options.ndcg}_with_context": hybrid_metrics[f"{options.ndcg}_plain"],
            f"{options.ndcg}_without_context": ranking_metrics(no_context, split.test, users)[
                options.ndcg
            ],
            "context_fields": "time_of_day and device of the test event (device where known)",
        }
    if options.cold_start_points:
        result |= _cold_start(
            dataset, split, val_split, configured_cfg, options, use_context, log_fn
        )
    result["seconds"] = clock() - started
    return result
