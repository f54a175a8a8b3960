"""SPEC 7 baselines, all with one call shape: ``fit(train) -> scores(users) (users, items)``.

* popularity: how many train users engaged with each item;
* EASE (Steck 2019): closed form ``B = I − P·diag(1/diag(P))``, ``P = (XᵀX + λI)⁻¹``;
* implicit-ALS from the `implicit` library.

Scores are dense float32; the caller masks seen items and takes the top k. ``settings()`` is
what validation chose. implicit advises ``OPENBLAS_NUM_THREADS=1``; the host programs set it
(`sona_lab.blas`), the engine never touches the environment.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from sona_jax.model.tables import item_regression


def interaction_matrix(
    user: np.ndarray, item: np.ndarray, n_users: int, n_items: int
) -> sp.csr_matrix:
    """(users, items) binary matrix of train interactions."""
    matrix = sp.csr_matrix((np.ones(len(user), np.float32), (user, item)), shape=(n_users, n_items))
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


class Popularity:
    name = "popularity"

    def fit(self, train: sp.csr_matrix) -> Popularity:
        self.counts = np.asarray(train.sum(axis=0)).ravel().astype(np.float32)
        return self

    def scores(self, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.counts, (len(users), len(self.counts))).copy()

    def settings(self) -> dict:
        return {}


class EASE:
    name = "ease"

    def __init__(self, l2: float = 500.0):
        self.l2 = l2

    def settings(self) -> dict:
        return {"l2": self.l2}

    def fit(self, train: sp.csr_matrix) -> EASE:
        weights = item_regression(train, self.l2)
        weights[np.diag_indices_from(weights)] = 0.0
        self.weights = weights.astype(np.float32)
        self.train = train
        return self

    def scores(self, users: np.ndarray) -> np.ndarray:
        return np.asarray(self.train[users] @ self.weights)


class ImplicitALS:
    name = "implicit-als"

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.05,
        iterations: int = 15,
        alpha: float = 1.0,
        seed: int = 0,
    ):
        self.options = dict(
            factors=factors,
            regularization=regularization,
            iterations=iterations,
            alpha=alpha,
            random_state=seed,
        )

    def settings(self) -> dict:
        return dict(self.options)

    def fit(self, train: sp.csr_matrix) -> ImplicitALS:
        from implicit.cpu.als import AlternatingLeastSquares

        self.model = AlternatingLeastSquares(**self.options)
        self.model.fit(train, show_progress=False)
        return self

    def scores(self, users: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.user_factors[users] @ self.model.item_factors.T)
