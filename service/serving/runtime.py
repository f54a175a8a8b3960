"""The engine inside the service: the served `ServingEngine` behind a lock, replaced whole when a
new model version arrives or the catalogue or popularity tables change, and the batch functions
the micro-batchers run (on engine threads).

Requests in flight finish on the engine they started with; everything about scoring lives in
the engine (`sona_jax.serve.engine`). Replacements are serialised (`writer`) and, when they
change an array shape, compiled before they are published, so no request waits on a compile.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import jax
import numpy as np

from service.serving.threads import in_background
from service.settings import ServingSettings
from sona_jax.config import SonaConfig
from sona_jax.data.stored import StoredEvent
from sona_jax.model.version import TrainedModel
from sona_jax.serve import viewers
from sona_jax.serve.batch import Query, ViewerProfile
from sona_jax.serve.engine import ServingEngine
from sona_jax.serve.fusion import N_SOURCES
from sona_jax.serve.program_plan import program_plan
from sona_jax.serve.programs import ProgramLibrary, forget_jit_caches
from sona_jax.serve.query_batches import Lists
from sona_jax.serve.score_batches import Scores
from sona_jax.serve.viewers import AdapterResult

MILLISECONDS = 1000
MEGABYTE = 1 << 20
COMPILATION_CACHE = "xla-cache"  # under the data directory


def use_compilation_cache(path: Path, max_mb: int) -> None:
    """Keep compiled programs in ``path`` (JAX's persistent compilation cache), at most
    ``max_mb`` MB of them (least recently used first out): a program met again (another
    process, a shape served before) skips XLA. Programs are keyed by everything that shapes
    them (jax version, shapes, static config)."""
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    jax.config.update("jax_compilation_cache_max_size", max_mb * MEGABYTE)


class Runtime:
    """The served engine (one model version under the served config) plus the functions the
    batchers call."""

    def __init__(
        self,
        model: TrainedModel | None,
        cfg: SonaConfig,
        serving: ServingSettings,
        library: ProgramLibrary | None = None,
    ):
        """Serving ``model`` (or nothing until the first `publish`), through the program sets
        of ``library`` (shared by every runtime of the process: one per model arm)."""
        self.lock = threading.Lock()
        self.writer = asyncio.Lock()  # one replacement at a time (catalogue, tables, models)
        self.cfg, self.serving = cfg, serving
        self.library = library or ProgramLibrary(serving.served_shapes())
        self._engine: ServingEngine | None = None
        self._canned_key: tuple[int, int] | None = None  # `serving.canned_engine` only
        self._canned_lists: Lists | None = None
        if model is not None:
            self.load(model)

    def prepare(self, model: TrainedModel) -> ServingEngine:
        """A model version as served (with room for new items, on this process's program
        sets); raises `ConfigError` when its train-time config disagrees with the served
        config."""
        return ServingEngine.load(model, self.cfg).with_headroom().served(self.library)

    def load(self, model: TrainedModel) -> None:
        """Prepare, compile and publish a model version."""
        self.publish(self.prepare(model))

    def publish(
        self,
        engine: ServingEngine,
        progress: Callable[[int, int], None] | None = None,
        threads: int = 1,
        beside_serving: bool = True,
    ) -> None:
        """Serve ``engine`` from the next batch on, its programs compiled first when its shape
        has none yet (``progress(done, total)`` as they compile, on ``threads``; see
        `warm_up` for ``beside_serving``)."""
        if self.serving.warm_up and not engine.programs.planned:
            # The served engine keeps its cores meanwhile.
            in_background(warm_up, engine, progress, threads, None, beside_serving)
        with self.lock:
            self._engine = engine

    def replace(self, change: Callable[[ServingEngine], ServingEngine]) -> ServingEngine:
        """Publish ``change(current engine)`` (call it with `writer` held); returns it."""
        engine = change(self.engine)
        self.publish(engine)
        return engine

    @property
    def engine(self) -> ServingEngine:
        with self.lock:
            return self._engine

    @property
    def version(self) -> int:
        return self.engine.version

    # ---- what the batchers run -------------------------------------------------------------

    def recommend_batch(self, queries: Sequence[Query]) -> list[dict]:
        """Top-``limit`` lists for a batch of queries (`ServingEngine.recommend_queries`): per
        query, ``rows`` of (item index, score, kind index, based-on item index or -1), best
        first; the engine whose ``model`` the indices refer to; and ``candidates``, the
        viewer's candidates when this call retrieved them (else None)."""
        engine = self.engine
        if self.serving.canned_engine:
            lists, found = self._canned(engine, queries), [None] * len(queries)
        else:
            lists, found = engine.recommend_queries(queries)
        # One conversion per output for the whole batch: per-row numpy slicing cost more.
        items, scores, kinds, based_on = (
            x.tolist() for x in (lists.items, lists.scores, lists.kinds, lists.based_on)
        )
        return [
            {
                "rows": [
                    row
                    for row in zip(
                        items[i][: q.limit],
                        scores[i][: q.limit],
                        kinds[i][: q.limit],
                        based_on[i][: q.limit],
                        strict=True,
                    )
                    if row[0] >= 0
                ],
                "engine": engine,
                "candidates": found[i],
            }
            for i, q in enumerate(queries)
        ]

    def score_batch(self, queries: Sequence[Query]) -> list[dict]:
        """Per query, ``scores`` (`Scores` of its items, one jitted call) and ``candidates``,
        the viewer's candidates when this call retrieved them (else None)."""
        if self.serving.canned_engine:
            return [{"scores": self._canned_scores(q), "candidates": None} for q in queries]
        scores, found = self.engine.score_queries(queries)
        return [
            {"scores": row, "candidates": kept} for row, kept in zip(scores, found, strict=True)
        ]

    def _canned(self, engine: ServingEngine, queries: Sequence[Query]) -> Lists:
        """`serving.canned_engine`: the lists of one real call (the first query's viewer, at
        the batch's longest limit), repeated for every query of the batch."""
        longest = max(q.limit for q in queries)
        key = (id(engine), longest)
        if self._canned_key != key:
            self._canned_lists, _ = engine.recommend_queries([replace(queries[0], limit=longest)])
            self._canned_key = key
        return Lists(*(np.repeat(x, len(queries), axis=0) for x in self._canned_lists))

    def _canned_scores(self, query: Query) -> Scores:
        n = len(query.items)
        return Scores(np.full(n, 0.5, np.float32), np.full((n, N_SOURCES + 1), 0.1, np.float32))

    def train_batch(
        self,
        user_ids: Sequence[str],
        profiles: Sequence[ViewerProfile],
        events: Sequence[StoredEvent],
        now: float,
    ) -> list[AdapterResult]:
        """Retrain the adapters of several viewers in one vmapped call (SPEC 3.2)."""
        key = viewers.host_key(int(now * MILLISECONDS) % (2**31))
        return viewers.train_viewers(self.engine, user_ids, profiles, events, key)

    def viewer_profile(
        self,
        user_id: str,
        events: Sequence[StoredEvent],
        adapter: np.ndarray | None,
        last_trained: float,
        engine: ServingEngine | None = None,
    ) -> ViewerProfile:
        """A viewer's profile rebuilt from all their stored events, as of now (under
        ``engine``, default: the served one)."""
        return viewers.viewer_profile(
            engine or self.engine, user_id, events, adapter, last_trained, time.time()
        )


_compiling = threading.Lock()  # one program set compiles at a time; caches emptied after


class CompileStopped(Exception):
    """`warm_up` was stopped before its plan had compiled."""


def warm_up(
    engine: ServingEngine,
    progress: Callable[[int, int], None] | None = None,
    threads: int = 1,
    stop: threading.Event | None = None,
    beside_serving: bool = False,
) -> None:
    """Compile every program ``engine``'s shape needs (`program_plan`) that its set lacks,
    before it serves traffic; ``progress(done, total)`` after each, ``threads`` at once (more
    than one only while nothing is served: compiling competes with serving for the cores).
    Then jit's own caches are emptied (`forget_jit_caches`), so that program sets no engine
    holds any more are freed. ``stop`` set: no further program starts (`CompileStopped`).

    ``beside_serving``: requests are served meanwhile, so JAX's persistent compilation cache
    is not written: serializing an executable for it held the interpreter lock 150-300 ms
    under load (measured at a capacity step), long enough to refuse queued requests, and the
    program store saves the set anyway (`ProgramStore.save`)."""
    programs = engine.programs

    def run(task: Callable[[], object]) -> None:
        if stop is not None and stop.is_set():
            raise CompileStopped
        with _no_cache_writes() if beside_serving else contextlib.nullcontext():
            task()

    with _compiling:
        if programs.planned:
            return
        tasks = program_plan(engine, time.time())
        done = 0
        try:
            with ThreadPoolExecutor(max(1, threads), thread_name_prefix="sona-compile") as pool:
                for _ in pool.map(run, tasks):
                    done += 1
                    if progress is not None:
                        progress(done, len(tasks))
            engine.library.planned(programs)
        finally:
            forget_jit_caches()
            _return_freed_memory()


def _no_cache_writes():
    """On this thread, JAX's persistent compilation cache is read but not written (its write
    threshold, a thread-local setting, raised out of reach)."""
    return jax.config._value_holders["jax_persistent_cache_min_compile_time_secs"](math.inf)


def _return_freed_memory() -> None:
    """Hand the heap's free pages back to the system (glibc keeps what a compile freed)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)
