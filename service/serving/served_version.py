"""One model version as served: its `Runtime`, the catalogue and popularity tables kept current
(`CatalogueSync`, `LiveTables`), its viewers' profiles and its list and score batchers. The
default version and every experiment arm's version are one of these; the default swaps model
versions in place, an arm's never changes."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial

from service.serving.admission import Stage
from service.serving.batcher import MicroBatcher, serving_batcher
from service.serving.cache import Cache
from service.serving.catalogue_sync import CatalogueSync
from service.serving.compile_child import ChildCompiler
from service.serving.live_tables import LiveTables
from service.serving.profiles import Profiles
from service.serving.runtime import Runtime
from service.settings import ServingSettings
from service.storage import Store
from sona_jax.config import SonaConfig
from sona_jax.model.version import TrainedModel
from sona_jax.serve.programs import ProgramLibrary

log = logging.getLogger("sona")


@dataclass(frozen=True)
class ServingParts:
    """What every served version of a process shares: storage, cache, engine threads, the
    served config and settings, program sets (``child``: compiles capacity steps in a child
    process, None: in this one), the profile-lookup admission stage and ``on_batch(batcher
    name, size, seconds)`` after each engine call."""

    store: Store
    cache: Cache
    executor: Executor
    cfg: SonaConfig
    serving: ServingSettings
    library: ProgramLibrary
    lookups: Stage
    child: ChildCompiler | None = None
    on_batch: Callable[[str, int, float], None] | None = None


class ServedVersion:
    """A model version's runtime, catalogue, tables, profiles and batchers; `serve` brings a
    model up (and, for the default, swaps the next one in)."""

    def __init__(
        self,
        parts: ServingParts,
        namespace: str = "",
        prepare_next: bool = False,
        swap_prepared_profiles: int = 0,
        check_first_reads: bool = False,
    ):
        """``namespace``: its profiles' cache keys (an arm's: its own); ``prepare_next``: keep
        the next catalogue capacity compiled ahead of need (the default's); profiles of the
        ``swap_prepared_profiles`` most recent viewers are rebuilt before a swap; an arm's
        profiles check each viewer's first read against the store (``check_first_reads``)."""
        serving = parts.serving
        self.parts = parts
        self.runtime = Runtime(None, parts.cfg, serving, parts.library)
        self.catalogue = CatalogueSync(
            parts.store,
            self.runtime,
            parts.executor,
            serving.catalogue_poll_seconds,
            prepare_next=prepare_next,
            compile_first=serving.warm_up,
            rate_window=serving.capacity_rate_window_seconds,
            compile_guess=serving.capacity_compile_guess_seconds,
            child=parts.child,
        )
        self.tables = LiveTables(
            parts.store, self.runtime, parts.executor, serving.tables_refresh_seconds
        )
        self.profiles = Profiles(
            parts.store,
            parts.cache,
            self.runtime,
            parts.executor,
            serving,
            parts.lookups,
            swap_prepared_profiles,
            namespace,
            check_first_reads,
        )
        # Before the tables replay what came since the model: its viewers' profiles are checked.
        self.tables.on_events = self.profiles.written
        self.recommend: MicroBatcher | None = None
        self.score: MicroBatcher | None = None

    @property
    def serving(self) -> bool:
        """Whether a model version serves (its batchers run)."""
        return self.recommend is not None

    async def serve(
        self,
        model: TrainedModel,
        progress: Callable[[int, int], None] | None = None,
        alone: bool = False,
    ) -> None:
        """Serve ``model`` with the live catalogue and tables: the first one (then the
        batchers, catalogue feed and table refreshes start), or a swap (recent viewers'
        profiles rebuilt under it first). Everything heavy runs on an engine thread, so
        requests keep flowing; ``progress(done, total)`` as its programs compile. ``alone``:
        nothing else in the process serves yet, so its programs compile on every core."""
        parts, first = self.parts, not self.serving
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        async with self.runtime.writer:  # catalogue writes and refreshes wait for the swap
            engine = await loop.run_in_executor(parts.executor, self.runtime.prepare, model)
            prepared = time.perf_counter()
            engine, watermark = await self.catalogue.prepared(engine)
            engine = await self.tables.prepared(engine)
            # Recent viewers' profiles under the new version: their next requests hit the cache.
            profiles = [] if first else await self.profiles.prepared(engine)
            caught_up = time.perf_counter()
            threads = (os.cpu_count() or 1) if alone else 1
            await loop.run_in_executor(
                parts.executor, self.runtime.publish, engine, progress, threads, not alone
            )
            self.catalogue.watermark = watermark
            if profiles:
                await self.profiles.put_all(profiles)
        log.info(
            "model version %d served after %.2fs (arrays %.2fs, catalogue, tables and recent "
            "profiles %.2fs, compiling and publishing %.2fs)",
            model.version,
            time.perf_counter() - started,
            prepared - started,
            caught_up - prepared,
            time.perf_counter() - caught_up,
        )
        if first:
            self._start()

    def _start(self) -> None:
        parts = self.parts
        on_batch = parts.on_batch
        self.recommend, self.score = (
            serving_batcher(
                name, fn, parts.serving, None if on_batch is None else partial(on_batch, name)
            )
            for name, fn in (
                ("recommend", self.runtime.recommend_batch),
                ("score", self.runtime.score_batch),
            )
        )
        self.catalogue.start()
        self.tables.start()

    async def stop(self) -> None:
        """Stop the catalogue feed and table refreshes, then drain the batchers."""
        await self.catalogue.stop()
        await self.tables.stop()
        for batcher in (self.recommend, self.score):
            if batcher is not None:
                await batcher.drain()
