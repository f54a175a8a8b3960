"""SPEC 7: offline protocols, metrics, and the side-by-side table of `sona eval`.

* P1 next-watch: each user's chronologically last interaction is the test item; HR@10, NDCG@10.
* P2 random split: a seeded random 25 % of each user's interactions; Precision@10, NDCG@10.
* Items seen in train are never ranked; every rating counts as a positive.
* Validation splits are carved from train with the same protocol; EASE's λ, ALS's settings and
  (optionally) the fusion weights and cold start's genre strength are chosen there, never on
  test.
* Cold start, under either protocol: test users cut to their first n train events, against
  popularity on the same cut data, with paired bootstrap intervals of the difference.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import jax
import numpy as np
import scipy.sparse as sp

from sona_jax import baselines
from sona_jax.config import SonaConfig
from sona_jax.datasets.schema import Dataset, EventLog
from sona_jax.model import TrainedModel
from sona_jax.pipeline import train_model
from sona_jax.recommend import SOURCE_NAMES, fusion_weights, recommend
from sona_jax.serving_state import model_user_rows, plain_requests, serving_state

K = 10
EVAL_BATCH = 128


@dataclass(frozen=True)
class Split:
    """train: mask over the log's events; test: (users, items) binary matrix;
    test_time_of_day / test_device: (users,) context of each user's (last) test event, -1 none."""

    train: np.ndarray
    test: sp.csr_matrix
    test_time_of_day: np.ndarray
    test_device: np.ndarray

    @property
    def users(self) -> np.ndarray:
        """Users with at least one test item."""
        return np.flatnonzero(np.diff(self.test.indptr) > 0)


def _test_matrix(log: EventLog, test: np.ndarray, n_users: int, n_items: int):
    matrix = baselines.interaction_matrix(log.user[test], log.item[test], n_users, n_items)
    tod = np.full(n_users, -1, np.int32)
    device = np.full(n_users, -1, np.int32)
    order = np.argsort(log.timestamp[test], kind="stable")  # the latest test event wins
    tod[log.user[test][order]] = log.time_of_day[test][order]
    device[log.user[test][order]] = log.device[test][order]
    return matrix, tod, device


def split_next_watch(log: EventLog, mask: np.ndarray, n_users: int, n_items: int) -> Split:
    """P1 over the events in ``mask``: each user's last event (users with >= 2 events)."""
    index = np.flatnonzero(mask)
    order = index[np.lexsort((log.timestamp[index], log.user[index]))]
    last = np.ones(len(order), bool)
    last[:-1] = log.user[order][1:] != log.user[order][:-1]
    counts = np.bincount(log.user[order], minlength=n_users)
    last &= counts[log.user[order]] >= 2
    test = np.zeros(len(log), bool)
    test[order[last]] = True
    # Drop other events of the same (user, item) as the test event from train: it must be unseen.
    test_pairs = set(zip(log.user[test].tolist(), log.item[test].tolist(), strict=True))
    same = np.array(
        [
            (u, i) in test_pairs
            for u, i in zip(log.user[index].tolist(), log.item[index].tolist(), strict=True)
        ]
    )
    train = mask.copy()
    train[index[same]] = False
    return Split(train, *_test_matrix(log, test, n_users, n_items))


def split_random(
    log: EventLog, mask: np.ndarray, n_users: int, n_items: int, seed: int, fraction: float = 0.25
) -> Split:
    """P2 over the events in ``mask``: a seeded random ``fraction`` of each user's (user, item)s."""
    index = np.flatnonzero(mask)
    pairs, first = np.unique(
        log.user[index].astype(np.int64) * n_items + log.item[index], return_inverse=True
    )
    pair_user = pairs // n_items
    rng = np.random.default_rng(seed)
    noise = rng.random(len(pairs))
    order = np.lexsort((noise, pair_user))
    counts = np.bincount(pair_user, minlength=n_users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(pairs), np.int64)
    rank[order] = np.arange(len(pairs)) - starts[pair_user[order]]
    n_test = np.floor(counts * fraction).astype(np.int64)
    test_pair = rank < n_test[pair_user]
    test = np.zeros(len(log), bool)
    test[index[test_pair[first]]] = True
    train = mask & ~test
    return Split(train, *_test_matrix(log, test, n_users, n_items))


