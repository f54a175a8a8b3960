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

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from sona_jax.config import SonaConfig
from sona_jax.data.schema import Dataset
from sona_jax.eval.baseline_rows import baseline_rows, fit_sasrec, hybrid_intervals, matrix_of
from sona_jax.eval.cold_start import cold_start_curve, tune_cold_start
from sona_jax.eval.learned_fusion import FusionFitSettings, learn_on_validation
from sona_jax.eval.metrics import list_metrics, per_user_ndcg, ranking_metrics, top_from_scores
from sona_jax.eval.ranking import rank
from sona_jax.eval.sasrec import SASRec, SASRecSettings
from sona_jax.eval.splits import Split, make_split, order_ties, subset
from sona_jax.eval.weight_search import WeightSearch, one_hot_weights, search_weights
from sona_jax.model.sequence_model import flat_params, user_sequences
from sona_jax.model.train import train_model
from sona_jax.serve.engine import ServingEngine
from sona_jax.serve.fusion import SOURCE_NAMES, fusion_matrix, fusion_weights

LogFn = Callable[[str], None]
Clock = Callable[[], float]


@dataclass
class EvalOptions:
    protocol: str = "p1"
    seed: int = 0
    k: int = 10  # list length every metric is measured at
    tune_fusion: bool = True
    # fixed fusion weights: random points, draws around the best, then a coordinate search
    # (its seed is the run's)
    weight_search: WeightSearch = WeightSearch()
    # graph settings tried on validation (each overrides the configured [graph] section):
    # how the walk seeds (recency, how many, how weighted) and whether hop 1 is dense
    graph_settings: tuple[tuple[tuple[str, object], ...], ...] = (
        (("seed_position_decay", 1.0), ("recent_items", 256)),
        (("seed_position_decay", 0.9), ("recent_items", 100)),
        (("seed_position_decay", 0.8), ("recent_items", 100)),
        (("seed_position_decay", 0.8), ("recent_items", 256)),
        (("seed_position_decay", 1.0), ("recent_items", 256), ("first_hop", "dense")),
        (
            ("seed_position_decay", 1.0),
            ("recent_items", 256),
            ("first_hop", "dense"),
            ("seed_weighting", "uniform"),
            ("hops", 1),
        ),
    )
    # the learned fusion (`learned_fusion`): fitted on validation, used when its cross-fitted
    # validation NDCG beats the fixed weights' with a paired interval above zero
    learned_fusion: bool = True
    fusion_fit: FusionFitSettings = FusionFitSettings()
    # MMR λ tried on validation for the headline row (with the best weights and seeds)
    mmr_lambdas: tuple[float, ...] = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)
    cold_start_users: int = 500
    cold_start_points: tuple[int, ...] = (0, 1, 3, 5, 10)
    # cold start's genre strength tried on validation (empty: keep the configured one), with
    # validation users cut to these numbers of events
    cold_genre_strengths: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0)
    cold_tune_points: tuple[int, ...] = (1, 3, 5)
    ease_l2_grid: tuple[float, ...] = (50.0, 100.0, 200.0, 500.0, 1000.0)
    als_grid: tuple[tuple[int, float], ...] = ((32, 0.05), (64, 0.05), (128, 0.1))
    # RP3beta (alpha, beta, neighbours per item)
    rp3beta_grid: tuple[tuple[float, float, int], ...] = tuple(
        (alpha, beta, neighbours)
        for alpha in (0.5, 1.0)
        for beta in (0.0, 0.25, 0.5)
        for neighbours in (100, 400)
    )
    sasrec: SASRecSettings = SASRecSettings()
    # the hybrid's transformer source reads the SASRec baseline's network (trained once, on the
    # validation split's train part), its fusion weight tuned with the others
    transformer_source: bool = True
    # how same-second events are ordered (`splits.order_ties`); P1's robustness pass orders
    # them at random with each of these seeds
    tie_break: str = "hashed"
    random_tie_seeds: tuple[int, ...] = (1,)

    @property
    def ndcg(self) -> str:
        return f"ndcg@{self.k}"


class TrainedEngines:
    """Engines for configs on one dataset, one trained model per train-time digest; a config
    that trains a transformer gets ``transformer`` (flattened parameters: `transformer_from`)
    instead of training one per model."""

    def __init__(self, dataset: Dataset, transformer: dict[str, np.ndarray] | None = None):
        self.dataset, self.models, self.transformer = dataset, {}, transformer

    def __call__(self, cfg: SonaConfig) -> ServingEngine:
        digest = cfg.train_digest()
        if digest not in self.models:
            given = self.transformer if cfg.transformer.epochs > 0 else None
            model = train_model(self.dataset, cfg, transformer=given)
            self.models[digest] = ServingEngine.load(model)
        return self.models[digest].with_config(cfg)


