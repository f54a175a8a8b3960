"""Catalogue writes into the served engine (SPEC 4.2): this process's own writes before they are
acknowledged, other processes' within ``serving.catalogue_poll_seconds``, through the store's
change feed (`Store.content_changes`), so every process serves the same catalogue."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import Executor

from service.periodic import every
from service.runtime import Runtime
from service.storage import CatalogueEntry, Store
from sona_jax.serve.catalogue import CatalogueReport
from sona_jax.serve.engine import ServingEngine

log = logging.getLogger("sona.catalogue")


class CatalogueSync:
    def __init__(self, store: Store, runtime: Runtime, executor: Executor, poll_seconds: float):
        self.store, self.runtime, self.executor = store, runtime, executor
        self.poll_seconds = poll_seconds
        self.watermark = 0  # of the change feed, as applied to the served engine
        self.task: asyncio.Task | None = None

    async def _in_engine(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def prepared(self, engine: ServingEngine) -> tuple[ServingEngine, int]:
        """``engine`` (a model version not yet served) with the whole catalogue applied, and
        the feed's watermark it is current to."""
        entries, watermark = await self.store.content_changes(0)
        engine, report = await self._in_engine(engine.with_catalogue, entries)
        _log_report(report)
        return engine, watermark

    async def apply(self, entries: Sequence[CatalogueEntry]) -> CatalogueReport:
        """Serve ``entries`` now (compiled first when the item arrays had to grow)."""
        async with self.runtime.writer:
            return await self._apply_locked(entries)

    async def _apply_locked(self, entries: Sequence[CatalogueEntry]) -> CatalogueReport:
        def change() -> CatalogueReport:
            engine, report = self.runtime.engine.with_catalogue(entries)
            self.runtime.publish(engine)
            return report

        report = await self._in_engine(change)
        _log_report(report)
        return report

    async def write(self, content_ids: list[str]) -> CatalogueReport:
        """After this process wrote ``content_ids`` to the store: serve them before the write
        is acknowledged."""
        return await self.apply(await self.store.content_entries(content_ids))

    async def catch_up(self) -> None:
        """Apply what every process wrote since the last look."""
        async with self.runtime.writer:
            entries, watermark = await self.store.content_changes(self.watermark)
            if entries:
                await self._apply_locked(entries)
            self.watermark = watermark

    def start(self) -> None:
        self.task = every(self.poll_seconds, self.catch_up, "catalogue catch-up", log)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()


def _log_report(report: CatalogueReport) -> None:
    if report.unplaced:
        log.warning(
            "%d items arrived while the served model was reading the store: "
            "they are served from its next version",
            report.unplaced,
        )