def make_split(
    protocol: str, log: EventLog, mask: np.ndarray, n_users: int, n_items: int, seed: int
) -> Split:
    if protocol == "p1":
        return split_next_watch(log, mask, n_users, n_items)
    if protocol == "p2":
        return split_random(log, mask, n_users, n_items, seed)
    raise ValueError(f"unknown protocol {protocol!r}; use p1 or p2")


def subset(dataset: Dataset, mask: np.ndarray) -> Dataset:
    """The dataset with only the events in ``mask`` (same users and catalogue)."""
    return Dataset(
        dataset.name, dataset.catalogue, dataset.user_ids, dataset.events.take(mask), dataset.extras
    )


# ---- metrics -------------------------------------------------------------------------------


def ranking_metrics(top: np.ndarray, test: sp.csr_matrix, users: np.ndarray) -> dict[str, float]:
    """HR@k, NDCG@k (binary), Precision@k of ``top`` (len(users), k) against ``test`` rows."""
    ndcg, relevant = per_user_ndcg(top, test, users)
    k = top.shape[1]
    return {
        "hr@10": float(relevant.any(1).mean()),
        "ndcg@10": float(ndcg.mean()),
        "precision@10": float(relevant.sum(1).mean() / k),
    }


def per_user_ndcg(
    top: np.ndarray, test: sp.csr_matrix, users: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(len(users),) NDCG@k of each user's list and the (len(users), k) hit matrix."""
    k = top.shape[1]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    relevant = np.zeros(top.shape, bool)
    for row, user in enumerate(users):
        positives = test.indices[test.indptr[user] : test.indptr[user + 1]]
        relevant[row] = np.isin(top[row], positives)
    n_positive = np.minimum(np.diff(test.indptr)[users], k)
    ideal = np.cumsum(discounts)[np.maximum(n_positive - 1, 0)]
    return (relevant * discounts).sum(1) / ideal, relevant


def paired_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    seed: int,
    draws: int = 2000,
) -> tuple[float, float]:
    """95 % interval of mean(a - b) over users resampled with replacement (paired)."""
    rng = np.random.default_rng(seed)
    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    means = diff[rng.integers(0, len(diff), (draws, len(diff)))].mean(1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def coverage(top: np.ndarray, n_items: int) -> float:
    """Share of the catalogue that appears in anyone's top list."""
    return float(len(np.unique(top[top >= 0])) / n_items)


def intra_list_diversity(top: np.ndarray, item_vectors: np.ndarray) -> float:
    """Mean pairwise cosine distance within each top list (item_vectors: (items, d))."""
    unit = item_vectors / np.maximum(np.linalg.norm(item_vectors, axis=1, keepdims=True), 1e-12)
    vectors = unit[np.maximum(top, 0)]  # (users, k, d)
    similarity = np.einsum("ukd,uld->ukl", vectors, vectors)
    k = top.shape[1]
    off_diagonal = (similarity.sum((1, 2)) - np.trace(similarity, axis1=1, axis2=2)) / (k * (k - 1))
    return float(np.mean(1.0 - off_diagonal))


def list_metrics(top, test, users, item_vectors, suffix: str = "") -> dict[str, float]:
    metrics = ranking_metrics(top, test, users)
    metrics |= {
        "coverage": coverage(top, item_vectors.shape[0]),
        "ild@10": intra_list_diversity(top, item_vectors),
    }
    return {f"{name}{suffix}": value for name, value in metrics.items()}


def top_from_scores(
    scores: np.ndarray, seen: sp.csr_matrix, users: np.ndarray, k: int = K
) -> np.ndarray:
    """(len(users), k) best items of dense ``scores`` (len(users), items), seen items removed."""
    scores = np.array(scores, np.float32, copy=True)
    seen_rows = seen[users]
    rows = np.repeat(np.arange(len(users)), np.diff(seen_rows.indptr))
    scores[rows, seen_rows.indices] = -np.inf
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, 1), axis=1)
    return np.take_along_axis(top, order, 1)