def transformer_from(cfg: SonaConfig, sasrec: SASRec) -> tuple[SonaConfig, dict[str, np.ndarray]]:
    """``cfg`` training the transformer source as ``sasrec`` was trained (its shape, settings
    and chosen epochs), and that network's flattened parameters: the source reads the baseline's
    network, so the run trains it once."""
    s = sasrec.config
    settings = {
        "epochs": int(sasrec.epochs),
        "dim": s.dim,
        "blocks": s.blocks,
        "heads": s.heads,
        "max_len": s.max_len,
        "dropout": s.dropout,
        "learning_rate": s.learning_rate,
        "batch": s.batch,
    }
    return cfg.with_overrides({"transformer": settings}), flat_params(sasrec.params)


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


def context_arrays(split: Split, users: np.ndarray, use_context: bool):
    """The test events' (time_of_day, device) of ``users``, or (None, None)."""
    if not use_context:
        return None, None
    return split.test_time_of_day[users], split.test_device[users]


def tune_on_validation(
    dataset: Dataset,
    val_split: Split,
    cfg: SonaConfig,
    options: EvalOptions,
    log_fn: LogFn,
    transformer: dict[str, np.ndarray] | None = None,
) -> tuple[SonaConfig, np.ndarray, float, dict]:
    """Fusion weights, graph walk and MMR λ chosen on the validation split (models given the
    ``transformer`` network, as `TrainedEngines`).

    Returns the chosen config, weights (N_SOURCES,), λ and what was tried.
    """
    engines = TrainedEngines(subset(dataset, val_split.train), transformer)
    val_users = val_split.users
    tod, device = context_arrays(val_split, val_users, options.protocol == "p1")

    def ndcg(engine: ServingEngine, weights, lam: float = 1.0) -> float:
        top = rank(engine, val_users, weights, lam, tod, device, options.k)
        return ranking_metrics(top, val_split.test, val_users)[options.ndcg]

    # The walk is chosen by the graph source's own NDCG, then the weights on that model: a
    # joint maximum over every (walk, weights) pair picked validation noise (ML-100K P1: a
    # walk 0.0012 worse alone on validation won by one weight draw and lost 0.012 on test).
    graph_alone = one_hot_weights(SOURCE_NAMES.index("graph_based"))
    walks = [cfg] + [cfg.with_overrides({"graph": dict(s)}) for s in options.graph_settings]
    walk_ndcg = [ndcg(engines(walk), graph_alone) for walk in walks]
    best_cfg = walks[int(np.argmax(walk_ndcg))]  # the first of equals
    engine = engines(best_cfg)
    configured_ndcg = ndcg(engines(cfg), fusion_matrix(cfg))
    search = replace(options.weight_search, seed=options.seed)
    best_ndcg, weights, n_trials = search_weights(
        lambda weights: ndcg(engine, weights), np.asarray(fusion_weights(cfg)), search
    )
    lambdas = [(ndcg(engine, weights, lam), lam) for lam in options.mmr_lambdas]
    best_ndcg, headline_lambda = max(lambdas, key=lambda trial: trial[0])
    fixed_weights = weights
    learned = None
    if options.learned_fusion:
        matrix, learned = learn_on_validation(
            engine,
            val_split.test,
            val_users,
            tod,
            device,
            weights,
            best_cfg,
            options.fusion_fit,
            options.k,
        )
        if learned["used"]:
            weights = matrix
        log_fn(
            f"learned fusion: cross-fitted validation NDCG@{options.k} "
            f"{max(learned['cross_fitted_ndcg'].values()):.4f} vs fixed {learned['fixed_ndcg']:.4f}"
            " (difference's 95 % interval [{:+.4f}, {:+.4f}]; ".format(
                *learned["learned_minus_fixed_95ci"]
            )
            + f"{'used' if learned['used'] else 'not used'}; L2 {learned['l2']}, matrix "
            f"{np.round(matrix, 3).tolist()})"
        )
    graph_keys = ("seed_position_decay", "recent_items", "seed_weighting", "hops", "first_hop")
    tuned = {
        "tuned": fixed_weights.tolist(),
        "learned": learned,
        f"validation_{options.ndcg}": best_ndcg,
        "tuned_mmr_lambda": headline_lambda,
        f"validation_configured_{options.ndcg}": configured_ndcg,
        f"validation_graph_{options.ndcg}": walk_ndcg,
        "trials": n_trials,
        "models_trained": len(engines.models),
        "tuned_seed_position_decay": best_cfg.graph.seed_position_decay,
        "tuned_recent_items": best_cfg.graph.recent_items,
        "tuned_graph": {key: getattr(best_cfg.graph, key) for key in graph_keys},
    }
    g = best_cfg.graph
    log_fn(
        f"fusion weights {np.round(fixed_weights, 3).tolist()}, graph seeds {g.recent_items} "
        f"x{g.seed_position_decay}/position ({g.seed_weighting}, {g.hops} hops, "
        f"{g.first_hop} first hop), MMR λ {headline_lambda} (validation NDCG@{options.k} "
        f"{best_ndcg:.4f} vs configured {configured_ndcg:.4f})"
    )
    return best_cfg, weights, headline_lambda, tuned


