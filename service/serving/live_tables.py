"""Popularity, trending and per-context popularity that take in new events within
``serving.tables_refresh_seconds`` (SPEC 4.2), the same in every process: each process reads the
events every process stored (`Store.new_events`) and adds them to the model's counts, so the
tables are those a rebuild would build from all the events (`sona_jax.model.tables`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor

from service.serving.periodic import every
from service.serving.runtime import Runtime
from service.storage import EventRow, Store
from sona_jax.data.stored import event_log
from sona_jax.model.tables import PopularityCounts, add_events, popularity_tables, resize_counts
from sona_jax.model.version import TrainedModel
from sona_jax.serve.engine import ServingEngine

log = logging.getLogger("sona.tables")
PENDING_ROUNDS = 3  # an event on an item this process has not seen yet waits this many refreshes


def model_event_watermark(model: TrainedModel) -> int:
    """The store watermark the model's events end at (0: the model did not come from it)."""
    return int(model.report.get("store", {}).get("event_watermark", 0))


class LiveTables:
    def __init__(self, store: Store, runtime: Runtime, executor: Executor, refresh_seconds: float):
        self.store, self.runtime, self.executor = store, runtime, executor
        self.refresh_seconds = refresh_seconds
        self.counts: PopularityCounts | None = None
        self.watermark = 0
        self.events_since_model = 0
        self.pending: list[tuple[int, EventRow]] = []
        self.revision = -1  # the engine catalogue revision the tables were made for
        self.task: asyncio.Task | None = None
        self.refreshed_at = 0.0
        self.on_events: Callable[[set[str]], None] | None = None  # viewers with new events

    async def prepared(self, engine: ServingEngine) -> ServingEngine:
        """``engine`` (not yet served) with its model's counts plus every event since."""
        self.counts = engine.model.popularity
        self.watermark = model_event_watermark(engine.model)
        self.events_since_model, self.pending, self.revision = 0, [], -1
        return await self._take_in(engine)

    async def _take_in(self, engine: ServingEngine) -> ServingEngine:
        events, watermark = await self.store.new_events(self.watermark)
        if events and self.on_events is not None:
            self.on_events({e.user_id for e in events})
        waiting = [e for _, e in self.pending]
        if not events and not waiting and engine.revision == self.revision:
            return engine
        known = engine.item_index
        usable = [e for e in waiting + events if e.content_id in known]
        self.pending = [
            (rounds + 1, e)
            for rounds, e in self.pending + [(0, e) for e in events]
            if e.content_id not in known and rounds + 1 < PENDING_ROUNDS
        ]
        self.events_since_model += len(events)
        self.watermark = watermark
        cfg = self.runtime.cfg

        def rebuilt() -> ServingEngine:
            log_, _ = event_log(usable, known)
            counts = add_events(resize_counts(self.counts, engine.capacity), log_, time.time(), cfg)
            self.counts = counts
            tables = popularity_tables(counts, cfg, engine.item_valid)
            # Catalogue writes alone (no events) change no count: cold viewers' candidates
            # stay (new items get their own slots, deleted ones are masked per request).
            return engine.with_popularity(tables, counted=bool(usable))

        engine = await asyncio.get_running_loop().run_in_executor(self.executor, rebuilt)
        self.revision = engine.revision
        self.refreshed_at = time.time()
        return engine

    async def refresh(self) -> None:
        """Take in the events stored since the last refresh, in the served engine."""
        async with self.runtime.writer:
            engine = await self._take_in(self.runtime.engine)
            if engine is not self.runtime.engine:
                self.runtime.publish(engine)

    def start(self) -> None:
        self.task = every(self.refresh_seconds, self.refresh, "table refresh", log)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
