"""Small random hybrid states for property tests."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st

from sona_jax.config import SonaConfig
from sona_jax.model.lora import make_base_tier
from sona_jax.model.sequence_model import SASRecNet, network_shape
from sona_jax.serve import retrieval
from sona_jax.serve.fusion import COLD_START_SETTINGS
from sona_jax.serve.state import RequestBatch, ServingState, UserBatch

D, R, G = 8, 2, 5
# The hybrid's settings scaled to the 30-item random states below.
seeds = st.integers(0, 10_000)  # random states and viewers (property tests)
sizes = st.integers(1, 5)  # viewers in a batch

SMALL_CFG = SonaConfig().with_overrides(
    {
        "collaborative": {"neighbours": 4, "vote_items": 5},
        "graph": {"recent_items": 5, "frontier": 6, "seed_position_decay": 0.8},
        "sequential": {"recent_items": 4, "position_decay": 0.7},
        "transformer": {"epochs": 1, "dim": 8, "blocks": 1, "max_len": 5},
        "fusion": {"sequential": 0.2, "transformer": 0.15},
        "candidates": {"per_source": 6, "trending": 3},
        "diversity": {"pool_size": 12},
    }
)


def random_network(seed: int, n_items: int, cfg: SonaConfig = SMALL_CFG) -> dict:
    """A randomly initialised transformer network over ``n_items`` items."""
    shape = network_shape(cfg)
    net = SASRecNet(n_items, shape)
    key = jax.random.PRNGKey(seed)
    return net.init(key, jnp.zeros((1, shape.max_len), jnp.int32), train=False)


def random_state(
    seed: int, n_items: int = 30, pool: int = 12, history: int = 6, m: int = 4
) -> ServingState:
    """A random state whose transformer network knows all but the last two items (as if they
    were added after the model)."""
    rng = np.random.default_rng(seed)
    e = rng.standard_normal((n_items, D)).astype(np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    factor = np.linalg.qr(rng.standard_normal((D, R)))[0].T.astype(np.float32)
    base = make_base_tier(e, 3.0 * np.eye(D, dtype=np.float32), -1.0, factor)
    neighbours = rng.integers(0, n_items, (n_items, m)).astype(np.int32)
    share = rng.random(n_items).astype(np.float32) + 0.05
    share /= share.sum()
    by_group = rng.random((4, n_items)).astype(np.float32) + 0.05
    by_group /= by_group.sum(1, keepdims=True)
    hour = rng.random((n_items, 24)).astype(np.float32) + 0.05
    hour /= hour.sum(1, keepdims=True)
    prefs = rng.standard_normal((pool, D)).astype(np.float32)
    prefs /= np.linalg.norm(prefs, axis=1, keepdims=True)
    pool_items = rng.integers(-1, n_items, (pool, history)).astype(np.int32)
    state = ServingState(
        base=base,
        graph_neighbours=neighbours,
        graph_weights=rng.random((n_items, m)).astype(np.float32),
        graph_dense=np.zeros((0, 0), np.float32),
        sequence_neighbours=rng.integers(0, n_items, (n_items, m)).astype(np.int32),
        sequence_weights=rng.random((n_items, m)).astype(np.float32),
        global_share=share,
        trending=rng.random(n_items).astype(np.float32),
        by_time_of_day=by_group,
        by_device=by_group[::-1].copy(),
        hour_share=hour,
        item_genres=(rng.random((n_items, G)) < 0.4).astype(np.float32),
        item_moods=(rng.random((n_items, 6)) < 0.3).astype(np.float32),
        duration=np.where(rng.random(n_items) < 0.2, -1, rng.uniform(5, 150, n_items)).astype(
            np.float32
        ),
        release_year=np.where(
            rng.random(n_items) < 0.2, -1, rng.integers(1950, 2025, n_items)
        ).astype(np.float32),
        series=np.where(rng.random(n_items) < 0.5, -1, rng.integers(0, 5, n_items)).astype(
            np.int32
        ),
        mood_prior=(rng.random((6, G)) < 0.4).astype(np.float32),
        pool_preferences=prefs,
        pool_items=pool_items,
        pool_weights=rng.random((pool, history)).astype(np.float32),
        item_diversity=e,
        item_valid=np.ones(n_items, bool),
        new_items=np.zeros(0, np.int32),
        context_fit=np.zeros((0, 0), np.float32),
        context_items=np.zeros((0, 0), np.int32),
        transformer=random_network(seed, n_items - 2),
    )
    fit, items = retrieval.context_candidates(state, SonaConfig())
    return state._replace(context_fit=fit, context_items=items)


def random_users(
    seed: int, state: ServingState, n: int, history: int = 6, cold: bool = False
) -> UserBatch:
    rng = np.random.default_rng(seed + 1000)
    n_items = state.base.item_embeddings.shape[0]
    prefs = rng.standard_normal((n, D)).astype(np.float32)
    prefs /= np.linalg.norm(prefs, axis=1, keepdims=True)
    recent = rng.integers(0, n_items, (n, history)).astype(np.int32)
    recent[:, rng.integers(1, history) :] = -1
    affinity = rng.random((n, G)).astype(np.float32)
    hourly = rng.random((n, 24)).astype(np.float32)
    qualifying = rng.integers(0, 40, n).astype(np.float32)
    if cold:
        prefs[:] = 0
        recent[:] = -1
        qualifying[:] = 0
    return UserBatch(
        preference=prefs,
        adapter=(0.2 * rng.standard_normal((n, D, R))).astype(np.float32),
        recent_items=recent,
        recent_weights=rng.random((n, history)).astype(np.float32),
        seen=np.concatenate([recent, rng.integers(-1, n_items, (n, 3)).astype(np.int32)], 1),
        dismissed=rng.integers(-1, n_items, (n, 2)).astype(np.int32),
        genre_affinity=affinity / affinity.sum(1, keepdims=True),
        hourly=hourly / hourly.sum(1, keepdims=True),
        qualifying=qualifying,
        pool_index=rng.integers(-1, state.pool_preferences.shape[0], n).astype(np.int32),
    )


def random_requests(seed: int, n: int, with_context: bool = True) -> RequestBatch:
    rng = np.random.default_rng(seed + 2000)

    def optional(high):
        return (rng.integers(-1, high, n) if with_context else np.full(n, -1)).astype(np.int32)

    return RequestBatch(
        device=optional(4),
        time_of_day=optional(4),
        mood=optional(6),
        exclude_watched=rng.random(n) < 0.5,
        mmr_lambda=rng.random(n).astype(np.float32),
        seed=rng.integers(0, 1000, n).astype(np.int32),
        cold_start=random_cold_start(rng, n),
    )


def random_cold_start(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, len(COLD_START_SETTINGS)) cold-start settings per request row, as experiment
    variants give them (within `ColdStartConfig`'s bounds)."""
    floor = rng.uniform(0.0, 0.2, n)
    columns = {
        "min_events": rng.integers(0, 6, n),
        "blend_events": rng.integers(1, 31, n),
        "exploration_floor": floor,
        "exploration_start": rng.uniform(floor, 0.3),
        "exploration_decay": rng.uniform(0.9, 1.0, n),
        "genre_strength": rng.uniform(0.0, 2.0, n),
    }
    return np.stack([columns[name] for name in COLD_START_SETTINGS], axis=1).astype(np.float32)
