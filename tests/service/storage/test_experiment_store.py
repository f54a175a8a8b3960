"""Experiments in the store (issue 15), on SQLite and the real PostgreSQL: names are unique,
status changes are compare-and-set, and the attribution query counts a view for a list when it
carries the list's id or falls in the window after it, once, on a listed item of its viewer."""

from __future__ import annotations

import uuid

import pytest

from service.storage import EventRow, ExperimentRecord, ExposureRow

pytestmark = pytest.mark.asyncio(loop_scope="function")
HOUR = 3600.0


def _record(name: str) -> ExperimentRecord:
    variants = [{"name": "control", "traffic": 0.5, "config": {}}, {"name": "b", "traffic": 0.5}]
    return ExperimentRecord(
        str(uuid.uuid4()), name, "salt", "running", {"variants": variants}, 1.0, 1.0
    )


async def test_experiments_round_trip_with_unique_names_and_checked_status(store):
    record = _record("weights")
    assert await store.create_experiment(record)
    assert not await store.create_experiment(_record("weights"))  # the name is taken
    assert await store.experiment(record.experiment_id) == record
    assert [r.experiment_id for r in await store.experiments()] == [record.experiment_id]
    assert await store.update_experiment(record.experiment_id, "shipped", "b", "running")
    assert not await store.update_experiment(record.experiment_id, "paused", None, "running")
    stored = await store.experiment(record.experiment_id)
    assert (stored.status, stored.shipped_variant) == ("shipped", "b")
    await store.record_looks(record.experiment_id, {"b": {"min_p": 0.2}})
    assert (await store.experiment(record.experiment_id)).looks == {"b": {"min_p": 0.2}}


async def test_attribution_by_id_and_by_window(store):
    record = _record("attribution")
    await store.create_experiment(record)
    eid = record.experiment_id
    a, b, c, d = (str(uuid.uuid4()) for _ in range(4))  # viewers
    x, y, z = (str(uuid.uuid4()) for _ in range(3))  # items
    t = 1_000_000.0
    lists = {name: str(uuid.uuid4()) for name in ("a1", "a2", "b1", "c1", "d1")}
    await store.add_exposures(
        [
            ExposureRow(lists["a1"], eid, 0, a, t, (x, y)),
            ExposureRow(lists["a2"], eid, 0, a, t + 10, (x, z)),  # x again: counted once
            ExposureRow(lists["b1"], eid, 0, b, t, (x,)),
            ExposureRow(lists["c1"], eid, 1, c, t, (x, y)),
            ExposureRow(lists["d1"], eid, 1, d, t, (y,)),
        ]
    )
    await store.add_events(
        [
            EventRow(a, x, t + 60, 0.95),  # by window (two lists): one view
            EventRow(b, x, t + 2 * HOUR, 0.5, recommendation_id=lists["b1"]),  # by id, late
            EventRow(b, y, t + 60, 1.0),  # not in b's list: no
            EventRow(c, y, t + 2 * HOUR, 1.0),  # past the window, no id: no
            EventRow(c, x, t + 30, 0.0, dismissed=True),  # a dismissal
            EventRow(d, y, t - 60, 1.0),  # before the list: no
        ]
    )
    counts = {c.variant: c for c in await store.experiment_counts(eid, HOUR, 0.9)}
    control, variant = counts[0], counts[1]
    assert (control.users, control.lists, variant.users, variant.lists) == (2, 3, 2, 2)
    assert (control.clicked_users, control.completed_users, control.views) == (2, 1, 2)
    assert control.completion_sum == pytest.approx(1.45)
    assert (variant.clicked_users, variant.views, variant.dismissals) == (0, 0, 1)
    assert variant.dismissing_users == 1 and control.dismissals == 0


async def test_an_items_daily_views_over_its_latest_days(store):
    """The console's item chart: views per UTC day of one item, only within the window up to
    its own latest view; other items' views do not count."""
    item, other, viewer = (str(uuid.uuid4()) for _ in range(3))
    day = 86_400.0
    first = 20_000 * day  # a day boundary (days since the epoch: 20,000)
    await store.add_events(
        [
            EventRow(viewer, item, first - 30 * day + 5, 1.0),  # before the window
            EventRow(viewer, item, first + 10, 1.0),
            EventRow(str(uuid.uuid4()), item, first + day - 1, 0.5),
            EventRow(viewer, item, first + 2 * day + 7, 1.0),
            EventRow(viewer, other, first + day + 3, 1.0),
        ]
    )
    assert await store.item_daily_views(item, 10) == [(20_000, 2), (20_002, 1)]
    assert await store.item_daily_views(item, 40) == [(19_970, 1), (20_000, 2), (20_002, 1)]
    assert await store.item_daily_views(str(uuid.uuid4()), 10) == []
