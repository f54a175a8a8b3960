"""Model versions from the store: everything it holds as a dataset (through the engine's one
stored-record conversion), trained, saved and recorded; and the newest recorded version."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from service.storage import Store
from sona_jax.config import SonaConfig
from sona_jax.data import Dataset
from sona_jax.data.stored import catalogue, event_log
from sona_jax.model.version import TrainedModel
from sona_lab.model_store import ModelFormatError, load_model, next_version, save_model
from sona_lab.training import train_timed

log = logging.getLogger("sona.training")
CONTENT_PAGE = 1000  # items per store read


async def dataset_from_store(store: Store, dim: int) -> Dataset:
    """Everything in the store as a Dataset (users indexed in first-seen order)."""
    content, cursor = [], None
    while page := await store.list_content(CONTENT_PAGE, cursor):
        content += page
        cursor = page[-1].content_id
    items = catalogue(content, dim)
    index = {c.content_id: i for i, c in enumerate(content)}
    events, user_ids = event_log(await store.all_events(), index)
    return Dataset("store", items, np.array(user_ids, dtype=object), events)


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
    model = train_timed(dataset, cfg, version=next_version(model_dir), now=now)
    folder = save_model(model, model_dir)
    await store.record_model_version(
        model.version, str(folder), json.dumps(model.report, default=float)
    )
    return model


async def latest_model(store: Store) -> TrainedModel | None:
    """The newest recorded model version whose files exist here (and are of this format)."""
    found = await store.latest_model_version()
    if found is None:
        return None
    version, folder = found
    try:
        return load_model(Path(folder).parent, version)
    except FileNotFoundError:
        log.warning("model version %d recorded at %s but not found", version, folder)
    except ModelFormatError as error:
        log.warning("model version %d not loadable: %s", version, error)
    return None
