"""SONA's hybrid as a ranker for evaluation: top-k lists of model users, through the same
`ServingEngine.recommend` (and so the same batch builder) the service calls."""

from __future__ import annotations

import numpy as np

from sona_jax.serve.batch import request_rows
from sona_jax.serve.engine import ServingEngine
from sona_jax.serve.query_batches import Lists

EVAL_BATCH = 128  # users per engine call when ranking a whole split


def ranked_lists(
    engine: ServingEngine,
    users: np.ndarray,
    weights=None,
    mmr_lambda: float = 1.0,
    time_of_day: np.ndarray | None = None,
    device: np.ndarray | None = None,
    k: int = 10,
) -> Lists:
    """What the service would serve model users ``users`` ((n,) rows), as host arrays of n
    rows; ``weights`` (N_SOURCES,) default to the engine's; context arrays (n,) use -1 for none."""
    parts = []
    for start in range(0, len(users), EVAL_BATCH):
        rows = users[start : start + EVAL_BATCH]
        window = slice(start, start + len(rows))
        requests = request_rows(
            len(rows),
            mmr_lambda,
            engine.host_cold_start,
            # one exploration seed per viewer, whatever else is ranked with them, so that two
            # rankings of the same viewer compare like with like (paired intervals)
            seed=np.asarray(rows, np.int32),
            time_of_day=None if time_of_day is None else time_of_day[window],
            device=None if device is None else device[window],
        )
        parts.append(engine.recommend_rows(rows, requests, k, weights))
    return Lists(*(np.concatenate(column)[:, :k] for column in zip(*parts, strict=True)))


def rank(
    engine: ServingEngine,
    users: np.ndarray,
    weights=None,
    mmr_lambda: float = 1.0,
    time_of_day: np.ndarray | None = None,
    device: np.ndarray | None = None,
    k: int = 10,
) -> np.ndarray:
    """(len(users), k) item indices: `ranked_lists` items."""
    return ranked_lists(engine, users, weights, mmr_lambda, time_of_day, device, k).items
