"""Stored model versions that experiment variants serve beside the default (issue 15).

Each version named by a running experiment gets what the default has: a `Runtime` of its own
with the live catalogue and popularity tables (`CatalogueSync`, `LiveTables`), its viewers'
profiles under keys of their own, and a recommendation batcher. A version is brought up in the
background when an experiment starts naming it and let go when none does; until it serves, its
viewers are served as if they were not in that experiment, and nothing is counted for it.

A version whose catalogue and config agree with the default's has the same array shapes, so
JAX's caches hold its programs already; one trained under other shapes (a transformer source, a
larger catalogue) compiles its own. How many versions may be live at once is capped when an
experiment is created (``serving.max_variant_models``), which bounds both programs and memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import NamedTuple

from service.learning.versions import servable_version
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
from sona_jax.serve.programs import ProgramLibrary

log = logging.getLogger("sona.model_arms")
# A request that picked an arm just before it was let go still finishes on it (its profile
# lookup and engine call take milliseconds); the arm stops this long after.
RETIRE_AFTER_SECONDS = 5.0


class Served(NamedTuple):
    """What answers a viewer's requests under one model version: the runtime, its profiles and
    its list and score batchers."""

    runtime: Runtime
    profiles: Profiles
    recommend: MicroBatcher
    score: MicroBatcher


@dataclass
class ModelArm:
    """One model version served beside the default, with the parts that keep it current."""

    served: Served
    catalogue: CatalogueSync
    tables: LiveTables

    async def stop(self) -> None:
        await self.catalogue.stop()
        await self.tables.stop()
        await self.served.recommend.drain()
        await self.served.score.drain()


class ModelArms:
    """The model versions this process serves for experiments, by version."""

    def __init__(
        self,
        store: Store,
        cache: Cache,
        executor: Executor,
        cfg: SonaConfig,
        serving: ServingSettings,
        model_dir: Path,
        lookups: Stage,
        on_batch: Callable[[str, int, float], None] | None = None,
        library: ProgramLibrary | None = None,
        child: ChildCompiler | None = None,
    ) -> None:
        """``library``: the process's program sets (an arm of the default's shapes runs on the
        default's programs); ``on_batch(batcher name, size, seconds)`` after each engine call."""
        self.library = library or ProgramLibrary(serving.served_shapes())
        self.store, self.cache, self.executor = store, cache, executor
        self.cfg, self.serving, self.model_dir = cfg, serving, model_dir
        self.lookups, self.on_batch, self.child = lookups, on_batch, child
        self.live: dict[int, ModelArm] = {}
        self.failed: dict[int, tuple[str, float]] = {}  # version -> (why, when: monotonic s)
        self.wanted: frozenset[int] = frozenset()
        self.closed = False
        self._loading: dict[int, asyncio.Task] = {}
        self._retiring: set[asyncio.Task] = set()

    def serving_version(self, version: int) -> Served | None:
        """What serves ``version`` here (None: not live, still loading or failed)."""
        arm = self.live.get(version)
        return None if arm is None else arm.served

    def status(self, version: int) -> str:
        """``serving``, ``loading``, ``failed: why`` or ``idle`` (no running experiment names it)."""
        if version in self.live:
            return "serving"
        if version in self._loading:
            return "loading"
        if version in self.failed:
            return f"failed: {self.failed[version][0]}"
        return "idle"

    def want(self, versions: frozenset[int]) -> None:
        """Serve exactly ``versions``: bring up the new ones in the background (one that
        failed, again after ``serving.model_poll_seconds``), let go of the others (requests
        that picked them finish first). Called at every experiments refresh."""
        if self.closed:
            return
        self.wanted = versions
        loop, now = asyncio.get_running_loop(), time.monotonic()
        for version in sorted(versions - self.live.keys() - self._loading.keys()):
            failed = self.failed.get(version)
            if failed is not None and now - failed[1] < self.serving.model_poll_seconds:
                continue
            self._loading[version] = loop.create_task(
                self._bring_up(version), name=f"model arm v{version}"
            )
        for version in [v for v in self._loading if v not in versions]:
            self._loading.pop(version).cancel()
        for version in [v for v in self.live if v not in versions]:
            task = loop.create_task(self._retire(self.live.pop(version)), name=f"retire v{version}")
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def _retire(self, arm: ModelArm) -> None:
        try:
            await asyncio.sleep(RETIRE_AFTER_SECONDS)
        finally:  # at shutdown too
            await arm.stop()

    def written(self, user_ids: Iterable[str]) -> None:
        """This process wrote ``user_ids``' events or adapters: every arm checks their cached
        profiles against the store before using them again."""
        user_ids = tuple(user_ids)
        for arm in self.live.values():
            arm.served.profiles.written(user_ids)

    async def catalogue_written(self, content_ids: list[str]) -> None:
        """This process wrote ``content_ids``: every arm serves them before it is acknowledged."""
        for arm in list(self.live.values()):
            await arm.catalogue.write(content_ids)

    async def _bring_up(self, version: int) -> None:
        try:
            arm = await self._arm(version)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a version pruned meanwhile, a config it cannot serve under
            log.error("model version %d not served for experiments: %s", version, error)
            self.failed[version] = (str(error), time.monotonic())
            return
        finally:
            if self._loading.get(version) is asyncio.current_task():  # not a newer bring-up's
                del self._loading[version]
        if version in self.wanted and version not in self.live and not self.closed:
            self.failed.pop(version, None)
            self.live[version] = arm
            log.info("model version %d serves experiment variants", version)
        else:
            await arm.stop()

    async def _arm(self, version: int) -> ModelArm:
        model, why = await servable_version(self.store, version, self.model_dir, self.cfg)
        if model is None:
            raise LookupError(why)
        runtime = Runtime(None, self.cfg, self.serving, self.library)
        serving, executor = self.serving, self.executor
        catalogue = CatalogueSync(
            self.store,
            runtime,
            executor,
            serving.catalogue_poll_seconds,
            compile_first=serving.warm_up,
            rate_window=serving.capacity_rate_window_seconds,
            compile_guess=serving.capacity_compile_guess_seconds,
            child=self.child,
        )
        tables = LiveTables(self.store, runtime, executor, serving.tables_refresh_seconds)
        profiles = Profiles(
            self.store,
            self.cache,
            runtime,
            executor,
            serving.profile_ttl_seconds,
            0,  # nothing to prepare: a version of an arm is never swapped
            serving.cache_max_entries,
            self.lookups,
            serving.max_wait_ms,
            namespace=f"m{version}:",
            check_first_reads=True,
        )
        tables.on_events = profiles.written  # before the tables replay what came since the model
        loop = asyncio.get_running_loop()
        engine = await loop.run_in_executor(executor, runtime.prepare, model)
        engine, watermark = await catalogue.prepared(engine)
        engine = await tables.prepared(engine)
        await loop.run_in_executor(executor, runtime.publish, engine, None)
        catalogue.watermark = watermark
        recommend, score = (
            serving_batcher(
                name, fn, serving, None if self.on_batch is None else partial(self.on_batch, name)
            )
            for name, fn in (("recommend", runtime.recommend_batch), ("score", runtime.score_batch))
        )
        catalogue.start()
        tables.start()
        return ModelArm(Served(runtime, profiles, recommend, score), catalogue, tables)

    async def stop(self) -> None:
        self.closed = True
        for task in list(self._loading.values()) + list(self._retiring):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for arm in list(self.live.values()):
            await arm.stop()
        self.live.clear()
