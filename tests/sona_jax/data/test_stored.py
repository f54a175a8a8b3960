"""The one conversion from stored events: training from the store and serving a viewer bin a
stored event the same way (an event without time_of_day by its timestamp's hour)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import numpy as np

from service.learning.versions import dataset_from_snapshot
from service.storage import ContentRow, EventRow
from service.storage.sqlite import SQLiteStore
from sona_jax.config import SonaConfig
from sona_jax.data.schema import DEVICE_TYPES, TIMES_OF_DAY
from sona_jax.data.stored import event_log
from sona_jax.model.train import train_model
from sona_jax.serve.engine import ServingEngine
from sona_jax.serve.viewers import viewer_profile

CFG = SonaConfig().with_overrides({"model": {"embedding_dim": 16}, "lora": {"rank": 2}})


def _ts(hour: int, day: int = 3) -> float:
    return datetime(2026, 11, day, hour, 5, tzinfo=UTC).timestamp()


def _events(user: str, items: list[str]) -> list[EventRow]:
    hours = [21, 8, 14, 2, 21, 9]  # evening, morning, afternoon, night, ...
    return [
        EventRow(user, item, _ts(hours[i % 6], 1 + i), 0.9, None, False, False, None, None)
        for i, item in enumerate(items)
    ] + [EventRow(user, items[0], _ts(21, 28), 0.9, 5, True, False, "tv", "morning")]


def test_conversion_bins_missing_context_by_the_hour():
    items = {"a": 0, "b": 1}
    records = _events("u", ["a", "b", "zzz"])  # zzz: not catalogued, left out
    log, users = event_log(records, items)
    assert users == ["u"] and len(log) == 3
    assert [TIMES_OF_DAY[t] for t in log.time_of_day] == ["evening", "morning", "morning"]
    assert [DEVICE_TYPES[d] if d >= 0 else None for d in log.device] == [None, None, "tv"]
    rows, _ = event_log(records, items, {"other": 0})
    assert len(rows) == 0  # only the named users


def test_training_from_the_store_and_serving_share_the_bins(tmp_path):
    content = [ContentRow(str(uuid.uuid4()), f"t{i}", ["Drama"] if i % 2 else []) for i in range(8)]
    ids = [c.content_id for c in content]
    viewers = [str(uuid.uuid4()) for _ in range(4)]
    stored = [e for v in viewers for e in _events(v, ids[:6])]

    async def from_store():
        store = SQLiteStore(tmp_path / "sona.db")
        await store.open()
        await store.upsert_content(content)
        await store.add_events(stored)
        try:
            return dataset_from_snapshot(
                await store.training_snapshot(), CFG.model.embedding_dim
            ), await store.user_events(viewers[0])
        finally:
            await store.close()

    dataset, first_viewer = asyncio.run(from_store())
    trained_bins = dataset.events.time_of_day[dataset.events.user == 0]
    expected = [TIMES_OF_DAY.index(t) for t in ("evening", "morning", "afternoon", "night")]
    assert set(expected) <= set(trained_bins.tolist())  # never all "morning"
    model = train_model(dataset, CFG)
    engine = ServingEngine.load(model)
    served, _ = event_log(first_viewer, engine.item_index)
    assert sorted(served.time_of_day.tolist()) == sorted(trained_bins.tolist())
    # The served profile comes from that same log through the same builder as training's.
    row = engine.user_index[viewers[0]]
    profile = viewer_profile(engine, viewers[0], first_viewer, None, 0.0, model.reference_time)
    assert profile.events == len(first_viewer) == model.users.interaction_count[row]
    np.testing.assert_allclose(profile.preference, model.users.preference[row], atol=1e-6)
    np.testing.assert_allclose(profile.hourly, model.users.hourly[row], atol=1e-7)