# ---- SONA's hybrid as a ranker ---------------------------------------------------------------


class HybridRanker:
    """Batched top-k lists from a trained model, in chunks of EVAL_BATCH users."""

    def __init__(self, model: TrainedModel, cfg: SonaConfig | None = None):
        self.model = model
        self.state = serving_state(model)
        self.cfg = cfg or model.config

    def with_config(self, cfg: SonaConfig) -> HybridRanker:
        """The same model and state scored under serving-time settings of ``cfg``."""
        other = object.__new__(HybridRanker)
        other.model, other.state, other.cfg = self.model, self.state, cfg
        return other

    def top(
        self,
        users: np.ndarray,
        weights,
        mmr_lambda: float = 1.0,
        time_of_day: np.ndarray | None = None,
        device: np.ndarray | None = None,
        k: int = K,
    ) -> np.ndarray:
        out = np.empty((len(users), k), np.int32)
        weights = np.asarray(weights, np.float32)
        for start in range(0, len(users), EVAL_BATCH):
            rows = users[start : start + EVAL_BATCH]
            n = len(rows)
            padded = np.concatenate([rows, np.full(EVAL_BATCH - n, rows[0])])
            batch = model_user_rows(self.model, padded)
            request = plain_requests(
                EVAL_BATCH,
                mmr_lambda,
                time_of_day=None
                if time_of_day is None
                else np.concatenate([time_of_day[start : start + n], np.full(EVAL_BATCH - n, -1)]),
                device=None
                if device is None
                else np.concatenate([device[start : start + n], np.full(EVAL_BATCH - n, -1)]),
            )
            result = recommend(
                self.state, batch, request, np.full(EVAL_BATCH, k, np.int32), weights, self.cfg, k
            )
            out[start : start + n] = np.asarray(result.items)[:n]
        return out


def one_hot_weights(source: int) -> np.ndarray:
    weights = np.zeros(len(SOURCE_NAMES), np.float32)
    weights[source] = 1.0
    return weights


def candidate_weights(cfg: SonaConfig, n_random: int, seed: int) -> list[np.ndarray]:
    """Configured weights, each source alone, and seeded random points of the simplex."""
    rng = np.random.default_rng(seed)
    found = [np.asarray(fusion_weights(cfg))]
    found += [one_hot_weights(s) for s in range(len(SOURCE_NAMES))]
    found += [rng.dirichlet(np.ones(len(SOURCE_NAMES))).astype(np.float32) for _ in range(n_random)]
    return found


# ---- the table ---------------------------------------------------------------------------------


@dataclass
class EvalOptions:
    protocol: str = "p1"
    seed: int = 0
    tune_fusion: bool = True
    fusion_trials: int = 12
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
    # MMR λ tried on validation for the headline row (with the best weights and seeds)
    mmr_lambdas: tuple[float, ...] = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)
    # then this many points drawn close to the best weights (Dirichlet around them)
    refine_trials: int = 12
    refine_concentration: float = 40.0
    cold_start_users: int = 500
    cold_start_points: tuple[int, ...] = (0, 1, 3, 5, 10)
    # cold start's genre strength tried on validation (empty: keep the configured one), with
    # validation users cut to these numbers of events
    cold_genre_strengths: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0)
    cold_tune_points: tuple[int, ...] = (1, 3, 5)
    ease_l2_grid: tuple[float, ...] = (50.0, 100.0, 200.0, 500.0, 1000.0)
    als_grid: tuple[tuple[int, float], ...] = ((32, 0.05), (64, 0.05), (128, 0.1))


def _context_arrays(split: Split, users: np.ndarray):
    return split.test_time_of_day[users], split.test_device[users]


