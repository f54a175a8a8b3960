"""The engine's view of events: a NamedTuple of flat jnp arrays, plus the host conversion."""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from sona_jax.data.schema import SECONDS_PER_DAY, SECONDS_PER_HOUR, EventLog


class Events(NamedTuple):
    """Flat event arrays, all shaped (events,).

    ``user`` values outside ``[0, n_users)`` mark padding: segment sums drop them.
    """

    user: jnp.ndarray  # int32
    item: jnp.ndarray  # int32
    age_days: jnp.ndarray  # float32, days before "now" (>= 0)
    completion: jnp.ndarray  # float32 in [0, 1]
    rating: jnp.ndarray  # float32, 0 = unrated, else 1..5
    dismissed: jnp.ndarray  # bool
    hour: jnp.ndarray  # int32 0..23 (UTC)
    weekday: jnp.ndarray  # int32 0..6, Monday = 0
    device: jnp.ndarray  # int32, -1 unknown
    time_of_day: jnp.ndarray  # int32 0..3


def engine_events(
    log: EventLog, now: float, pad_to: int | None = None, pad_user: int = -1
) -> Events:
    """Convert a host `EventLog` to `Events` relative to ``now`` (seconds since the epoch), on
    the device (`host_events` on the host).

    Args:
        pad_to: pad to this many rows (a bucketed size) with rows whose user is ``pad_user``
            (``-1`` or ``n_users``: dropped by segment sums) and zero completion.
    """
    return Events(*(jnp.asarray(column) for column in host_events(log, now, pad_to, pad_user)))


def host_events(log: EventLog, now: float, pad_to: int | None = None, pad_user: int = -1) -> Events:
    """`engine_events` as host numpy arrays (to be cut into steps before they go to the
    device)."""
    ts = np.asarray(log.timestamp, np.float64)
    seconds_of_day = np.mod(ts, SECONDS_PER_DAY)
    columns = dict(
        user=np.asarray(log.user, np.int32),
        item=np.asarray(log.item, np.int32),
        age_days=np.maximum(now - ts, 0.0).astype(np.float32) / np.float32(SECONDS_PER_DAY),
        completion=np.asarray(log.completion, np.float32),
        rating=np.asarray(log.rating, np.float32),
        dismissed=np.asarray(log.dismissed, bool),
        hour=(seconds_of_day // SECONDS_PER_HOUR).astype(np.int32),
        # 1970-01-01 was a Thursday (weekday 3 with Monday = 0).
        weekday=((np.floor(ts / SECONDS_PER_DAY).astype(np.int64) + 3) % 7).astype(np.int32),
        device=np.asarray(log.device, np.int32),
        time_of_day=np.asarray(log.time_of_day, np.int32),
    )
    n = len(columns["user"])
    if pad_to is not None and pad_to > n:
        for name, value in columns.items():
            fill = pad_user if name == "user" else 0
            columns[name] = np.concatenate([value, np.full(pad_to - n, fill, value.dtype)])
    return Events(**columns)