def protocol_splits(dataset: Dataset, options: EvalOptions) -> tuple[Split, Split]:
    """The test split over every event and the validation split carved from its train."""
    log, n_users, n_items = dataset.events, dataset.n_users, dataset.n_items
    everything = np.ones(len(log), bool)
    split = make_split(options.protocol, log, everything, n_users, n_items, options.seed)
    val_split = make_split(options.protocol, log, split.train, n_users, n_items, options.seed + 1)
    return split, val_split


def random_tie_pass(
    dataset: Dataset,
    cfg: SonaConfig,
    weights: np.ndarray,
    mmr_lambda: float,
    chosen: dict,
    seed: int,
    options: EvalOptions,
    log_fn: LogFn,
) -> dict:
    """The hybrid, each of its sources and every baseline with the settings already chosen,
    refit after same-second events are put in a random (seeded) order: NDCG per row and the
    hybrid's paired interval against each. Nothing is re-tuned, so every row's settings were
    chosen on the main order's validation split, whose held-out item can be this order's test
    item (the same for every row: a check of the order's effect, not a fresh evaluation)."""
    shuffled = order_ties(dataset, "random", seed)
    split, val_split = protocol_splits(shuffled, options)
    users, k = split.users, options.k
    log = shuffled.events
    refit = {}
    for name, model in chosen.items():
        if isinstance(model, SASRec):
            # as in the main row: the chosen epochs on the validation split's train part, then
            # read each viewer's whole train sequence
            model = SASRec(model.config, epochs=model.epochs).fit(
                user_sequences(log, val_split.train, shuffled.n_users), shuffled.n_items
            )
            model.reading(user_sequences(log, split.train, shuffled.n_users))
        refit[name] = model
    # the transformer source reads the refit SASRec's network, as in the main pass (without
    # `transformer_source`, the config's own network is trained there and here)
    transformer = next(
        (flat_params(m.params) for m in refit.values() if isinstance(m, SASRec)), None
    )
    if not options.transformer_source:
        transformer = None
    engine = TrainedEngines(subset(shuffled, split.train), transformer)(cfg)
    tod, device = context_arrays(split, users, True)
    lists = {"sona-hybrid": rank(engine, users, weights, mmr_lambda, tod, device, k)}
    for s, name in enumerate(SOURCE_NAMES):  # each source alone, as in the main pass
        lists[name] = rank(engine, users, one_hot_weights(s), 1.0, tod, device, k)
    train_matrix = matrix_of(shuffled, split.train)
    for name, model in refit.items():
        if not isinstance(model, SASRec):
            model = model.fit(train_matrix)
        lists[name] = top_from_scores(model.scores(users), train_matrix, users, k)
    per_user = {name: per_user_ndcg(top, split.test, users)[0] for name, top in lists.items()}
    rows = [
        {"name": name, "metrics": {options.ndcg: float(v.mean())}} for name, v in per_user.items()
    ]
    hybrid_intervals(rows[1:], per_user, per_user["sona-hybrid"], options.seed)
    log_fn(
        f"random ties (seed {seed}): "
        + ", ".join(f"{row['name']} {row['metrics'][options.ndcg]:.4f}" for row in rows)
    )
    return {"seed": seed, "rows": rows}


