"""SPEC 4.1 end to end: from a dataset to a trained model version (no file I/O, no clock).

Offline orchestration loops over fixed-size *chunks* of events and users (each chunk one jitted,
vmapped call with a bucketed shape), never over single users. The caller may pass `TrainHooks`
to see progress and time the phases (`sona_lab.training` does, with tqdm and a clock).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from sona_jax.config import SonaConfig
from sona_jax.data.schema import Catalogue, Dataset, EventLog
from sona_jax.features import preference
from sona_jax.features.profile import build_profiles, event_weights
from sona_jax.model import base_tier, lora, metadata, sequence_model, tables
from sona_jax.model.adapters import Progress, no_progress, train_adapters_of
from sona_jax.model.version import (
    STORAGE_DTYPE,
    ItemTables,
    TrainedModel,
    UserHistoryTables,
    UserState,
)


@dataclass(frozen=True)
class TrainHooks:
    """What `train_model` tells its caller: ``progress`` wraps the chunk loops, ``phase(name)``
    is a context manager around each phase (base tier, profiles, calibration, adapters, tables,
    transformer)."""

    progress: Progress = no_progress
    phase: Callable[[str], contextlib.AbstractContextManager] = field(
        default=lambda name: contextlib.nullcontext()
    )


def fit_base_tier(dataset: Dataset, now: float, cfg: SonaConfig) -> tuple[lora.BaseTier, dict]:
    """Item embeddings (for items without one), then A; W and b are calibrated later."""
    log, catalogue = dataset.events, dataset.catalogue
    weights = event_weights(log, now, cfg)
    matrix = base_tier.engagement_matrix(
        log.user, log.item, weights, dataset.n_users, dataset.n_items
    )
    features = base_tier.item_features(
        matrix, catalogue.genres, catalogue.moods, cfg.base, cfg.model.seed
    )
    embeddings = base_tier.fit_item_embeddings(
        features,
        cfg.model.embedding_dim,
        cfg.model.seed,
        catalogue.embeddings,
        catalogue.has_embedding,
    )
    factor = base_tier.principal_factor(embeddings, cfg.lora.rank)
    base = lora.make_base_tier(
        embeddings, np.eye(cfg.model.embedding_dim, dtype=np.float32), 0.0, factor
    )
    return base, {"engagement_nnz": int(matrix.nnz)}


def calibrate(
    base: lora.BaseTier, preferences: np.ndarray, log: EventLog, cfg: SonaConfig
) -> lora.BaseTier:
    """Set ``W = s·I`` and ``b`` by logistic regression on watched vs random items, on at most
    ``base.calibration_pairs`` (viewer, watched item) pairs."""
    keep = np.asarray(
        preference.qualifies(
            jnp.asarray(log.completion),
            jnp.asarray(log.rating),
            jnp.asarray(log.dismissed),
            cfg.preference,
        )
    )
    index = np.flatnonzero(keep)
    if len(index) > cfg.base.calibration_pairs:
        index = np.random.default_rng(cfg.model.seed).choice(
            index, cfg.base.calibration_pairs, replace=False
        )
    if len(index) == 0:
        return base
    scale, bias = base_tier.calibrate_projection(
        jnp.asarray(preferences),
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
    progress: Progress = no_progress,
    mesh: Mesh | None = None,
) -> dict:
    """Train the adapter of every user with at least ``lora.min_events`` events, in place
    (split over ``mesh`` by viewer, when given: `adapters.train_adapters_of`).

    Returns loss statistics.
    """
    eligible = np.flatnonzero(users.interaction_count >= cfg.lora.min_events)
    result = train_adapters_of(
        base, users.preference, users.adapter, log, eligible, cfg, key, progress, mesh, True
    )
    if len(eligible) == 0:
        return {"users_trained": 0}
    return {
        "users_trained": int(len(eligible)),
        "bce_before": float(result.loss_before.mean()),
        "bce_after": float(result.loss_after.mean()),
        "fraction_improved": float((result.loss_after < result.loss_before).mean()),
    }


def item_tables(
    catalogue: Catalogue,
    log: EventLog,
    weights: np.ndarray,
    n_users: int,
    now: float,
    cfg: SonaConfig,
    counts: tables.PopularityCounts | None = None,
) -> ItemTables:
    """Graph, popularity and context tables of a model version (host arrays)."""
    n_items = catalogue.n_items
    graph = tables.build_graph(log, weights, n_users, n_items, cfg)
    successors, successor_weights = tables.build_sequence_graph(log, weights, n_items, cfg)
    if counts is None:
        counts = tables.popularity_counts(log, n_items, now, cfg)
    popularity = tables.popularity_tables(counts, cfg)
    moods = metadata.moods_in_order(catalogue.mood_names, catalogue.moods, n_items)
    return ItemTables(
        graph_neighbours=graph.neighbours,
        graph_weights=graph.weights,
        graph_dense=graph.dense,
        sequence_neighbours=successors,
        sequence_weights=successor_weights,
        **popularity._asdict(),
        item_moods=moods,
        duration=metadata.known_or_unknown(catalogue.duration_minutes),
        release_year=metadata.known_or_unknown(catalogue.release_year),
        series=metadata.series_keys(metadata.series_ids(catalogue)),
        mood_prior=tables.learned_mood_prior(
            tables.mood_genre_prior(catalogue.genre_names), moods, catalogue.genres, counts.watched
        ),
    )


def fit_metadata_map(catalogue: Catalogue, item_embeddings: np.ndarray, cfg: SonaConfig):
    """(f, d) the map new items' embeddings come from (`model.metadata`)."""
    features = metadata.metadata_features(metadata.catalogue_metadata(catalogue), cfg.catalogue)
    return metadata.fit_metadata_map(features, item_embeddings, cfg.catalogue.metadata_l2)


