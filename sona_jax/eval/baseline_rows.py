"""The baseline rows of `sona eval`: each baseline's setting chosen on the validation split,
refit on train and ranked over the whole catalogue, with per-viewer NDCG kept for the paired
intervals against the hybrid (`hybrid_intervals`)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from sona_jax.data.schema import Dataset
from sona_jax.eval import baselines
from sona_jax.eval.metrics import (
    list_metrics,
    paired_bootstrap,
    per_user_ndcg,
    ranking_metrics,
    top_from_scores,
)
from sona_jax.eval.sasrec import SASRec
from sona_jax.eval.splits import Split
from sona_jax.model.sequence_model import user_sequences

Baseline = baselines.Popularity | baselines.EASE | baselines.ImplicitALS | baselines.RP3beta


def matrix_of(dataset: Dataset, mask: np.ndarray) -> sp.csr_matrix:
    """(users, items) binary matrix of the events in ``mask``."""
    log = dataset.events
    return baselines.interaction_matrix(
        log.user[mask], log.item[mask], dataset.n_users, dataset.n_items
    )


def baseline_grids(options) -> list[tuple[str, list[Baseline]]]:
    """Each matrix baseline's candidate settings (all scored on validation, the best refit)."""
    return [
        ("popularity", [baselines.Popularity()]),
        ("ease", [baselines.EASE(l2) for l2 in options.ease_l2_grid]),
        (
            "implicit-als",
            [baselines.ImplicitALS(f, r, seed=options.seed) for f, r in options.als_grid],
        ),
        ("rp3beta", [baselines.RP3beta(a, b, n) for a, b, n in options.rp3beta_grid]),
    ]


def baseline_rows(
    dataset: Dataset,
    val_split: Split,
    split: Split,
    vectors: np.ndarray,
    options,
    log_fn: Callable[[str], None],
    clock: Callable[[], float],
    sasrec: SASRec,
    sasrec_seconds: float,
) -> tuple[list[dict], dict[str, np.ndarray], dict[str, Baseline | SASRec]]:
    """Rows of kind ``baseline``, each row's per-viewer NDCG over ``split.users`` and the chosen
    (fitted) models by name; ``sasrec`` from `fit_sasrec`, which took ``sasrec_seconds``."""
    rows, per_user, chosen = [], {}, {}
    users, val_users, k = split.users, val_split.users, options.k
    train_matrix, val_train = matrix_of(dataset, split.train), matrix_of(dataset, val_split.train)

    def val_ndcg(scores: np.ndarray) -> float:
        top = top_from_scores(scores, val_train, val_users, k)
        return ranking_metrics(top, val_split.test, val_users)[options.ndcg]

    def add_row(name: str, model, scores: np.ndarray, started: float) -> None:
        top = top_from_scores(scores, train_matrix, users, k)
        per_user[name], chosen[name] = per_user_ndcg(top, split.test, users)[0], model
        rows.append(
            {
                "name": name,
                "kind": "baseline",
                "metrics": list_metrics(top, split.test, users, vectors),
                "chosen_on_validation": model.settings(),
                "seconds": clock() - started,
            }
        )
        log_fn(f"{name}: {rows[-1]['metrics'][options.ndcg]:.4f} NDCG@{k} {model.settings()}")

    for name, models in baseline_grids(options):
        started = clock()
        found = [val_ndcg(m.fit(val_train).scores(val_users)) for m in models]
        best = models[int(np.argmax(found))]
        add_row(name, best, best.fit(train_matrix).scores(users), started)

    sasrec.reading(user_sequences(dataset.events, split.train, dataset.n_users))
    add_row("sasrec", sasrec, sasrec.scores(users), clock() - sasrec_seconds)
    return rows, per_user, chosen


def fit_sasrec(dataset: Dataset, val_split: Split, options) -> SASRec:
    """SASRec trained once, on the validation split's train part, stopping early on its test
    part (its test lists then read each viewer's whole train sequence: a refit for the chosen
    number of epochs would double the cost for one more target per viewer). The hybrid's
    transformer source reads the same network (`protocols.evaluate`)."""
    val_users = val_split.users
    val_train = matrix_of(dataset, val_split.train)

    def val_ndcg(model: SASRec) -> float:
        top = top_from_scores(model.scores(val_users), val_train, val_users, options.k)
        return ranking_metrics(top, val_split.test, val_users)[options.ndcg]

    return SASRec(options.sasrec).fit(
        user_sequences(dataset.events, val_split.train, dataset.n_users),
        dataset.n_items,
        validate=val_ndcg,
    )


def hybrid_intervals(
    rows: list[dict], per_user: dict[str, np.ndarray], hybrid: np.ndarray, seed: int
) -> None:
    """Add to each row named in ``per_user`` the hybrid's mean per-viewer NDCG minus the row's
    (``hybrid_minus``) and its paired bootstrap 95 % interval (``hybrid_minus_95ci``)."""
    for row in rows:
        if row["name"] in per_user:
            other = per_user[row["name"]]
            row["hybrid_minus"] = float(np.mean(hybrid - other))
            row["hybrid_minus_95ci"] = list(paired_bootstrap(hybrid, other, seed))
