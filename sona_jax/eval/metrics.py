"""SPEC 7 metrics of top-k lists: HR@k, NDCG@k (binary), Precision@k, catalogue coverage,
intra-list diversity, and paired bootstrap intervals of per-user differences. Metric names
carry the list length k (``ndcg@10`` for lists of 10)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

BOOTSTRAP_DRAWS = 2000


def ranking_metrics(top: np.ndarray, test: sp.csr_matrix, users: np.ndarray) -> dict[str, float]:
    """HR@k, NDCG@k (binary), Precision@k of ``top`` (len(users), k) against ``test`` rows."""
    ndcg, relevant = per_user_ndcg(top, test, users)
    k = top.shape[1]
    return {
        f"hr@{k}": float(relevant.any(1).mean()),
        f"ndcg@{k}": float(ndcg.mean()),
        f"precision@{k}": float(relevant.sum(1).mean() / k),
    }


def per_user_ndcg(
    top: np.ndarray, test: sp.csr_matrix, users: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(len(users),) NDCG@k of each user's list and the (len(users), k) hit matrix."""
    k = top.shape[1]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    relevant = held_out_hits(top, test, users)
    n_positive = np.minimum(np.diff(test.indptr)[users], k)
    ideal = np.cumsum(discounts)[np.maximum(n_positive - 1, 0)]
    return (relevant * discounts).sum(1) / ideal, relevant


def held_out_hits(items: np.ndarray, test: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
    """(len(users), n) whether each of ``items`` (len(users), n; -1 none) is one of that
    user's ``test`` items."""
    hits = np.zeros(items.shape, bool)
    for row, user in enumerate(users):
        positives = test.indices[test.indptr[user] : test.indptr[user + 1]]
        hits[row] = np.isin(items[row], positives) & (items[row] >= 0)
    return hits


def paired_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    seed: int,
    draws: int = BOOTSTRAP_DRAWS,
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
        f"ild@{top.shape[1]}": intra_list_diversity(top, item_vectors),
    }
    return {f"{name}{suffix}": value for name, value in metrics.items()}


def top_from_scores(
    scores: np.ndarray, seen: sp.csr_matrix, users: np.ndarray, k: int
) -> np.ndarray:
    """(len(users), k) best items of dense ``scores`` (len(users), items), seen items removed."""
    scores = np.array(scores, np.float32, copy=True)
    seen_rows = seen[users]
    rows = np.repeat(np.arange(len(users)), np.diff(seen_rows.indptr))
    scores[rows, seen_rows.indices] = -np.inf
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, 1), axis=1)
    return np.take_along_axis(top, order, 1)