def _baseline_rows(train_matrix, val_train, val_split, split, users, vectors, options, log_fn):
    rows = []
    val_users = val_split.users

    def val_ndcg(model):
        model.fit(val_train)
        top = top_from_scores(model.scores(val_users), val_train, val_users)
        return ranking_metrics(top, val_split.test, val_users)["ndcg@10"]

    candidates = [
        ("popularity", [baselines.Popularity()]),
        ("ease", [baselines.EASE(l2) for l2 in options.ease_l2_grid]),
        (
            "implicit-als",
            [baselines.ImplicitALS(f, r, seed=options.seed) for f, r in options.als_grid],
        ),
    ]
    for name, models in candidates:
        clock = time.perf_counter()
        scores = [val_ndcg(model) for model in models] if len(models) > 1 else [0.0]
        best = models[int(np.argmax(scores))]
        best.fit(train_matrix)
        top = top_from_scores(best.scores(users), train_matrix, users)
        chosen = {
            k: v
            for k, v in getattr(best, "options", {"l2": getattr(best, "l2", None)}).items()
            if v is not None
        }
        rows.append(
            {
                "name": name,
                "kind": "baseline",
                "metrics": list_metrics(top, split.test, users, vectors),
                "chosen_on_validation": chosen,
                "seconds": time.perf_counter() - clock,
            }
        )
        log_fn(f"{name}: {rows[-1]['metrics']['ndcg@10']:.4f} NDCG@10")
    return rows


