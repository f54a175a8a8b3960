"""Cold start under either protocol: test users cut to their first n train events, against
popularity on the same cut data, with paired bootstrap intervals of the difference."""

from __future__ import annotations

import numpy as np

from sona_jax.config import SonaConfig
from sona_jax.data.schema import Dataset
from sona_jax.eval import baselines
from sona_jax.eval.metrics import paired_bootstrap, per_user_ndcg, ranking_metrics, top_from_scores
from sona_jax.eval.ranking import rank
from sona_jax.eval.splits import Split, first_events_mask, subset
from sona_jax.model.train import train_model
from sona_jax.serve.engine import ServingEngine


def _cold_groups(users: np.ndarray, options) -> list[np.ndarray]:
    """Users dealt at random into groups of at most ``options.cold_start_users`` (at least two,
    so that someone keeps a full history while a group is cut)."""
    users = np.random.default_rng(options.seed).permutation(users)
    n_groups = max(2, int(np.ceil(len(users) / options.cold_start_users)))
    return [np.sort(group) for group in np.array_split(users, n_groups)]


def cold_lists(
    dataset: Dataset,
    split: Split,
    groups: list[np.ndarray],
    n_events: int,
    configs: dict,
    weights: np.ndarray,
    use_context: bool,
    k: int,
) -> tuple[np.ndarray, dict]:
    """Top-k lists of users cut to their first ``n_events`` train events.

    Each group in turn is cut while everyone else keeps their full history; one model is
    trained per group (with the first of ``configs``) and ranked under every config of
    ``configs`` (serving-time settings only), plus popularity under key ``"popularity"``.
    Returns the users in list order and {name: (users, k) item indices}.
    """
    log = dataset.events
    lists: dict = {name: [] for name in (*configs, "popularity")}
    train_cfg = next(iter(configs.values()))
    for group in groups:
        keep = first_events_mask(log, split.train, group, n_events, dataset.n_users)
        engine = ServingEngine.load(train_model(subset(dataset, keep), train_cfg))
        tod, device = (
            (split.test_time_of_day[group], split.test_device[group])
            if use_context
            else (None, None)
        )
        for name, cfg in configs.items():
            lists[name].append(rank(engine.with_config(cfg), group, weights, 1.0, tod, device, k))
        train_matrix = baselines.interaction_matrix(
            log.user[keep], log.item[keep], dataset.n_users, dataset.n_items
        )
        lists["popularity"].append(
            top_from_scores(
                baselines.Popularity().fit(train_matrix).scores(group), train_matrix, group, k
            )
        )
    return np.concatenate(groups), {name: np.concatenate(tops) for name, tops in lists.items()}


def _without_exploration(cfg: SonaConfig) -> SonaConfig:
    return cfg.with_overrides({"cold_start": {"exploration_start": 0.0, "exploration_floor": 0.0}})


def tune_cold_start(
    dataset: Dataset,
    val_split: Split,
    cfg: SonaConfig,
    weights: np.ndarray,
    options,
    use_context: bool,
) -> tuple[float, dict[str, float]]:
    """Cold start's genre strength chosen on the validation split.

    How far a handful of events should tilt popularity toward the genres they show depends on
    the catalogue (strong on the synthetic data, where tastes are planted by genre; weak on
    MovieLens), so like EASE's λ it is picked on validation: one group of validation users cut
    to each of ``options.cold_tune_points`` events, NDCG@10 of the ranked lists (without the
    exploration slots) pooled over the points. Returns the best strength and every trial.
    """
    groups = _cold_groups(val_split.users, options)[:1]
    configs = {
        float(strength): _without_exploration(
            cfg.with_overrides({"cold_start": {"genre_strength": strength}})
        )
        for strength in options.cold_genre_strengths
    }
    totals = dict.fromkeys(configs, 0.0)
    for n_events in options.cold_tune_points:
        users, lists = cold_lists(
            dataset, val_split, groups, n_events, configs, weights, use_context, options.k
        )
        for name in configs:
            totals[name] += ranking_metrics(lists[name], val_split.test, users)[options.ndcg]
    trials = {name: total / len(options.cold_tune_points) for name, total in totals.items()}
    best = max(trials, key=lambda name: trials[name])
    return best, {f"{strength:g}": ndcg for strength, ndcg in trials.items()}


def cold_start_curve(
    dataset: Dataset,
    split: Split,
    cfg: SonaConfig,
    weights: np.ndarray,
    options,
    use_context: bool,
    log_fn,
) -> list[dict]:
    """NDCG@10 of the hybrid and of popularity for test users cut to their first n events.

    The test users are dealt into groups of at most ``options.cold_start_users``; each group in
    turn is cut while everyone else keeps their full history, and the scores are pooled over
    all groups (one group alone is too few users to tell the curves apart). Each point carries
    95 % paired bootstrap intervals of (hybrid − popularity), as served and without the
    exploration slots.
    """
    groups = _cold_groups(split.users, options)
    # The same lists without the exploration slots: exploration trades offline accuracy for
    # learning by design, so the curve shows both what is served and what is ranked.
    configs = {"served": cfg, "ranked": _without_exploration(cfg)}
    curve = []
    for n_events in options.cold_start_points:
        users, lists = cold_lists(
            dataset, split, groups, n_events, configs, weights, use_context, options.k
        )
        ndcg = {name: per_user_ndcg(top, split.test, users)[0] for name, top in lists.items()}
        served_ci = paired_bootstrap(ndcg["served"], ndcg["popularity"], options.seed)
        ranked_ci = paired_bootstrap(ndcg["ranked"], ndcg["popularity"], options.seed)
        name = options.ndcg
        point = {
            "events": n_events,
            "users": int(len(users)),
            f"hybrid_{name}": float(ndcg["served"].mean()),
            f"hybrid_no_exploration_{name}": float(ndcg["ranked"].mean()),
            f"popularity_{name}": float(ndcg["popularity"].mean()),
            "served_minus_popularity_95ci": list(served_ci),
            "no_exploration_minus_popularity_95ci": list(ranked_ci),
        }
        curve.append(point)
        log_fn(
            f"cold start, first {n_events} events: hybrid {point[f'hybrid_{name}']:.4f} "
            f"({point[f'hybrid_no_exploration_{name}']:.4f} without exploration) "
            f"vs popularity {point[f'popularity_{name}']:.4f} (95 % paired bootstrap of "
            f"the difference: served [{served_ci[0]:+.4f}, {served_ci[1]:+.4f}], without "
            f"exploration [{ranked_ci[0]:+.4f}, {ranked_ci[1]:+.4f}])"
        )
    return curve
