"""Viewers of a served model version: profiles (a stranger's, the model's own viewer's, and one
built from all of a viewer's stored events, SPEC 3.1) and adapter retraining for a few viewers
(SPEC 3.2). Used by `service.serving.profiles`, `service.serving.runtime`, evaluation and the benches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import NamedTuple

import jax
import numpy as np

from sona_jax.data.stored import StoredEvent, event_log
from sona_jax.features.profile import build_profiles_in_steps
from sona_jax.model.adapters import train_adapters_of
from sona_jax.model.version import STORAGE_DTYPE
from sona_jax.serve.batch import ViewerProfile, model_rows
from sona_jax.serve.engine import ServingEngine
from sona_jax.serve.programs import ServedShapes


def host_key(seed: int) -> np.ndarray:
    """``jax.random.PRNGKey(seed)`` (a seed below 2**32) made on the host: the same key,
    without the eager program a key made on the device compiles."""
    return np.array([0, seed], np.uint32)


class AdapterResult(NamedTuple):
    """One viewer's trained adapter (d, r) float16, its loss before / after and events used."""

    adapter: np.ndarray
    loss_before: float
    loss: float
    events_used: int


def empty_profile(engine: ServingEngine) -> ViewerProfile:
    """A viewer the engine knows nothing about (cold start)."""
    d = engine.model.base.item_embeddings.shape[1]
    g = len(engine.model.genre_names)
    width = engine.cfg.collaborative.history_items
    return ViewerProfile(
        preference=np.zeros(d, np.float32),
        adapter=np.zeros((d, engine.cfg.lora.rank), STORAGE_DTYPE),
        recent_items=np.full(width, -1, np.int32),
        recent_weights=np.zeros(width, np.float32),
        seen=np.zeros(0, np.int32),
        dismissed=np.zeros(0, np.int32),
        genre_affinity=np.full(g, 1.0 / max(g, 1), np.float32),
        hourly=np.full(24, 1 / 24, np.float32),
        qualifying=0.0,
        events=0,
        pool_index=-1,
        model_version=engine.version,
    )


def model_profile(engine: ServingEngine, user_id: str) -> ViewerProfile | None:
    """The viewer as of the model's training, or None if the model never saw them."""
    row = engine.user_index.get(user_id)
    if row is None:
        return None
    batch = model_rows(engine.model, np.array([row]))
    return ViewerProfile(
        preference=batch.preference[0],
        adapter=batch.adapter[0],
        recent_items=batch.recent_items[0],
        recent_weights=batch.recent_weights[0],
        seen=batch.seen[0][batch.seen[0] >= 0],
        dismissed=batch.dismissed[0][batch.dismissed[0] >= 0],
        genre_affinity=batch.genre_affinity[0],
        hourly=batch.hourly[0],
        qualifying=float(batch.qualifying[0]),
        events=int(engine.model.users.interaction_count[row]),
        pool_index=row,
        model_version=engine.version,
    )


def viewer_profile(
    engine: ServingEngine,
    user_id: str,
    events: Sequence[StoredEvent],
    adapter: np.ndarray | None,
    last_trained: float,
    now: float,
) -> ViewerProfile:
    """One viewer's profile from all their stored events (SPEC 3.1, O(events)); events on
    items outside the model's catalogue count toward ``events`` only."""
    log, _ = event_log(events, engine.item_index)
    profile = replace(
        empty_profile(engine),
        events=len(events),
        last_trained=last_trained,
        pool_index=engine.user_index.get(user_id, -1),
    )
    if adapter is not None:
        profile.adapter = adapter.astype(STORAGE_DTYPE)
    if len(log) == 0:
        return profile
    shapes = engine.shapes or ServedShapes()
    built = build_profiles_in_steps(
        log,
        engine.state.base.item_embeddings,
        engine.state.item_genres,
        1,
        now,
        engine.cfg,
        shapes.profile_events,
        engine.run,
    )
    seen, dismissed = built.seen[0], built.dismissed[0]
    return replace(
        profile,
        preference=built.preference[0],
        genre_affinity=built.genre_affinity[0],
        hourly=built.hourly[0],
        recent_items=built.recent_items[0],
        recent_weights=built.recent_weights[0],
        seen=seen[seen >= 0],
        dismissed=dismissed[dismissed >= 0],
        qualifying=float(built.qualifying[0]),
    )


def train_viewers(
    engine: ServingEngine,
    user_ids: Sequence[str],
    profiles: Sequence[ViewerProfile],
    events: Sequence[StoredEvent],
    key: jax.Array,
) -> list[AdapterResult]:
    """Retrain the adapters of a few viewers (``events``: all of theirs) in vmapped calls
    of `ServedShapes.learner_users` viewers each (SPEC 3.2); row i of the result is
    ``user_ids[i]``."""
    rows = {user_id: row for row, user_id in enumerate(user_ids)}
    log, _ = event_log(events, engine.item_index, rows)
    shapes = engine.shapes or ServedShapes()
    result = train_adapters_of(
        engine.state.base,
        np.stack([p.preference for p in profiles]).astype(np.float32),
        np.stack([p.adapter for p in profiles]),
        log,
        np.arange(len(profiles)),
        engine.cfg,
        key,
        chunk_users=shapes.learner_users,
        run=engine.run,
    )
    return [
        AdapterResult(
            result.adapters[row],
            float(result.loss_before[row]),
            float(result.loss_after[row]),
            int(result.events_used[row]),
        )
        for row in range(len(profiles))
    ]
