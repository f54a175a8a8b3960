"""Model versions from the store (SPEC 4.1 ``--from-store``, 4.2 rebuilds): one trainer at a
time across every process and host, a consistent snapshot of the store as a dataset (through
the engine's one stored-record conversion), the new version packed into the database with its
checksum so every host can load it, older versions pruned; and loading the newest version,
from this host's folder or from the database.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import shutil
import tarfile
import time
from collections.abc import Collection
from pathlib import Path

import numpy as np

from service.experiments.live import named_model_versions
from service.storage import RebuildRecord, Store, TrainingSnapshot
from sona_jax.config import ConfigError, SonaConfig
from sona_jax.data import Dataset
from sona_jax.data.stored import catalogue, event_log
from sona_jax.model.version import TrainedModel
from sona_lab.model_store import ModelFormatError, load_model, model_versions, save_model
from sona_lab.training import train_timed

log = logging.getLogger("sona.training")


class TrainerBusy(RuntimeError):
    """Another process holds the trainer lock."""


class NothingToTrain(RuntimeError):
    """The store has no events (or fewer than two items) to train on."""


def dataset_from_snapshot(snapshot: TrainingSnapshot, dim: int) -> Dataset:
    """A store snapshot as a Dataset (items in slot order, users in first-seen order)."""
    items = catalogue(snapshot.content, dim)
    index = {c.content_id: i for i, c in enumerate(snapshot.content)}
    events, user_ids = event_log(snapshot.events, index)
    return Dataset("store", items, np.array(user_ids, dtype=object), events)


def pack_model(folder: Path) -> bytes:
    """A saved version folder as one uncompressed tar (the arrays are not compressible much):
    every file of it (either model format), the manifest last."""
    buffer = io.BytesIO()
    files = sorted(
        (path for path in folder.rglob("*") if path.is_file()),
        key=lambda path: (path.name == "manifest.json", str(path)),
    )
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in files:
            tar.add(path, arcname=f"{folder.name}/{path.relative_to(folder)}")
    return buffer.getvalue()


def unpack_model(artifact: bytes, root: Path) -> None:
    """Write a packed version under ``root`` (the manifest last, so a reader never sees half)."""
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(artifact), mode="r") as tar:
        members = sorted(tar.getmembers(), key=lambda m: m.name.endswith("manifest.json"))
        for member in members:
            target = root / member.name
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary = target.with_name(target.name + ".part")
            temporary.write_bytes(tar.extractfile(member).read())
            temporary.rename(target)


async def train_from_store(
    store: Store,
    cfg: SonaConfig,
    model_dir: Path,
    keep: int = 3,
    now: float | None = None,
    devices: int = 1,
) -> TrainedModel:
    """Train a new version on a snapshot of the store, save it here and in the store (with its
    checksum), prune all but the newest ``keep``, and record the rebuild; adapter training is
    split by viewer over ``devices`` local devices (`train_timed`).

    Raises `TrainerBusy` when another trainer holds the lock and `NothingToTrain` on an empty
    store. A trainer killed part-way records nothing: the previous version stays the newest.
    """
    async with store.trainer_lock() as held:
        if not held:
            raise TrainerBusy("another trainer is running (the store's trainer lock is held)")
        started = time.time()
        try:
            model = await _train_locked(store, cfg, model_dir, keep, now, devices)
        except NothingToTrain:
            raise
        except Exception as error:
            await store.record_rebuild(
                RebuildRecord(
                    started, time.time(), "failed", None, f"{type(error).__name__}: {error}"
                )
            )
            raise
        await store.record_rebuild(
            RebuildRecord(started, time.time(), "succeeded", model.version, "")
        )
        return model


async def _train_locked(
    store: Store, cfg: SonaConfig, model_dir: Path, keep: int, now: float | None, devices: int
) -> TrainedModel:
    snapshot = await store.training_snapshot()
    # Off the event loop: training held it for the whole fit (15 s at start-up for a small
    # demo here), so /health and /ready stopped answering.
    dataset = await asyncio.to_thread(dataset_from_snapshot, snapshot, cfg.model.embedding_dim)
    if len(dataset.events) == 0 or dataset.n_items < 2:
        raise NothingToTrain(
            "the store has no events to train on: post content and viewing "
            "events first, or start with --demo"
        )
    local = model_versions(model_dir)
    version = max(await store.next_model_version(), (local[-1] + 1) if local else 1)
    model = await asyncio.to_thread(
        train_timed, dataset, cfg, version=version, now=now, devices=devices
    )
    model.report["store"] = {
        "event_watermark": snapshot.event_watermark,
        "content_watermark": snapshot.content_watermark,
        "slot_watermark": snapshot.slot_watermark,
        "events": len(snapshot.events),
        "items": len(snapshot.content),
        "trained_at": time.time(),
    }
    folder = save_model(model, model_dir)
    await store.record_model_version(
        model.version, str(folder), json.dumps(model.report, default=float), pack_model(folder)
    )
    named = await experiment_model_versions(store)
    pruned = await store.prune_model_versions(keep, named)
    if pruned:
        log.info("pruned model versions %s", pruned)
    prune_local_versions(model_dir, keep, named)
    return model


async def experiment_model_versions(store: Store) -> set[int]:
    """The model versions experiments' variants name (kept past ``keep_versions``)."""
    return named_model_versions(await store.experiments())


