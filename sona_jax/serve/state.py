"""What the hybrid reads: the shared device arrays of one model version (`ServingState`, built
by `serving_state`) and the padded per-request rows (`UserBatch`, `RequestBatch`, built by the
one batch builder in `sona_jax.serve.batch`)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sona_jax.buckets import pad_rows
from sona_jax.model.lora import BaseTier
from sona_jax.model.sequence_model import nested_params
from sona_jax.model.version import TrainedModel


class ServingState(NamedTuple):
    """Everything shared by all users of one model version (device arrays).

    base: the LoRA base tier (items, d) ...
    graph_neighbours / graph_weights: (items, M) adjacency lists; graph_dense: (items, items)
    the full edge matrix where the catalogue is small enough, else (0, 0);
    sequence_neighbours / sequence_weights: (items, M') each item's next-watch successors.
    global_share, trending: (items,); by_time_of_day, by_device: (4, items); hour_share: (items, 24).
    item_genres: (items, G) multi-hot; item_moods: (items, 6) flags in `tables.MOODS` order;
    duration: (items,) minutes, release_year (items,), both -1 unknown; series: (items,) int32
    series keys, -1 none (`metadata.series_keys`); mood_prior: (6, G).
    pool_preferences: (P, d) preference vectors of the viewers kNN searches: float32 when
    every query scores them all, float16 (their stored dtype) when an index finds the rows
    scored (`pool_dtype`);
    pool_items / pool_weights: (P, V) their most recent engaged items (-1 padded) and weights,
    as many as vote (`CollaborativeConfig.vote_items`).
    item_diversity: (items, k) unit vectors for MMR and explanations: E projected on its top-k
    principal directions (cosines there approximate those of E at a fraction of the cost).
    item_valid: (items,) bool servable rows (False: deleted, or capacity not yet used);
    new_items: (F,) rows of items added after the model (-1 padded; F = 0 until one is).
    context_fit: (combinations, items) the everyone-part of the context score of every
    combination of device, time of day and mood (`sources.global_context_scores`);
    context_items: (combinations, K) the items that fit each combination best
    (`retrieval.context_candidates`; the engine refreshes both whenever the tables they are
    made of change; (0, 0) until it does).
    transformer: the transformer source's network parameters (flax's nested dict, over the
    model's items only; {}: the model has none, and the source says nothing).

    "items" is the catalogue's capacity (`sona_jax.serve.catalogue`): the model's items, then
    rows for items added since, grown in steps so a write rarely changes a shape.
    """

    base: BaseTier
    graph_neighbours: jnp.ndarray
    graph_weights: jnp.ndarray
    graph_dense: jnp.ndarray
    sequence_neighbours: jnp.ndarray
    sequence_weights: jnp.ndarray
    global_share: jnp.ndarray
    trending: jnp.ndarray
    by_time_of_day: jnp.ndarray
    by_device: jnp.ndarray
    hour_share: jnp.ndarray
    item_genres: jnp.ndarray
    item_moods: jnp.ndarray
    duration: jnp.ndarray
    release_year: jnp.ndarray
    series: jnp.ndarray
    mood_prior: jnp.ndarray
    pool_preferences: jnp.ndarray
    pool_items: jnp.ndarray
    pool_weights: jnp.ndarray
    item_diversity: jnp.ndarray
    item_valid: jnp.ndarray
    new_items: jnp.ndarray
    context_fit: jnp.ndarray
    context_items: jnp.ndarray
    transformer: dict


class UserBatch(NamedTuple):
    """Per-request user rows (users, ...), gathered by the caller.

    preference (users, d); adapter (users, d, r); recent_items / recent_weights (users, Lh)
    newest first; seen (users, S) and dismissed (users, D) item lists (-1 padded);
    genre_affinity (users, G); hourly (users, 24); qualifying (users,) count of qualifying
    events; pool_index (users,) the user's own row in the kNN pool, -1 if absent.
    """

    preference: jnp.ndarray
    adapter: jnp.ndarray
    recent_items: jnp.ndarray
    recent_weights: jnp.ndarray
    seen: jnp.ndarray
    dismissed: jnp.ndarray
    genre_affinity: jnp.ndarray
    hourly: jnp.ndarray
    qualifying: jnp.ndarray
    pool_index: jnp.ndarray


class RequestBatch(NamedTuple):
    """Per-request options (users,): device, time_of_day, mood are indices or -1 when absent;
    exclude_watched bool; mmr_lambda in [0, 1]; seed int32 for exploration draws; cold_start
    (users, len(fusion.COLD_START_SETTINGS)) the cold-start settings ranking reads
    (`fusion.cold_start_row`)."""

    device: jnp.ndarray
    time_of_day: jnp.ndarray
    mood: jnp.ndarray
    exclude_watched: jnp.ndarray
    mmr_lambda: jnp.ndarray
    seed: jnp.ndarray
    cold_start: jnp.ndarray


def has_context(request: RequestBatch) -> jnp.ndarray:
    """(requests,) whether a request gives any context (device, time of day or mood)."""
    return (request.device >= 0) | (request.time_of_day >= 0) | (request.mood >= 0)


def serving_state(
    model: TrainedModel, basis: np.ndarray, pool_rows: int, vote_items: int, pool_dtype: type
) -> ServingState:
    """Shared arrays of ``model`` on device (its own items only); every model user is in the
    kNN pool (`pool_preferences` of ``pool_dtype``, `pool_votes`). ``basis`` (k, d) from
    `diversity_basis`."""
    t = model.tables
    items, weights = pool_votes(model, pool_rows, vote_items)
    return ServingState(
        base=BaseTier(*(jax.device_put(np.asarray(x)) for x in model.base)),
        graph_neighbours=jax.device_put(np.asarray(t.graph_neighbours)),
        graph_weights=jax.device_put(np.asarray(t.graph_weights)),
        graph_dense=jax.device_put(np.asarray(t.graph_dense)),
        sequence_neighbours=jax.device_put(np.asarray(t.sequence_neighbours)),
        sequence_weights=jax.device_put(np.asarray(t.sequence_weights)),
        global_share=jax.device_put(np.asarray(t.global_share)),
        trending=jax.device_put(np.asarray(t.trending)),
        by_time_of_day=jax.device_put(np.asarray(t.by_time_of_day)),
        by_device=jax.device_put(np.asarray(t.by_device)),
        hour_share=jax.device_put(np.asarray(t.hour_share)),
        item_genres=jax.device_put(np.asarray(model.item_genres, np.float32)),
        item_moods=jax.device_put(np.asarray(t.item_moods)),
        duration=jax.device_put(np.asarray(t.duration)),
        release_year=jax.device_put(np.asarray(t.release_year)),
        series=jax.device_put(np.asarray(t.series)),
        mood_prior=jax.device_put(np.asarray(t.mood_prior)),
        pool_preferences=pool_preferences(model, pool_rows, pool_dtype),
        pool_items=items,
        pool_weights=weights,
        item_diversity=jax.device_put(
            diversity_vectors(np.asarray(model.base.item_embeddings), basis)
        ),
        item_valid=jax.device_put(np.ones(model.n_items, bool)),
        new_items=jax.device_put(np.zeros(0, np.int32)),
        context_fit=np.zeros((0, 0), np.float32),  # the engine fills these in
        context_items=np.zeros((0, 0), np.int32),
        transformer=nested_params(model.transformer),
    )


def pool_dtype(searched_by_index: bool) -> type:
    """The pool's preference dtype: float16 when an index finds the rows a query scores (only
    those rows are read, and converted; half the bytes: 1 GB less at a million viewers, with the
    values the model stores), float32 when every query scores the whole pool (converting it
    each call would cost more than the product)."""
    return np.float16 if searched_by_index else np.float32


def pool_preferences(model: TrainedModel, pool_rows: int, dtype: type) -> jnp.ndarray:
    """(pool_rows, d) the kNN pool's preference vectors on device: every model user, then empty
    viewers (no preference: they vote nothing), so that model versions of nearly as many
    viewers share shapes."""
    return jax.device_put(pad_rows(np.asarray(model.users.preference, dtype), pool_rows))


def pool_votes(
    model: TrainedModel, pool_rows: int, vote_items: int
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(pool_rows, V) each pool viewer's ``vote_items`` most recent engaged items (-1 padded)
    and their weights on device: the only columns a vote reads (half the model's history width
    by default: 1 GB less at a million viewers)."""
    h = model.history
    width = min(vote_items, h.recent_items.shape[1])
    return (
        jax.device_put(pad_rows(np.asarray(h.recent_items[:, :width]), pool_rows, -1)),
        jax.device_put(pad_rows(np.asarray(h.recent_weights[:, :width]), pool_rows)),
    )


def diversity_basis(item_embeddings: np.ndarray, dimensions: int) -> np.ndarray:
    """(k, d) E's top-k right singular directions (uncentred)."""
    _, _, vt = np.linalg.svd(np.asarray(item_embeddings), full_matrices=False)
    return vt[:dimensions].astype(np.float32)


def diversity_vectors(item_embeddings: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """(items, k) unit rows: E projected on ``basis`` (k, d)."""
    projected = np.asarray(item_embeddings) @ basis.T
    norm = np.linalg.norm(projected, axis=1, keepdims=True)
    return (projected / np.where(norm > 0, norm, 1.0)).astype(np.float32)
