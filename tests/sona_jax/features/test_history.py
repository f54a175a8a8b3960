"""History tables: a viewer's recent engaged items, newest first."""

from __future__ import annotations

import numpy as np

from sona_jax.data.schema import EventLog
from sona_jax.features.history import newest_first, recent_engaged


def test_same_second_events_put_the_later_logged_first():
    """Newest first by time; within a second the log's later event first, the one the log
    (and P1's split) ends with; not-engaged events (weight 0) left out."""
    user = np.array([0, 0, 0, 0, 1, 1])
    item = np.array([5, 7, 8, 9, 2, 3])
    timestamp = np.array([10.0, 20.0, 20.0, 20.0, 5.0, 5.0])
    weights = np.array([1.0, 1.0, 0.0, 1.0, 1.0, 1.0], np.float32)
    log = EventLog.build(user, item, timestamp, np.ones(len(user)))
    items, values = recent_engaged(log, weights, 2, 4)
    np.testing.assert_array_equal(items, [[9, 7, 5, -1], [3, 2, -1, -1]])
    np.testing.assert_allclose(values[0, :3], 1.0)
    key = newest_first(timestamp)
    assert len(set(key.tolist())) == len(key)  # no ties left
    np.testing.assert_array_equal(np.argsort(key)[:2], [3, 2])
