"""What `sona eval` chooses on the validation split for the hybrid: the graph walk (by the
graph source alone), the fixed fusion weights (`weight_search`), the headline MMR λ and,
optionally, a learned fusion used only when validation tells it apart."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from sona_jax.config import SonaConfig
from sona_jax.data.schema import Dataset
from sona_jax.eval.engines import TrainedEngines, context_arrays
from sona_jax.eval.learned_fusion import learn_on_validation
from sona_jax.eval.metrics import ranking_metrics
from sona_jax.eval.ranking import rank
from sona_jax.eval.splits import Split, subset
from sona_jax.eval.weight_search import one_hot_weights, search_weights
from sona_jax.serve.engine import ServingEngine
from sona_jax.serve.fusion import SOURCE_NAMES, fusion_matrix, fusion_weights

if TYPE_CHECKING:
    from sona_jax.eval.options import EvalOptions, LogFn


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
