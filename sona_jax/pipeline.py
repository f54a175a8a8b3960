"""SPEC 4.1 end to end: from a dataset to a trained model version (no file I/O here).

Offline orchestration loops over fixed-size *chunks* of events and users (each chunk one jitted,
vmapped call with a bucketed shape), never over single users.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from sona_jax import base_fit, lora, preference, tables
from sona_jax.config import SonaConfig
from sona_jax.datasets.schema import Dataset, EventLog
from sona_jax.events import engine_events
from sona_jax.model import STORAGE_DTYPE, TrainedModel, UserState
from sona_jax.training_data import RecentEvents, event_targets, recent_events, with_negatives

EVENT_CHUNK = 1 << 18  # events per preference-sum call (one compiled shape)

Progress = Callable[[Iterable, str, int], Iterable]


def _no_progress(iterable: Iterable, description: str, total: int) -> Iterable:
    return iterable


def _event_chunks(log: EventLog, now: float, n_users: int):
    for start in range(0, len(log), EVENT_CHUNK):
        chunk = log.take(np.arange(start, min(start + EVENT_CHUNK, len(log))))
        yield engine_events(chunk, now, pad_to=EVENT_CHUNK, pad_user=n_users)


def build_user_profiles(
    log: EventLog,
    item_embeddings: jnp.ndarray,
    item_genres: np.ndarray,
    n_users: int,
    now: float,
    cfg: SonaConfig,
) -> UserState:
    """Preference vectors, genre affinities and temporal patterns for every user (adapters zero)."""
    pcfg = cfg.preference
    sums = preference.PreferenceSums(
        jnp.zeros((n_users, item_embeddings.shape[1])), jnp.zeros(n_users)
    )
    for chunk in _event_chunks(log, now, n_users):
        sums = preference.add_sums(
            sums, preference.preference_sums(chunk, item_embeddings, n_users, pcfg)
        )
    events = engine_events(log, now)
    pattern = preference.temporal_patterns(events, n_users, pcfg)
    return UserState(
        preference=np.asarray(preference.finish_preferences(sums)),
        adapter=np.zeros((n_users, item_embeddings.shape[1], cfg.lora.rank), STORAGE_DTYPE),
        genre_affinity=np.asarray(
            preference.genre_affinities(events, jnp.asarray(item_genres), n_users, pcfg)
        ),
        hourly=np.asarray(pattern.hourly),
        weekday=np.asarray(pattern.weekday),
        recency=np.asarray(pattern.recency),
        interaction_count=np.bincount(log.user, minlength=n_users).astype(np.int32),
    )


def fit_base_tier(dataset: Dataset, now: float, cfg: SonaConfig) -> tuple[lora.BaseTier, dict]:
    """Item embeddings (for items without one), then A; W and b are calibrated later."""
    log, catalogue = dataset.events, dataset.catalogue
    events = engine_events(log, now)
    weights = np.asarray(preference.event_weights(events, cfg.preference))
    matrix = base_fit.engagement_matrix(
        log.user, log.item, weights, dataset.n_users, dataset.n_items
    )
    features = base_fit.item_features(
        matrix, catalogue.genres, catalogue.moods, cfg.base, cfg.model.seed
    )
    embeddings = base_fit.fit_item_embeddings(
        features,
        cfg.model.embedding_dim,
        cfg.model.seed,
        catalogue.embeddings,
        catalogue.has_embedding,
    )
    factor = base_fit.principal_factor(embeddings, cfg.lora.rank)
    base = lora.make_base_tier(
        embeddings, np.eye(cfg.model.embedding_dim, dtype=np.float32), 0.0, factor
    )
    return base, {"engagement_nnz": int(matrix.nnz)}


def calibrate(
    base: lora.BaseTier,
    users: UserState,
    log: EventLog,
    now: float,
    cfg: SonaConfig,
    max_pairs: int = 50_000,
) -> lora.BaseTier:
    """Set ``W = s·I`` and ``b`` by logistic regression on watched vs random items."""
    keep = np.asarray(
        preference.qualifies(
            jnp.asarray(log.completion),
            jnp.asarray(log.rating),
            jnp.asarray(log.dismissed),
            cfg.preference,
        )
    )
    index = np.flatnonzero(keep)
    if len(index) > max_pairs:
        index = np.random.default_rng(cfg.model.seed).choice(index, max_pairs, replace=False)
    if len(index) == 0:
        return base
    scale, bias = base_fit.calibrate_projection(
        jnp.asarray(users.preference),
        base.item_embeddings,
        log.user[index],
        log.item[index],
        cfg.base,
        cfg.model.seed,
    )
    dim = cfg.model.embedding_dim
    return lora.make_base_tier(
        base.item_embeddings, scale * np.eye(dim, dtype=np.float32), bias, base.factor
    )


def train_all_adapters(
    base: lora.BaseTier,
    users: UserState,
    log: EventLog,
    cfg: SonaConfig,
    key: jax.Array,
    progress: Progress = _no_progress,
) -> dict:
    """Train the adapter of every user with at least ``lora.min_events`` events, in place.

    Users go through in chunks of ``lora.train_chunk_users`` (the last one padded), so the whole
    run compiles one program. Returns loss statistics.
    """
    lcfg = cfg.lora
    eligible = np.flatnonzero(users.interaction_count >= lcfg.min_events)
    targets = event_targets(log.completion, log.rating, log.dismissed, cfg.preference)
    # Powers of two: datasets of different sizes share compiled programs.
    chunk = min(lcfg.train_chunk_users, 1 << int(np.ceil(np.log2(max(len(eligible), 1)))))
    before, after = [], []
    n_items = base.item_embeddings.shape[0]
    everyone = recent_events(log.user, log.item, log.timestamp, targets, eligible, lcfg.max_events)
    starts = range(0, len(eligible), chunk)
    for start in progress(starts, "training adapters", len(starts)):
        rows = eligible[start : start + chunk]
        take = np.minimum(np.arange(start, start + chunk), len(eligible) - 1)  # pad: repeat last
        padded = eligible[take]
        recent = RecentEvents(*(part[take] for part in everyone))
        key, sub = jax.random.split(key)
        items, item_targets, mask = with_negatives(sub, recent, n_items, lcfg)
        batch = lora.prepare_training_batch(
            base,
            jnp.asarray(users.preference[padded]),
            jnp.asarray(users.adapter[padded]),
            items,
            item_targets,
            mask,
        )
        result = lora.train_adapters(batch, lcfg)
        real = len(rows)
        adapters = lora.apply_adapter_updates(
            jnp.asarray(users.adapter[padded]), batch.preference, result.delta
        )
        users.adapter[rows] = np.asarray(adapters[:real]).astype(STORAGE_DTYPE)
        before.append(np.asarray(result.loss_before[:real]))
        after.append(np.asarray(result.loss_after[:real]))
    if not before:
        return {"users_trained": 0}
    before, after = np.concatenate(before), np.concatenate(after)
    return {
        "users_trained": int(len(eligible)),
        "bce_before": float(before.mean()),
        "bce_after": float(after.mean()),
        "fraction_improved": float((after < before).mean()),
    }


def train_model(
    dataset: Dataset,
    cfg: SonaConfig,
    version: int = 1,
    now: float | None = None,
    progress: Progress = _no_progress,
) -> TrainedModel:
    """Fit the base tier, build every user profile and train every adapter."""
    if len(dataset.events) == 0:
        raise ValueError(f"{dataset.name}: no events to train on")
    now = float(dataset.events.timestamp.max()) if now is None else float(now)
    timings = {}
    clock = time.perf_counter()
    base, report = fit_base_tier(dataset, now, cfg)
    timings["base_tier_s"] = time.perf_counter() - clock

    clock = time.perf_counter()
    users = build_user_profiles(
        dataset.events, base.item_embeddings, dataset.catalogue.genres, dataset.n_users, now, cfg
    )
    timings["profiles_s"] = time.perf_counter() - clock

    clock = time.perf_counter()
    base = calibrate(base, users, dataset.events, now, cfg)
    timings["calibration_s"] = time.perf_counter() - clock

    clock = time.perf_counter()
    report |= train_all_adapters(
        base, users, dataset.events, cfg, jax.random.PRNGKey(cfg.model.seed), progress
    )
    timings["adapters_s"] = time.perf_counter() - clock

    clock = time.perf_counter()
    model_tables = build_tables(dataset, now, cfg)
    timings["tables_s"] = time.perf_counter() - clock
    report |= {
        "timings": timings,
        "projection_scale": float(base.projection[0, 0]),
        "bias": float(base.bias),
        "events": len(dataset.events),
        "data": dataset.name,
    }
    return TrainedModel(
        version=version,
        config=cfg,
        base=lora.BaseTier(*(np.asarray(x) for x in base)),
        users=users,
        user_ids=dataset.user_ids,
        item_ids=dataset.catalogue.item_ids,
        titles=dataset.catalogue.titles,
        genre_names=dataset.catalogue.genre_names,
        item_genres=dataset.catalogue.genres,
        reference_time=now,
        tables=model_tables,
        report=report,
    )


def build_tables(dataset: Dataset, now: float, cfg: SonaConfig) -> dict[str, np.ndarray]:
    """Graph, popularity, context and history tables of a model version (host arrays)."""
    log, catalogue = dataset.events, dataset.catalogue
    weights = np.asarray(preference.event_weights(engine_events(log, now), cfg.preference))
    graph = tables.build_graph(log, weights, dataset.n_users, dataset.n_items, cfg)
    popularity = tables.build_popularity(log, dataset.n_items, now, cfg)
    history = tables.build_user_history(log, weights, dataset.n_users, cfg)
    moods = np.zeros((dataset.n_items, len(tables.MOODS)), np.float32)
    if catalogue.moods is not None:
        for column, name in enumerate(catalogue.mood_names):
            if name in tables.MOODS:
                moods[:, tables.MOODS.index(name)] = catalogue.moods[:, column]
    duration = np.nan_to_num(np.asarray(catalogue.duration_minutes, np.float32), nan=-1.0)
    return {
        "graph_neighbours": graph.neighbours,
        "graph_weights": graph.weights,
        "graph_dense": graph.dense,
        **{name: value for name, value in popularity._asdict().items()},
        **{f"history_{name}": value for name, value in history._asdict().items()},
        "qualifying": np.bincount(log.user[weights > 0], minlength=dataset.n_users).astype(
            np.float32
        ),
        "item_moods": moods,
        "duration": duration,
        "mood_prior": tables.mood_genre_prior(catalogue.genre_names),
    }