def train_model(
    dataset: Dataset,
    cfg: SonaConfig,
    version: int = 1,
    now: float | None = None,
    hooks: TrainHooks = TrainHooks(),
    mesh: Mesh | None = None,
    transformer: dict[str, np.ndarray] | None = None,
) -> TrainedModel:
    """Fit the base tier, build every user profile and train every adapter (split over the
    devices of ``mesh`` by viewer, when given), and the transformer source's network when
    ``transformer.epochs`` > 0 (or take ``transformer``, flattened parameters trained for this
    log's catalogue: evaluation trains one for several models)."""
    if len(dataset.events) == 0:
        raise ValueError(f"{dataset.name}: no events to train on")
    log = dataset.events
    now = float(log.timestamp.max()) if now is None else float(now)
    with hooks.phase("base_tier"):
        base, report = fit_base_tier(dataset, now, cfg)
    with hooks.phase("profiles"):
        profiles = build_profiles(
            log, base.item_embeddings, dataset.catalogue.genres, dataset.n_users, now, cfg
        )
    users = UserState(
        preference=profiles.preference,
        adapter=np.zeros((dataset.n_users, cfg.model.embedding_dim, cfg.lora.rank), STORAGE_DTYPE),
        genre_affinity=profiles.genre_affinity,
        hourly=profiles.hourly,
        weekday=profiles.weekday,
        recency=profiles.recency,
        interaction_count=profiles.interaction_count,
    )
    with hooks.phase("calibration"):
        base = calibrate(base, users.preference, log, cfg)
    with hooks.phase("adapters"):
        report |= train_all_adapters(
            base, users, log, cfg, jax.random.PRNGKey(cfg.model.seed), hooks.progress, mesh
        )
    with hooks.phase("tables"):
        weights = event_weights(log, now, cfg)
        counts = tables.popularity_counts(log, dataset.n_items, now, cfg)
        model_tables = item_tables(
            dataset.catalogue, log, weights, dataset.n_users, now, cfg, counts
        )
        metadata_map = fit_metadata_map(dataset.catalogue, np.asarray(base.item_embeddings), cfg)
    if transformer is None:
        with hooks.phase("transformer"):
            transformer = fit_transformer(dataset, cfg)
    report |= {
        "projection_scale": float(base.projection[0, 0]),
        "bias": float(base.bias),
        "events": len(log),
        "data": dataset.name,
    }
    return TrainedModel(
        version=version,
        config=cfg,
        base=lora.BaseTier(*(np.asarray(x) for x in base)),
        users=users,
        history=UserHistoryTables(
            profiles.recent_items,
            profiles.recent_weights,
            profiles.seen,
            profiles.dismissed,
            profiles.qualifying,
        ),
        tables=model_tables,
        user_ids=dataset.user_ids,
        item_ids=dataset.catalogue.item_ids,
        titles=dataset.catalogue.titles,
        genre_names=dataset.catalogue.genre_names,
        item_genres=dataset.catalogue.genres,
        reference_time=now,
        popularity=counts,
        metadata_map=metadata_map,
        report=report,
        transformer=transformer,
    )


def fit_transformer(dataset: Dataset, cfg: SonaConfig) -> dict[str, np.ndarray]:
    """The transformer source's network (flattened parameters) trained on every event of
    ``dataset`` in time order for ``transformer.epochs`` epochs; {} when that is 0."""
    t = cfg.transformer
    if t.epochs == 0:
        return {}
    sequences = sequence_model.user_sequences(
        dataset.events, np.ones(len(dataset.events), bool), dataset.n_users
    )
    params = sequence_model.fit(
        sequences,
        dataset.n_items,
        sequence_model.network_shape(cfg),
        sequence_model.TrainingSettings(t.learning_rate, t.batch, cfg.model.seed),
        t.epochs,
    )
    return sequence_model.flat_params(params)