def evaluate(
    dataset: Dataset,
    cfg: SonaConfig,
    options: EvalOptions,
    log_fn: LogFn = lambda message: None,
    clock: Clock = lambda: 0.0,
) -> dict:
    """Run one protocol end to end and return the `sona eval` JSON document (``clock``, when
    given, times each row: seconds as a float)."""
    started = clock()
    dataset = order_ties(dataset, options.tie_break, options.seed)
    split, val_split = protocol_splits(dataset, options)
    users, k, n_items = split.users, options.k, dataset.n_items
    use_context = options.protocol == "p1"

    configured_cfg = cfg
    weights = np.asarray(fusion_matrix(cfg))  # gates as configured (zeros: fixed)
    headline_lambda = 1.0
    fusion = {"configured": weights.tolist()}
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

    log_fn("training on the train split ...")
    engines = TrainedEngines(subset(dataset, split.train), transformer)
    engine = engines(cfg)
    vectors = np.asarray(engine.model.base.item_embeddings)
    tod, device = context_arrays(split, users, use_context)

    def top(weights_, lam: float, engine_=engine, tod_=tod, device_=device) -> np.ndarray:
        return rank(engine_, users, weights_, lam, tod_, device_, k)

    plain = top(weights, 1.0)
    diverse = top(weights, cfg.diversity.mmr_lambda)
    headline = plain if headline_lambda == 1.0 else top(weights, headline_lambda)
    # The headline row ranks with the λ chosen on validation; _plain (λ = 1, no MMR) against
    # _mmr (the configured λ) is the MMR trade-off.
    hybrid_metrics = list_metrics(headline, split.test, users, vectors)
    hybrid_metrics |= list_metrics(plain, split.test, users, vectors, suffix="_plain")
    hybrid_metrics |= list_metrics(diverse, split.test, users, vectors, suffix="_mmr")
    per_user = {}  # each other row's per-viewer NDCG, for the paired intervals
    rows = [
        {
            "name": "sona-hybrid",
            "kind": "hybrid",
            "metrics": hybrid_metrics,
            "weights": fusion_record(weights),
            "mmr_lambda": headline_lambda,
        }
    ]
    if fusion.get("learned"):  # the fusion the headline did not use, beside it
        learned = fusion["learned"]
        name, other = (
            ("sona-hybrid fixed weights", fusion["tuned"])
            if learned["used"]
            else ("sona-hybrid learned fusion", learned["matrix"])
        )
        other_top = top(np.asarray(other, np.float32), headline_lambda)
        per_user[name] = per_user_ndcg(other_top, split.test, users)[0]
        rows.append(
            {
                "name": name,
                "kind": "hybrid variant",
                "metrics": list_metrics(other_top, split.test, users, vectors),
                "weights": fusion_record(other),
            }
        )
    if options.tune_fusion:  # the configured setting on its own trained model
        configured = top(fusion_matrix(configured_cfg), 1.0, engines(configured_cfg))
        fusion["test_configured_metrics"] = list_metrics(configured, split.test, users, vectors)
    for s, name in enumerate(SOURCE_NAMES):
        if name == "context" and not use_context:
            continue
        source_top = top(one_hot_weights(s), 1.0)
        per_user[name] = per_user_ndcg(source_top, split.test, users)[0]
        rows.append(
            {
                "name": name,
                "kind": "source",
                "metrics": list_metrics(source_top, split.test, users, vectors),
            }
        )
    log_fn(f"hybrid: {hybrid_metrics[options.ndcg]:.4f} NDCG@{k}")
    more_rows, more_per_user, chosen = baseline_rows(
        dataset, val_split, split, vectors, options, log_fn, clock, sasrec, sasrec_seconds
    )
    rows += more_rows
    hybrid_intervals(
        rows, per_user | more_per_user, per_user_ndcg(headline, split.test, users)[0], options.seed
    )

    result = {
        "data": dataset.name,
        "protocol": options.protocol,
        "k": k,
        "rows": rows,
        "users": int(len(users)),
        "items": int(n_items),
        "fusion": fusion,
        "mmr_lambda": cfg.diversity.mmr_lambda,
        "tie_break": options.tie_break,
    }
    if options.protocol == "p1" and options.random_tie_seeds:
        result["random_ties"] = [
            random_tie_pass(dataset, cfg, weights, headline_lambda, chosen, seed, options, log_fn)
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
        # Cold users are served with the configured weights (tuned ones fit warm users) and
        # the cold-start genre strength chosen on validation.
        cold_cfg, cold_weights = configured_cfg, np.asarray(fusion_matrix(configured_cfg))
        if options.tune_fusion and options.cold_genre_strengths:
            log_fn("choosing the cold-start genre strength on the validation split ...")
            strength, trials = tune_cold_start(
                dataset, val_split, cold_cfg, cold_weights, options, use_context
            )
            cold_cfg = cold_cfg.with_overrides({"cold_start": {"genre_strength": strength}})
            result["cold_start_tuning"] = {
                "genre_strength": strength,
                f"validation_{options.ndcg}": trials,
                "points": list(options.cold_tune_points),
            }
            log_fn(
                f"cold-start genre strength {strength:g} (validation NDCG@{k} "
                + ", ".join(f"{name}: {v:.4f}" for name, v in trials.items())
                + ")"
            )
        result["cold_start"] = cold_start_curve(
            dataset, split, cold_cfg, cold_weights, options, use_context, log_fn
        )
    result["seconds"] = clock() - started
    return result
