"""The one driver of adapter training (SPEC 3.2): `sona train` runs it over every eligible user,
the service's learner over the few users due; both in vmapped chunks of a bucketed size."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from sona_jax.buckets import bucket
from sona_jax.config import SonaConfig
from sona_jax.data.schema import EventLog
from sona_jax.model import lora
from sona_jax.model.training_data import (
    RecentEvents,
    engagement_targets,
    recent_events,
    with_negatives,
)
from sona_jax.model.version import STORAGE_DTYPE

Progress = Callable[[Iterable, str, int], Iterable]


def no_progress(iterable: Iterable, description: str, total: int) -> Iterable:
    """The default progress hook: the iterable unchanged."""
    return iterable


class AdapterTraining(NamedTuple):
    """adapters: (users, d, r) trained B_u (float16); loss_before / loss_after: (users,)
    masked BCE; events_used: (users,) events each user trained on."""

    adapters: np.ndarray
    loss_before: np.ndarray
    loss_after: np.ndarray
    events_used: np.ndarray


VIEWERS = "viewers"  # the mesh axis adapter training splits


def viewer_mesh(devices: int | None = None) -> Mesh:
    """A one-axis mesh (`VIEWERS`) over the first ``devices`` local devices (None: all)."""
    found = jax.devices()
    if devices is not None and not 1 <= devices <= len(found):
        raise ValueError(f"devices: {devices} asked for, {len(found)} available")
    return Mesh(np.array(found[: devices or len(found)]), (VIEWERS,))


def _placement(mesh: Mesh | None) -> Callable[[jax.Array], jax.Array]:
    """Put a (users, ...) array on ``mesh`` split by viewer (unchanged without a mesh)."""
    if mesh is None:
        return lambda x: x
    sharding = NamedSharding(mesh, PartitionSpec(VIEWERS))
    return lambda x: jax.device_put(x, sharding)


def train_adapters_of(
    base: lora.BaseTier,
    preferences: np.ndarray,
    adapters: np.ndarray,
    log: EventLog,
    rows: np.ndarray,
    cfg: SonaConfig,
    key: jax.Array,
    progress: Progress = no_progress,
    mesh: Mesh | None = None,
    in_place: bool = False,
    chunk_users: int | None = None,
    run: Callable | None = None,
) -> AdapterTraining:
    """Train the adapters of users ``rows`` (indices into ``preferences`` (users, d),
    ``adapters`` (users, d, r) and ``log.user``) on their most recent events.

    ``in_place``: write each trained adapter into its row of ``adapters`` and return none
    (``adapters`` of the result is (0, d, r)): a second (rows, d, r) copy was 8 GB at a
    million viewers. Safe because a chunk reads its rows before it writes them.

    Rows go through in chunks of at most ``lora.train_chunk_users`` (a power of two, the last
    chunk padded by repeating its last user), so any number of users compiles few programs.
    With a ``mesh`` (one axis, `VIEWERS`), every chunk is split over its devices by viewer and
    the base tier is replicated: each device trains its own viewers (no communication; the
    same numbers as one device). ``chunk_users``: that many users per chunk instead (the
    service's learner: one program); ``run(fn, args, static=...)`` runs each chunk's program
    (`train_chunk`; default: a plain jitted call).
    """
    lcfg = cfg.lora
    rows = np.asarray(rows, np.int64)
    dim, rank = preferences.shape[1], adapters.shape[2]
    out = AdapterTraining(
        np.zeros((0 if in_place else len(rows), dim, rank), STORAGE_DTYPE),
        np.zeros(len(rows), np.float32),
        np.zeros(len(rows), np.float32),
        np.zeros(len(rows), np.int32),
    )
    if len(rows) == 0:
        return out
    everyone = recent_events(log.user, log.item, log.timestamp, None, rows, lcfg.max_events)
    chunk = chunk_users or min(lcfg.train_chunk_users, bucket(len(rows)))
    place = _placement(mesh)
    if mesh is not None:
        chunk = max(chunk, mesh.size)  # every device gets a whole share
        base = jax.device_put(base, NamedSharding(mesh, PartitionSpec()))
    run = run or (lambda fn, args, static: fn(*args, **static))
    starts = range(0, len(rows), chunk)
    for start in progress(starts, "training adapters", len(starts)):
        take = np.minimum(np.arange(start, start + chunk), len(rows) - 1)  # pad: repeat last
        padded = rows[take]
        # Each slot's event (padding slots: a zero event past the end of the log).
        at = np.where(everyone.events[take] >= 0, everyone.events[take], len(log))
        trained, loss_before, loss_after, key = run(
            train_chunk,
            (
                base,
                place(np.asarray(preferences[padded], np.float32)),
                place(np.asarray(adapters[padded])),
                place(everyone.items[take]),
                place(_padded(log.completion, np.float32)[at]),
                place(_padded(log.rating, np.float32)[at]),
                place(_padded(log.dismissed, bool)[at]),
                place(everyone.mask[take]),
                key,
            ),
            static={"cfg": cfg},
        )
        real = slice(start, min(start + chunk, len(rows)))
        n = real.stop - real.start
        # Cut on the host: slicing a device array is an eager program of its own.
        trained_rows = np.asarray(trained)[:n].astype(STORAGE_DTYPE)
        if in_place:
            adapters[rows[real]] = trained_rows
        else:
            out.adapters[real] = trained_rows
        out.loss_before[real] = np.asarray(loss_before)[:n]
        out.loss_after[real] = np.asarray(loss_after)[:n]
    out.events_used[:] = np.minimum(everyone.counts, lcfg.max_events)
    return out


def _padded(column: np.ndarray, dtype) -> np.ndarray:
    """``column`` (events,) and one zero after it (what padding slots read)."""
    return np.append(np.asarray(column, dtype), np.zeros(1, dtype))


@partial(jax.jit, static_argnames=("cfg",))
def train_chunk(
    base: lora.BaseTier,
    preferences: jnp.ndarray,
    adapters: jnp.ndarray,
    items: jnp.ndarray,
    completion: jnp.ndarray,
    rating: jnp.ndarray,
    dismissed: jnp.ndarray,
    mask: jnp.ndarray,
    key: jax.Array,
    cfg: SonaConfig,
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray, jax.Array]:
    """One chunk of users' adapters trained in one program (SPEC 3.2): their recent events'
    targets, sampled negatives (drawn with a split of ``key``), the gathered training batch,
    ``lora.iterations`` steps and the update of B_u. preferences (users, d); adapters (users,
    d, r); items, completion, rating, dismissed, mask (users, max_events) as `RecentEvents`
    (newest first). Returns the trained adapters (users, d, r), the loss before / after
    (users,) and the key for the next chunk."""
    lcfg = cfg.lora
    key, sub = jax.random.split(key)
    targets = engagement_targets(completion, rating, dismissed, cfg.preference)
    recent = RecentEvents(items, targets, mask, None, None)
    n_items = base.item_embeddings.shape[0]
    items, item_targets, mask = with_negatives(sub, recent, n_items, lcfg)
    batch = lora.prepare_training_batch(base, preferences, adapters, items, item_targets, mask)
    result = lora.train_adapters(batch, lcfg)
    trained = lora.apply_adapter_updates(adapters, batch.preference, result.delta)
    return trained, result.loss_before, result.loss_after, key
