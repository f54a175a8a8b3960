"""The app's typed state and its lifecycle: open storage and cache, seed the demo, load (or train)
a model, start the batchers, the learner, the catalogue feed, the live tables and the rebuild
scheduler, watch for newer model versions and swap to them, and stop it all."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from quart import Quart, current_app

from service.errors import ApiError
from service.experiments.live import Experiments
from service.http.auth import KeyCheck
from service.learning.demo_data import seed_store
from service.learning.learner import Learner
from service.learning.rebuilds import RebuildScheduler
from service.learning.versions import (
    NothingToTrain,
    TrainerBusy,
    experiment_model_versions,
    latest_model,
    prune_local_versions,
    servable_version,
    train_from_store,
)
from service.metrics import Metrics
from service.serving.admission import Stage
from service.serving.batcher import MicroBatcher
from service.serving.cache import Cache, open_cache
from service.serving.candidates import CandidateCache
from service.serving.catalogue_sync import CatalogueSync
from service.serving.compile_child import ChildCompiler
from service.serving.heap import freeze_heap
from service.serving.live_tables import LiveTables
from service.serving.model_arms import ModelArms
from service.serving.periodic import every
from service.serving.profiles import Profiles
from service.serving.program_store import ProgramStore
from service.serving.runtime import COMPILATION_CACHE, Runtime, use_compilation_cache
from service.serving.served_version import ServedVersion, ServingParts
from service.settings import ServingSettings, Settings
from service.startup import Startup
from service.storage import RebuildRecord, Store, open_store
from sona_jax.config import ConfigError, SonaConfig
from sona_jax.model.version import TrainedModel
from sona_jax.serve.programs import ProgramLibrary

log = logging.getLogger("sona")
EXTENSION = "sona"
SAVED_PROGRAMS = "programs"  # under the compilation cache's folder


@dataclass
class AppState:
    """Everything a running app holds; the parts are None until `start` has made them."""

    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    store: Store | None = None
    cache: Cache | None = None
    executor: ThreadPoolExecutor | None = None
    library: ProgramLibrary | None = None  # the program sets of every served engine
    runtime: Runtime | None = None  # the default version's, once it serves
    default: ServedVersion | None = None  # the default version (serving once `runtime` is set)
    child_compiler: ChildCompiler | None = None  # None: capacities compile in this process
    candidates: CandidateCache | None = None
    learner: Learner | None = None
    rebuilds: RebuildScheduler | None = None
    experiments: Experiments | None = None
    model_arms: ModelArms | None = None
    watcher: asyncio.Task | None = None
    last_rebuild: RebuildRecord | None = None
    startup: Startup = field(default_factory=lambda: Startup())
    lookups: Stage = field(default_factory=lambda: Stage("the profile lookup"))
    bringing_up: asyncio.Task | None = None
    swapping: asyncio.Lock = field(default_factory=asyncio.Lock)
    unservable_pin: int | None = None  # a pinned version found unservable (not tried again)
    background: set[asyncio.Task] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.keys = KeyCheck(self.settings.api_keys, self.settings.admin_keys)

    @property
    def served(self) -> ServedVersion | None:
        """The default version once it serves (None before)."""
        return self.default if self.runtime is not None else None

    @property
    def profiles(self) -> Profiles | None:
        return None if self.served is None else self.served.profiles

    @property
    def catalogue(self) -> CatalogueSync | None:
        return None if self.served is None else self.served.catalogue

    @property
    def tables(self) -> LiveTables | None:
        return None if self.served is None else self.served.tables

    @property
    def recommend(self) -> MicroBatcher | None:
        return None if self.served is None else self.served.recommend

    @property
    def score(self) -> MicroBatcher | None:
        return None if self.served is None else self.served.score

    @property
    def cfg(self) -> SonaConfig:
        return self.settings.config

    @property
    def serving(self) -> ServingSettings:
        return self.settings.serving

    def engine(self) -> Runtime:
        """The runtime, or a 503 while no model is loaded."""
        if self.runtime is None:
            raise ApiError(
                503,
                "model_not_ready",
                "no model is loaded yet: post content and "
                "events, then run `sona train` or start with --demo",
                headers={"Retry-After": "10"},
            )
        return self.runtime

    def serves(self, model_version: int) -> bool:
        """Whether this process serves ``model_version`` now (the default or a variant's)."""
        return (
            self.runtime is not None and model_version == self.runtime.version
        ) or self.model_arms.serving_version(model_version) is not None

    def served_by(self, model_version: int | None) -> ServedVersion:
        """What answers for ``model_version`` (None, or one no longer served: the default)."""
        runtime = self.engine()
        if model_version is None or model_version == runtime.version:
            return self.served
        return self.model_arms.serving_version(model_version) or self.served

    # ---- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Open storage and cache, then bring the engine up in the background: `/health`
        answers at once, `/ready` says what start-up is doing until the engine can answer."""
        settings, serving = self.settings, self.serving
        if not settings.api_keys:
            log.warning("SONA_API_KEYS is not set: the API accepts unauthenticated requests")
        self.library = ProgramLibrary(serving.served_shapes())
        if serving.compilation_cache:
            folder = (
                Path(serving.compilation_cache_dir)
                if serving.compilation_cache_dir
                else settings.data_dir / COMPILATION_CACHE
            )
            use_compilation_cache(folder, serving.compilation_cache_mb)
            ProgramStore(folder / SAVED_PROGRAMS, serving.saved_programs).attach(self.library)
            if serving.compile_in_child and serving.saved_programs > 0:
                self.child_compiler = ChildCompiler(
                    settings.model_dir,
                    folder / SAVED_PROGRAMS,
                    serving.saved_programs,
                    serving.compile_child_timeout_seconds,
                )
        self.store = open_store(settings.database_url, settings.data_dir)
        await self.store.open()
        self.cache = open_cache(
            settings.redis_url, serving.cache_max_entries, serving.recommendation_ttl_seconds or 1
        )
        self.executor = ThreadPoolExecutor(
            max_workers=serving.engine_threads, thread_name_prefix="sona-engine"
        )
        self.experiments = Experiments(
            self.store, self.cfg, serving.experiments_poll_seconds, serving.exposure_flush_seconds
        )
        parts = ServingParts(
            self.store,
            self.cache,
            self.executor,
            self.cfg,
            serving,
            self.library,
            self.lookups,
            self.child_compiler,
            self.metrics.observe_batch,
        )
        self.default = ServedVersion(
            parts,
            prepare_next=serving.prepare_next_capacity,
            swap_prepared_profiles=serving.swap_prepared_profiles,
        )
        self.model_arms = ModelArms(
            parts, partial(servable_version, self.store, model_dir=settings.model_dir, cfg=self.cfg)
        )
        self.experiments.on_models = self.model_arms.want
        await self.experiments.refresh()
        self.experiments.start()
        self.bringing_up = asyncio.get_running_loop().create_task(self._bring_up(), name="start-up")

    async def started(self) -> None:
        """Wait until start-up has brought the engine up (or failed)."""
        if self.bringing_up is not None:
            await asyncio.shield(self.bringing_up)

    async def _bring_up(self) -> None:
        try:
            await self._bring_up_engine()
        except Exception as error:  # a model this config cannot serve, a broken store: stop
            log.critical("start-up failed: %s; stopping", error, exc_info=error)
            self.startup.failed(str(error))
            os.kill(os.getpid(), signal.SIGTERM)

    async def _bring_up_engine(self) -> None:
        settings, startup = self.settings, self.startup
        if settings.demo:
            startup.begin("seeding demo data")
            await seed_store(
                self.store,
                settings.demo,
                settings.demo_path,
                settings.demo_users,
                settings.demo_items,
                self.cfg.model.seed,
                progress=startup.advance,
            )
        startup.begin("loading the latest model version (or a shipped variant's)")
        model = await self._pinned_model()
        if model is None:  # nothing pinned, or a pinned version it cannot serve: the newest
            model = await latest_model(self.store, settings.model_dir)
        if model is None and await self.store.count_events() > 0:
            startup.begin("training the first model version from the store")
            try:
                model = await train_from_store(
                    self.store, self.cfg, settings.model_dir, settings.learning.keep_versions
                )
            except (TrainerBusy, NothingToTrain) as error:  # another process is training
                log.info("not training at start: %s", error)
        if model is not None:
            startup.begin("compiling the engine's programs")
            await self._serve(model, progress=startup.advance)
        self.rebuilds = RebuildScheduler(
            settings, self.store, self._events_since_model, self.swap_to_wanted
        )
        self.rebuilds.start()
        self.last_rebuild = await self.store.last_rebuild()
        self.watcher = every(
            self.serving.model_poll_seconds, self._look_for_models, "model watch", log
        )
        freeze_heap()
        startup.done()

    async def _serve(
        self, model: TrainedModel, progress: Callable[[int, int], None] | None = None
    ) -> None:
        """Serve ``model`` as the default version (the first one, or a swap);
        ``progress(done, total)`` as its programs compile."""
        first = self.runtime is None
        await self.default.serve(model, progress, alone=first)
        if first:
            self._start_engine_parts()
            self.runtime = self.default.runtime  # requests see it only once it serves

    async def _events_since_model(self) -> int:
        if self.experiments.pinned_model_version is not None:
            return 0  # scheduled rebuilds wait: a new version would not be served
        if self.runtime is None:
            return await self.store.count_events()
        return self.tables.events_since_model

    def _start_engine_parts(self) -> None:
        """What only the default version has: the candidate cache and the adapter learner."""
        serving = self.serving
        profiles = self.default.profiles
        profiles.on_write = self.model_arms.written
        if serving.candidate_cache_entries:
            self.candidates = CandidateCache(
                serving.candidate_cache_entries, serving.candidate_max_age_seconds
            )
            self.metrics.candidate_counts = self.candidates.counts
        self.learner = Learner(profiles, serving.learner_max_batch, serving.learner_window_ms)
        self.learner.start()

    async def _look_for_models(self) -> None:
        """Swap to a newer model version recorded in the store (a rebuild, here or elsewhere)."""
        self.last_rebuild = await self.store.last_rebuild()
        await self.swap_to_wanted()

    async def swap_to_wanted(self) -> None:
        """Serve the newest model version, or the one a shipped model variant pins."""
        async with self.swapping:  # the watcher, a rebuild and a status change may all call
            await self._swap_locked()

    def swap_soon(self) -> None:
        """`swap_to_wanted` in the background (after a shipped model variant changed)."""
        task = asyncio.get_running_loop().create_task(self.swap_to_wanted(), name="swap")
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def _pinned_model(self) -> TrainedModel | None:
        """The version a shipped model variant pins, when it loads and the served config can
        serve it; else None (the newest version serves; an unservable pin is not tried again)."""
        pinned = self.experiments.pinned_model_version
        if pinned is None or pinned == self.unservable_pin:
            return None
        model, why = await servable_version(self.store, pinned, self.settings.model_dir, self.cfg)
        if model is None:
            log.error("shipped model version %d not served, the newest is: %s", pinned, why)
            self.unservable_pin = pinned
        return model

    async def _swap_locked(self) -> None:
        pinned = self.experiments.pinned_model_version
        serving = None if self.runtime is None else self.runtime.version
        if pinned is not None and pinned == serving:
            return
        model = await self._pinned_model()
        if model is None:
            found = await self.store.latest_model_version()
            if found is None or (serving is not None and found[0] <= serving):
                return
            model = await latest_model(self.store, self.settings.model_dir)
        if model is None:
            return
        try:
            await self._serve(model)
        except ConfigError as error:
            log.error("not serving model version %d: %s", model.version, error)
            return
        self.last_rebuild = await self.store.last_rebuild()
        prune_local_versions(
            self.settings.model_dir,
            self.settings.learning.keep_versions,
            await experiment_model_versions(self.store),
        )
        freeze_heap(collect=False)
        log.info("serving model version %d", model.version)

    async def stop(self) -> None:
        if self.bringing_up is not None and not self.bringing_up.done():
            self.bringing_up.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.bringing_up
        if self.watcher is not None:
            self.watcher.cancel()
        if self.rebuilds is not None:
            await self.rebuilds.stop()
        if self.default is not None:
            await self.default.stop()
        if self.learner is not None:
            await self.learner.stop()
        for task in list(self.background):
            task.cancel()
        if self.experiments is not None:
            await self.experiments.stop()  # the lists shown so far are written
        if self.model_arms is not None:
            await self.model_arms.stop()
        if self.executor is not None:
            self.executor.shutdown(wait=True)
        if self.cache is not None:
            await self.cache.close()
        if self.store is not None:
            await self.store.close()
        log.info("shutdown complete: batchers drained, learner stopped, store closed")


def app_state(app: Quart | None = None) -> AppState:
    """The `AppState` of ``app`` (default: the app handling the current request)."""
    return (app or current_app).extensions[EXTENSION]
