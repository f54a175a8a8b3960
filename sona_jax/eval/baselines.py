"""SPEC 7 baselines, all with one call shape: ``fit(train) -> scores(users) (users, items)``.

* popularity: how many train users engaged with each item;
* EASE (Steck 2019): closed form ``B = I − P·diag(1/diag(P))``, ``P = (XᵀX + λI)⁻¹``;
* implicit-ALS from the `implicit` library;
* RP3beta (Paudel et al. 2016, as reproduced by Dacrema et al. 2019): a 3-step random walk
  user -> item -> user -> item with transition probabilities raised to ``alpha``, each
  target item's column divided by its popularity to the power ``beta``, each row kept to its
  ``neighbours`` strongest items and normalised;
* SASRec (`sona_jax.eval.sasrec`).

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


class RP3beta:
    name = "rp3beta"

    def __init__(self, alpha: float = 1.0, beta: float = 0.5, neighbours: int = 200):
        self.alpha, self.beta, self.neighbours = alpha, beta, neighbours

    def settings(self) -> dict:
        return {"alpha": self.alpha, "beta": self.beta, "neighbours": self.neighbours}

    def fit(self, train: sp.csr_matrix) -> RP3beta:
        user_to_item = _row_stochastic(train).power(self.alpha)
        item_to_user = _row_stochastic(train.T.tocsr()).power(self.alpha)
        walk = np.asarray((item_to_user @ user_to_item).todense(), np.float32)  # (items, items)
        popularity = np.asarray(train.sum(axis=0), np.float32).ravel()
        walk /= np.where(popularity > 0, popularity, 1.0) ** self.beta
        np.fill_diagonal(walk, 0.0)
        if self.neighbours < walk.shape[1]:
            weakest = np.argpartition(-walk, self.neighbours, axis=1)[:, self.neighbours :]
            np.put_along_axis(walk, weakest, 0.0, axis=1)
        totals = walk.sum(axis=1, keepdims=True)
        self.weights = walk / np.where(totals > 0, totals, 1.0)
        self.train = train
        return self

    def scores(self, users: np.ndarray) -> np.ndarray:
        return np.asarray(self.train[users] @ self.weights)


def _row_stochastic(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """Each row divided by its sum (empty rows stay empty)."""
    totals = np.asarray(matrix.sum(axis=1), np.float32).ravel()
    return sp.diags(1.0 / np.where(totals > 0, totals, 1.0)) @ matrix