def prune_local_versions(model_dir: Path, keep: int, spare: Collection[int] = ()) -> list[int]:
    """Delete all but the newest ``keep`` version folders of this host and those in ``spare``;
    returns those deleted."""
    old = model_versions(model_dir)[:-keep] if keep > 0 else []
    old = [version for version in old if version not in spare]
    for version in old:
        shutil.rmtree(Path(model_dir) / f"v{version:04d}", ignore_errors=True)
    return old


async def load_version(store: Store, version: int, model_dir: Path) -> TrainedModel | None:
    """Version ``version``: from this host's folder when it has it, else from the store's
    artefact (checked against its sha256, then kept here)."""
    if version in model_versions(model_dir):
        try:
            return await asyncio.to_thread(load_model, model_dir, version)
        except ModelFormatError as error:
            log.warning("model version %d not loadable: %s", version, error)
            return None
    record = await store.model_record(version)
    artifact = await store.model_artifact(version) if record is not None else None
    if artifact is None:
        log.warning("model version %d is recorded but its files are on no reachable disk", version)
        return None
    if record.sha256 and hashlib.sha256(artifact).hexdigest() != record.sha256:
        log.error("model version %d: artefact checksum mismatch, not loaded", version)
        return None
    await asyncio.to_thread(unpack_model, artifact, model_dir)
    try:
        return await asyncio.to_thread(load_model, model_dir, version)
    except ModelFormatError as error:
        log.warning("model version %d not loadable: %s", version, error)
        return None


async def servable_version(
    store: Store, version: int, model_dir: Path, cfg: SonaConfig
) -> tuple[TrainedModel | None, str]:
    """Version ``version`` when it loads and ``cfg`` (the served config) can serve it; else
    None and why not."""
    model = await load_version(store, version, model_dir)
    if model is None:
        return None, f"model version {version} is not in the store"
    try:
        cfg.check_trained_with(model.config, f"model version {version}")
    except ConfigError as error:
        return None, str(error)
    return model, ""


async def latest_model(store: Store, model_dir: Path) -> TrainedModel | None:
    """The newest recorded model version this code can load (None when there is none)."""
    found = await store.latest_model_version()
    if found is None:
        return None
    started = time.perf_counter()
    model = await load_version(store, found[0], model_dir)
    log.info("model version %d loaded in %.2fs", found[0], time.perf_counter() - started)
    return model
