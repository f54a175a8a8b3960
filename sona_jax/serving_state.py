"""From a trained model version to the device arrays the hybrid reads (`ServingState`) and to
padded per-request user rows (`UserBatch`, `RequestBatch`)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from sona_jax.model import TrainedModel
from sona_jax.sources import RequestBatch, ServingState, UserBatch


def serving_state(model: TrainedModel) -> ServingState:
    """Shared arrays of ``model`` on device; every model user is in the kNN pool."""
    t = model.tables
    return ServingState(
        base=model.device_base(),
        graph_neighbours=jnp.asarray(t["graph_neighbours"]),
        graph_weights=jnp.asarray(t["graph_weights"]),
        graph_dense=jnp.asarray(t.get("graph_dense", np.zeros((0, 0), np.float32))),
        global_share=jnp.asarray(t["global_share"]),
        trending=jnp.asarray(t["trending"]),
        by_time_of_day=jnp.asarray(t["by_time_of_day"]),
        by_device=jnp.asarray(t["by_device"]),
        hour_share=jnp.asarray(t["hour_share"]),
        item_genres=jnp.asarray(model.item_genres, jnp.float32),
        item_moods=jnp.asarray(t["item_moods"]),
        duration=jnp.asarray(t["duration"]),
        mood_prior=jnp.asarray(t["mood_prior"]),
        pool_preferences=jnp.asarray(model.users.preference, jnp.float32),
        pool_items=jnp.asarray(t["history_recent_items"]),
        pool_weights=jnp.asarray(t["history_recent_weights"]),
        item_diversity=jnp.asarray(
            diversity_vectors(
                np.asarray(model.base.item_embeddings), model.config.diversity.dimensions
            )
        ),
    )


def diversity_vectors(item_embeddings: np.ndarray, dimensions: int) -> np.ndarray:
    """(items, k) unit rows: E on its top-k right singular directions (uncentred)."""
    _, _, vt = np.linalg.svd(item_embeddings, full_matrices=False)
    projected = item_embeddings @ vt[:dimensions].T
    norm = np.linalg.norm(projected, axis=1, keepdims=True)
    return (projected / np.where(norm > 0, norm, 1.0)).astype(np.float32)


def model_user_rows(model: TrainedModel, rows: np.ndarray) -> UserBatch:
    """Host `UserBatch` for model users ``rows`` (their own pool rows are masked in kNN)."""
    t, u = model.tables, model.users
    return UserBatch(
        preference=u.preference[rows].astype(np.float32),
        adapter=u.adapter[rows],
        recent_items=t["history_recent_items"][rows],
        recent_weights=t["history_recent_weights"][rows],
        seen=t["history_seen"][rows],
        dismissed=t["history_dismissed"][rows],
        genre_affinity=u.genre_affinity[rows],
        hourly=u.hourly[rows],
        qualifying=t["qualifying"][rows],
        pool_index=np.asarray(rows, np.int32),
    )


def plain_requests(
    n: int,
    mmr_lambda: float,
    exclude_watched: bool = True,
    device=None,
    time_of_day=None,
    mood=None,
    seed: int = 0,
) -> RequestBatch:
    """Host `RequestBatch` of ``n`` requests sharing options (context arrays may be per row)."""

    def column(value):
        if value is None:
            return np.full(n, -1, np.int32)
        return np.broadcast_to(np.asarray(value, np.int32), (n,)).copy()

    return RequestBatch(
        device=column(device),
        time_of_day=column(time_of_day),
        mood=column(mood),
        exclude_watched=np.full(n, exclude_watched),
        mmr_lambda=np.full(n, mmr_lambda, np.float32),
        seed=(seed + np.arange(n)).astype(np.int32),
    )
