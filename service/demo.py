"""Demo data into an empty store, and training a model version from whatever the store holds."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import numpy as np

from service.model_store import load_model, next_version, save_model
from service.storage import ContentRow, EventRow, Store
from sona_jax.config import SonaConfig
from sona_jax.datasets import TIMES_OF_DAY, Catalogue, Dataset, EventLog, load_dataset
from sona_jax.datasets.schema import DEVICE_TYPES
from sona_jax.model import TrainedModel
from sona_jax.pipeline import train_model

log = logging.getLogger("sona.demo")


def dataset_rows(dataset: Dataset) -> tuple[list[ContentRow], list[EventRow]]:
    """A dataset as store rows."""
    cat = dataset.catalogue
    content = []
    for i, content_id in enumerate(cat.item_ids.tolist()):
        genres = [g for g, flag in zip(cat.genre_names, cat.genres[i], strict=True) if flag]
        moods = (
            [m for m, flag in zip(cat.mood_names, cat.moods[i], strict=True) if flag]
            if cat.moods is not None
            else []
        )
        duration = float(cat.duration_minutes[i])
        year = float(cat.release_year[i])
        series = int(cat.series[i]) if cat.series is not None else -1
        content.append(
            ContentRow(
                str(content_id),
                str(cat.titles[i]),
                genres,
                None if np.isnan(duration) else duration,
                None if np.isnan(year) else int(year),
                moods,
                f"series-{series}" if series >= 0 else None,
            )
        )
    ev = dataset.events
    users, items = dataset.user_ids, cat.item_ids
    events = [
        EventRow(
            str(users[u]),
            str(items[i]),
            float(ts),
            float(c),
            int(r) or None,
            bool(rw),
            bool(d),
            DEVICE_TYPES[dv] if dv >= 0 else None,
            TIMES_OF_DAY[td] if td >= 0 else None,
        )
        for u, i, ts, c, r, rw, d, dv, td in zip(
            ev.user.tolist(),
            ev.item.tolist(),
            ev.timestamp.tolist(),
            ev.completion.tolist(),
            ev.rating.tolist(),
            ev.rewatch.tolist(),
            ev.dismissed.tolist(),
            ev.device.tolist(),
            ev.time_of_day.tolist(),
            strict=True,
        )
    ]
    return content, events


async def seed_store(
    store: Store, kind: str, path: str | None, users: int, items: int, seed: int = 0
) -> bool:
    """Load demo data into the store when it has no content yet; True if it did."""
    if await store.list_content(1, None):
        return False
    dataset = (
        load_dataset("synthetic", n_users=users, n_items=items, seed=seed)
        if kind == "synthetic"
        else load_dataset(kind, path)
    )
    content, events = dataset_rows(dataset)
    for start in range(0, len(content), 1000):
        await store.upsert_content(content[start : start + 1000])
    for start in range(0, len(events), 20_000):
        await store.add_events(events[start : start + 20_000])
    log.info("demo: stored %d items and %d events (%s)", len(content), len(events), kind)
    return True


async def dataset_from_store(store: Store, dim: int) -> Dataset:
    """Everything in the store as a Dataset (users and items indexed in first-seen order)."""
    content, cursor = [], None
    while page := await store.list_content(1000, cursor):
        content += page
        cursor = page[-1].content_id
    genre_names = sorted({g for c in content for g in c.genres})
    mood_names = sorted({m for c in content for m in c.moods})
    index = {c.content_id: i for i, c in enumerate(content)}
    genres = np.zeros((len(content), len(genre_names)), np.float32)
    moods = np.zeros((len(content), len(mood_names)), np.float32)
    embeddings = np.zeros((len(content), dim), np.float32)
    has_embedding = np.zeros(len(content), bool)
    for i, c in enumerate(content):
        genres[i, [genre_names.index(g) for g in c.genres]] = 1.0
        moods[i, [mood_names.index(m) for m in c.moods]] = 1.0
        if c.embedding is not None and len(c.embedding) == 4 * dim:
            embeddings[i] = np.frombuffer(c.embedding, np.float32)
            has_embedding[i] = True
    catalogue = Catalogue(
        item_ids=np.array([c.content_id for c in content]),
        titles=np.array([c.title for c in content], dtype=object),
        genre_names=tuple(genre_names),
        genres=genres,
        duration_minutes=np.array(
            [np.nan if c.duration_minutes is None else c.duration_minutes for c in content],
            np.float32,
        ),
        release_year=np.array(
            [np.nan if c.release_year is None else c.release_year for c in content], np.float32
        ),
        mood_names=tuple(mood_names),
        moods=moods,
        embeddings=embeddings if has_embedding.any() else None,
        has_embedding=has_embedding if has_embedding.any() else None,
    )
    events = [e for e in await store.all_events() if e.content_id in index]
    user_ids = list(dict.fromkeys(e.user_id for e in events))
    user_index = {u: i for i, u in enumerate(user_ids)}
    log_ = EventLog.build(
        user=[user_index[e.user_id] for e in events],
        item=[index[e.content_id] for e in events],
        timestamp=[e.ts for e in events],
        completion=[e.completion_rate for e in events],
        rating=[e.rating or 0 for e in events],
        dismissed=[e.dismissed for e in events],
        rewatch=[e.is_rewatch for e in events],
        device=[
            DEVICE_TYPES.index(e.device_type) if e.device_type in DEVICE_TYPES else -1
            for e in events
        ],
        time_of_day=[
            TIMES_OF_DAY.index(e.time_of_day) if e.time_of_day in TIMES_OF_DAY else 0
            for e in events
        ],
    )
    return Dataset("store", catalogue, np.array(user_ids, dtype=object), log_)


async def train_from_store(
    store: Store, cfg: SonaConfig, model_dir: Path, now: float | None = None
) -> TrainedModel:
    """Train a new model version on the store's data, save it, and record it in the store."""
    dataset = await dataset_from_store(store, cfg.model.embedding_dim)
    if len(dataset.events) == 0 or dataset.n_items < 2:
        raise RuntimeError(
            "the store has no events to train on: post content and viewing "
            "events first, or start with --demo"
        )
    model = train_model(dataset, cfg, version=next_version(model_dir), now=now)
    folder = save_model(model, model_dir)
    await store.record_model_version(
        model.version, str(folder), json.dumps(model.report, default=float)
    )
    return model


async def latest_model(store: Store, model_dir: Path) -> TrainedModel | None:
    """The newest recorded model version whose files exist here."""
    found = await store.latest_model_version()
    if found is None:
        return None
    version, folder = found
    folder_path = Path(folder)
    try:
        return load_model(folder_path.parent, version)
    except FileNotFoundError:
        log.warning("model version %d recorded at %s but not found", version, folder)
        return None


def new_request_seed() -> int:
    """A seed for one request's exploration draws (not a secret: no system entropy per call,
    which cost 7 % of the event loop's time at saturation)."""
    return random.getrandbits(31)
