"""SPEC 4.1: fitting the shared base tier (item embeddings, W, b, A) from events.

* Item embeddings for items without one: a truncated SVD of the degree-normalised user x item
  engagement matrix, concatenated with (weighted) genre and mood features so items nobody has
  watched still get a meaningful vector, then mapped into d dimensions — by least squares onto
  the supplied embeddings when some items have them, else by a fixed random orthonormal map —
  and L2-normalised.
* ``A`` (r x d): the top-r right singular vectors of the centred embeddings (the most informative
  directions of E).
* ``W = s·I`` and ``b``: a temperature and an offset calibrated by logistic regression on
  (preference, item) pairs — watched items against uniformly sampled ones.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.sparse as sp
from scipy.sparse.linalg import svds

from sona_jax.config import BaseTierConfig


def engagement_matrix(
    user: np.ndarray, item: np.ndarray, weight: np.ndarray, n_users: int, n_items: int
) -> sp.csr_matrix:
    """(users, items) sparse sum of event weights (duplicates add up)."""
    return sp.csr_matrix((weight.astype(np.float32), (user, item)), shape=(n_users, n_items))


def _normalised_svd_item_factors(matrix: sp.csr_matrix, k: int, seed: int) -> np.ndarray:
    """(items, k') item factors from the SVD of D_u^-1/2 X D_i^-1/2, scaled by sqrt(σ)."""
    user_degree = np.asarray(matrix.sum(axis=1)).ravel()
    item_degree = np.asarray(matrix.sum(axis=0)).ravel()
    left = sp.diags(1.0 / np.sqrt(np.maximum(user_degree, 1e-9)))
    right = sp.diags(1.0 / np.sqrt(np.maximum(item_degree, 1e-9)))
    normalised = (left @ matrix @ right).astype(np.float64)
    k = int(min(k, min(normalised.shape) - 1))
    if k < 1 or normalised.nnz == 0:
        return np.zeros((matrix.shape[1], 0), np.float32)
    v0 = np.random.default_rng(seed).standard_normal(min(normalised.shape))
    _, sigma, vt = svds(normalised, k=k, v0=v0)
    return (vt.T * np.sqrt(sigma)).astype(np.float32)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(norm > 0, x / np.where(norm > 0, norm, 1.0), 0.0).astype(np.float32)


def item_features(
    matrix: sp.csr_matrix,
    genres: np.ndarray,
    moods: np.ndarray | None,
    cfg: BaseTierConfig,
    seed: int,
) -> np.ndarray:
    """(items, f) collaborative factors and content features, each block unit-normalised."""
    collaborative = _unit_rows(_normalised_svd_item_factors(matrix, cfg.item_factors, seed))
    content = genres if moods is None or moods.size == 0 else np.concatenate([genres, moods], 1)
    content = _unit_rows(np.asarray(content, np.float32))
    collaborative_share = np.sqrt(max(1.0 - cfg.genre_weight, 0.0))
    return np.concatenate(
        [collaborative_share * collaborative, np.sqrt(cfg.genre_weight) * content], axis=1
    )


def fit_item_embeddings(
    features: np.ndarray,
    dim: int,
    seed: int,
    given: np.ndarray | None = None,
    has_given: np.ndarray | None = None,
) -> np.ndarray:
    """(items, d) unit embeddings: supplied rows kept, the rest mapped from ``features``."""
    rng = np.random.default_rng(seed)
    if given is not None and has_given is not None and has_given.sum() >= features.shape[1]:
        # Ridge regression from features onto the supplied embedding space.
        x, y = features[has_given], given[has_given]
        gram = x.T @ x + 1e-3 * np.eye(x.shape[1], dtype=np.float32)
        mapped = features @ np.linalg.solve(gram, x.T @ y)
        out = np.where(has_given[:, None], given, mapped)
        return _unit_rows(out)
    if features.shape[1] >= dim:
        _, _, vt = np.linalg.svd(features - features.mean(0), full_matrices=False)
        mapped = features @ vt[:dim].T
    else:
        orthonormal, _ = np.linalg.qr(rng.standard_normal((dim, features.shape[1])))
        mapped = features @ orthonormal.T.astype(np.float32)
    if given is not None and has_given is not None:
        mapped = np.where(has_given[:, None], given, mapped)
    return _unit_rows(mapped)


def principal_factor(item_embeddings: np.ndarray, rank: int) -> np.ndarray:
    """(r, d) orthonormal rows: the top-r right singular vectors of centred E."""
    centred = item_embeddings - item_embeddings.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    factor = vt[:rank]
    if factor.shape[0] < rank:  # tiny catalogues: complete with orthonormal filler
        filler = np.linalg.qr(
            np.random.default_rng(0).standard_normal((item_embeddings.shape[1], rank))
        )[0].T
        factor = np.concatenate([factor, filler[factor.shape[0] :]], axis=0)
    return factor.astype(np.float32)


def calibrate_projection(
    preferences: jnp.ndarray,
    item_embeddings: jnp.ndarray,
    pos_user: np.ndarray,
    pos_item: np.ndarray,
    cfg: BaseTierConfig,
    seed: int,
) -> tuple[float, float]:
    """Fit ``(s, b)`` of ``σ(s·pᵀe + b)`` on watched pairs vs as many uniform random items."""
    rng = np.random.default_rng(seed)
    neg_item = rng.integers(0, item_embeddings.shape[0], len(pos_item))
    users = jnp.asarray(np.concatenate([pos_user, pos_user]))
    items = jnp.asarray(np.concatenate([pos_item, neg_item]))
    cosine = jnp.einsum("nd,nd->n", preferences[users], item_embeddings[items])
    labels = jnp.concatenate([jnp.ones(len(pos_item)), jnp.zeros(len(pos_item))])
    optimizer = optax.adam(cfg.calibration_learning_rate)

    def loss(params):
        return optax.sigmoid_binary_cross_entropy(params[0] * cosine + params[1], labels).mean()

    @jax.jit
    def fit(params):
        def step(carry, _):
            params, state = carry
            updates, state = optimizer.update(jax.grad(loss)(params), state)
            return (optax.apply_updates(params, updates), state), None

        (params, _), _ = jax.lax.scan(
            step, (params, optimizer.init(params)), None, length=cfg.calibration_steps
        )
        return params

    scale, bias = np.asarray(fit(jnp.array([1.0, 0.0])))
    return float(scale), float(bias)