def evaluate(
    dataset: Dataset,
    cfg: SonaConfig,
    options: EvalOptions,
    log_fn: Callable[[str], None] = lambda message: None,
) -> dict:
    """Run one protocol end to end and return the `sona eval` JSON document."""
    clock = time.perf_counter()
    log, n_users, n_items = dataset.events, dataset.n_users, dataset.n_items
    everything = np.ones(len(log), bool)
    split = make_split(options.protocol, log, everything, n_users, n_items, options.seed)
    val_split = make_split(options.protocol, log, split.train, n_users, n_items, options.seed + 1)
    users = split.users
    train_matrix = baselines.interaction_matrix(
        log.user[split.train], log.item[split.train], n_users, n_items
    )
    val_train = baselines.interaction_matrix(
        log.user[val_split.train], log.item[val_split.train], n_users, n_items
    )
    use_context = options.protocol == "p1"

    # Fusion weights: configured, or the best on the validation split.
    configured_cfg = cfg
    weights = np.asarray(fusion_weights(cfg))
    headline_lambda = 1.0
    fusion = {"configured": weights.tolist()}
    if options.tune_fusion:
        log_fn("training on the validation split to tune fusion weights ...")
        # Keep the dense graph matrix (where the catalogue allows) so the dense-walk settings
        # can be tried; each trial's own config says which walk it uses.
        val_model = train_model(
            subset(dataset, val_split.train), cfg.with_overrides({"graph": {"first_hop": "dense"}})
        )
        ranker = HybridRanker(val_model)
        val_users = val_split.users
        tod, device = _context_arrays(val_split, val_users) if use_context else (None, None)
        trials = []
        for setting in ((), *options.graph_settings):
            trial_cfg = cfg.with_overrides({"graph": dict(setting)})
            trial_ranker = ranker.with_config(trial_cfg)
            for candidate in candidate_weights(cfg, options.fusion_trials, options.seed):
                top = trial_ranker.top(val_users, candidate, 1.0, tod, device)
                trials.append(
                    (
                        ranking_metrics(top, val_split.test, val_users)["ndcg@10"],
                        candidate,
                        trial_cfg,
                    )
                )
        best_ndcg, weights, cfg = max(trials, key=lambda trial: trial[0])
        rng = np.random.default_rng(options.seed + 2)
        best_ranker = ranker.with_config(cfg)
        for _ in range(options.refine_trials):
            candidate = rng.dirichlet(1.0 + options.refine_concentration * weights).astype(
                np.float32
            )
            top = best_ranker.top(val_users, candidate, 1.0, tod, device)
            trials.append(
                (ranking_metrics(top, val_split.test, val_users)["ndcg@10"], candidate, cfg)
            )
        best_ndcg, weights, cfg = max(trials, key=lambda trial: trial[0])
        lambdas = []
        for lam in options.mmr_lambdas:
            top = ranker.with_config(cfg).top(val_users, weights, lam, tod, device)
            lambdas.append((ranking_metrics(top, val_split.test, val_users)["ndcg@10"], lam))
        best_ndcg, headline_lambda = max(lambdas, key=lambda trial: trial[0])
        fusion |= {
            "tuned": weights.tolist(),
            "validation_ndcg@10": best_ndcg,
            "tuned_mmr_lambda": headline_lambda,
            "validation_configured_ndcg@10": trials[0][0],
            "trials": len(trials),
            "tuned_seed_position_decay": cfg.graph.seed_position_decay,
            "tuned_recent_items": cfg.graph.recent_items,
            "tuned_graph": {
                key: getattr(cfg.graph, key)
                for key in (
                    "seed_position_decay",
                    "recent_items",
                    "seed_weighting",
                    "hops",
                    "first_hop",
                )
            },
        }
        log_fn(
            f"fusion weights {np.round(weights, 3).tolist()}, graph seeds "
            f"{cfg.graph.recent_items} x{cfg.graph.seed_position_decay}/position "
            f"({cfg.graph.seed_weighting}, {cfg.graph.hops} hops, {cfg.graph.first_hop} "
            f"first hop), "
            f"MMR λ {headline_lambda} "
            f"(validation NDCG@10 {best_ndcg:.4f} vs "
            f"configured {trials[0][0]:.4f})"
        )

    log_fn("training on the train split ...")
    model = train_model(subset(dataset, split.train), cfg)
    vectors = np.asarray(model.base.item_embeddings)
    ranker = HybridRanker(model, cfg)
    tod, device = _context_arrays(split, users) if use_context else (None, None)
    plain = ranker.top(users, weights, 1.0, tod, device)
    diverse = ranker.top(users, weights, cfg.diversity.mmr_lambda, tod, device)
    headline = (
        plain
        if headline_lambda == 1.0
        else ranker.top(users, weights, headline_lambda, tod, device)
    )
    # The headline row ranks with the λ chosen on validation; _plain (λ = 1, no MMR) against
    # _mmr (the configured λ) is the MMR trade-off.
    hybrid_metrics = list_metrics(headline, split.test, users, vectors)
    hybrid_metrics |= list_metrics(plain, split.test, users, vectors, suffix="_plain")
    hybrid_metrics |= list_metrics(diverse, split.test, users, vectors, suffix="_mmr")
    rows = [
        {
            "name": "sona-hybrid",
            "kind": "hybrid",
            "metrics": hybrid_metrics,
            "weights": dict(zip(SOURCE_NAMES, map(float, weights), strict=True)),
            "mmr_lambda": headline_lambda,
        }
    ]
    if options.tune_fusion:
        configured = ranker.with_config(configured_cfg).top(
            users, np.asarray(fusion_weights(configured_cfg)), 1.0, tod, device
        )
        fusion["test_configured_metrics"] = list_metrics(configured, split.test, users, vectors)
    for s, name in enumerate(SOURCE_NAMES):
        if name == "context" and not use_context:
            continue
        top = ranker.top(users, one_hot_weights(s), 1.0, tod, device)
        rows.append(
            {
                "name": name,
                "kind": "source",
                "metrics": list_metrics(top, split.test, users, vectors),
            }
        )
    log_fn(f"hybrid: {hybrid_metrics['ndcg@10']:.4f} NDCG@10")
    rows += _baseline_rows(
        train_matrix, val_train, val_split, split, users, vectors, options, log_fn
    )

    result = {
        "data": dataset.name,
        "protocol": options.protocol,
        "rows": rows,
        "users": int(len(users)),
        "items": int(n_items),
        "fusion": fusion,
        "mmr_lambda": cfg.diversity.mmr_lambda,
    }
    if use_context:
        no_context = ranker.top(users, weights, 1.0)  # as `plain`, without the context
        result["context"] = {
            "ndcg@10_with_context": hybrid_metrics["ndcg@10_plain"],
            "ndcg@10_without_context": ranking_metrics(no_context, split.test, users)["ndcg@10"],
            "context_fields": "time_of_day and device of the test event (device where known)",
        }
    if options.cold_start_points:
        # Cold users are served with the configured weights (tuned ones fit warm users) and
        # the cold-start genre strength chosen on validation.
        cold_cfg, cold_weights = configured_cfg, np.asarray(fusion_weights(configured_cfg))
        if options.tune_fusion and options.cold_genre_strengths:
            log_fn("choosing the cold-start genre strength on the validation split ...")
            strength, trials = tune_cold_start(
                dataset, val_split, cold_cfg, cold_weights, options, use_context
            )
            cold_cfg = cold_cfg.with_overrides({"cold_start": {"genre_strength": strength}})
            result["cold_start_tuning"] = {
                "genre_strength": strength,
                "validation_ndcg@10": trials,
                "points": list(options.cold_tune_points),
            }
            log_fn(
                f"cold-start genre strength {strength:g} (validation NDCG@10 "
                + ", ".join(f"{name}: {v:.4f}" for name, v in trials.items())
                + ")"
            )
        result["cold_start"] = cold_start_curve(
            dataset, split, cold_cfg, cold_weights, options, use_context, log_fn
        )
    result["seconds"] = time.perf_counter() - clock
    return result


def first_events_mask(
    log: EventLog, mask: np.ndarray, users: np.ndarray, n_events: int, n_users: int
) -> np.ndarray:
    """``mask`` with ``users`` cut to their first ``n_events`` events (by time); others kept."""
    index = np.flatnonzero(mask)
    order = index[np.lexsort((log.timestamp[index], log.user[index]))]
    counts = np.bincount(log.user[order], minlength=n_users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.zeros(len(log), np.int64)
    rank[order] = np.arange(len(order)) - starts[log.user[order]]
    cut = np.zeros(n_users, bool)
    cut[users] = True
    return mask & (~cut[log.user] | (rank < n_events))


def _cold_groups(users: np.ndarray, options: EvalOptions) -> list[np.ndarray]:
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
) -> tuple[np.ndarray, dict]:
    """Top-10 lists of users cut to their first ``n_events`` train events.

    Each group in turn is cut while everyone else keeps their full history; one model is
    trained per group (with the first of ``configs``) and ranked under every config of
    ``configs`` (serving-time settings only), plus popularity under key ``"popularity"``.
    Returns the users in list order and {name: (users, 10) item indices}.
    """
    log = dataset.events
    lists: dict = {name: [] for name in (*configs, "popularity")}
    train_cfg = next(iter(configs.values()))
    for group in groups:
        keep = first_events_mask(log, split.train, group, n_events, dataset.n_users)
        ranker = HybridRanker(train_model(subset(dataset, keep), train_cfg))
        tod, device = _context_arrays(split, group) if use_context else (None, None)
        for name, cfg in configs.items():
            lists[name].append(ranker.with_config(cfg).top(group, weights, 1.0, tod, device))
        train_matrix = baselines.interaction_matrix(
            log.user[keep], log.item[keep], dataset.n_users, dataset.n_items
        )
        lists["popularity"].append(
            top_from_scores(
                baselines.Popularity().fit(train_matrix).scores(group), train_matrix, group
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
    options: EvalOptions,
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
            dataset, val_split, groups, n_events, configs, weights, use_context
        )
        for name in configs:
            totals[name] += ranking_metrics(lists[name], val_split.test, users)["ndcg@10"]
    trials = {name: total / len(options.cold_tune_points) for name, total in totals.items()}
    best = max(trials, key=lambda name: trials[name])
    return best, {f"{strength:g}": ndcg for strength, ndcg in trials.items()}


def cold_start_curve(
    dataset: Dataset,
    split: Split,
    cfg: SonaConfig,
    weights: np.ndarray,
    options: EvalOptions,
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
        users, lists = cold_lists(dataset, split, groups, n_events, configs, weights, use_context)
        ndcg = {name: per_user_ndcg(top, split.test, users)[0] for name, top in lists.items()}
        served_ci = paired_bootstrap(ndcg["served"], ndcg["popularity"], options.seed)
        ranked_ci = paired_bootstrap(ndcg["ranked"], ndcg["popularity"], options.seed)
        point = {
            "events": n_events,
            "users": int(len(users)),
            "hybrid_ndcg@10": float(ndcg["served"].mean()),
            "hybrid_no_exploration_ndcg@10": float(ndcg["ranked"].mean()),
            "popularity_ndcg@10": float(ndcg["popularity"].mean()),
            "served_minus_popularity_95ci": list(served_ci),
            "no_exploration_minus_popularity_95ci": list(ranked_ci),
        }
        curve.append(point)
        log_fn(
            f"cold start, first {n_events} events: hybrid {point['hybrid_ndcg@10']:.4f} "
            f"({point['hybrid_no_exploration_ndcg@10']:.4f} without exploration) "
            f"vs popularity {point['popularity_ndcg@10']:.4f} (95 % paired bootstrap of "
            f"the difference: served [{served_ci[0]:+.4f}, {served_ci[1]:+.4f}], without "
            f"exploration [{ranked_ci[0]:+.4f}, {ranked_ci[1]:+.4f}])"
        )
    return curve


def format_table(result: dict) -> str:
    """Markdown table of a `sona eval` result."""
    columns = (
        ["hr@10", "ndcg@10"] if result["protocol"] == "p1" else ["precision@10", "ndcg@10"]
    ) + ["coverage", "ild@10"]
    lines = [
        f"{result['data']} {result['protocol'].upper()} ({result['users']} users)",
        "",
        "| model | kind | " + " | ".join(columns) + " |",
        "| --- | --- |" + " --- |" * len(columns),
    ]
    for row in result["rows"]:
        values = " | ".join(f"{row['metrics'][c]:.4f}" for c in columns)
        name = row["name"] + (
            f" (λ={row['mmr_lambda']}, tuned on validation)"
            if row.get("mmr_lambda", 1.0) != 1.0
            else ""
        )
        lines.append(f"| {name} | {row['kind']} | {values} |")
        if row["kind"] == "hybrid":
            for suffix, label in (
                ("_plain", "without MMR (λ=1)"),
                ("_mmr", f"with MMR λ={result['mmr_lambda']}"),
            ):
                if row["metrics"].get("ndcg@10" + suffix) is None:
                    continue
                values = " | ".join(f"{row['metrics'][c + suffix]:.4f}" for c in columns)
                lines.append(f"| {row['name']} {label} | hybrid variant | {values} |")
    if "context" in result:
        c = result["context"]
        lines += [
            "",
            f"context (λ=1): NDCG@10 {c['ndcg@10_with_context']:.4f} with the test "
            f"event's context vs {c['ndcg@10_without_context']:.4f} without",
        ]
    if "cold_start" in result:
        tuning = result.get("cold_start_tuning")
        lines += [
            "",
            "cold start"
            + (
                f" (genre strength {tuning['genre_strength']:g}, chosen on validation)"
                if tuning
                else ""
            )
            + ":",
            "",
            "| first n events | hybrid NDCG@10 as served | served − popularity, 95 % CI | "
            "hybrid without exploration | without exploration − popularity, 95 % CI | "
            "popularity NDCG@10 |",
            "| --- | --- | --- | --- | --- | --- |",
        ]

        def interval(point: dict, key: str) -> str:
            return "[{:+.4f}, {:+.4f}]".format(*point[key]) if key in point else ""

        lines += [
            f"| {p['events']} | {p['hybrid_ndcg@10']:.4f} | "
            f"{interval(p, 'served_minus_popularity_95ci')} | "
            f"{p.get('hybrid_no_exploration_ndcg@10', float('nan')):.4f} | "
            f"{interval(p, 'no_exploration_minus_popularity_95ci')} | "
            f"{p['popularity_ndcg@10']:.4f} |"
            for p in result["cold_start"]
        ]
    return "\n".join(lines)


def block(x):
    return jax.block_until_ready(x)
