"""The engine inside the service: the served `ServingEngine` behind a lock, replaced whole when a
new model version arrives or the catalogue or popularity tables change, and the batch functions
the micro-batchers run (on engine threads).

Requests in flight finish on the engine they started with; everything about scoring lives in
the engine (`sona_jax.serve.engine`). Replacements are serialised (`writer`) and, when they
change an array shape, compiled before they are published, so no request waits on a compile.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

import jax
import numpy as np

from service.settings import ServingSettings
from service.storage import EventRow
from service.threads import in_background
from sona_jax.buckets import EVENT_BUCKETS, SCORE_BUCKETS, USER_BUCKETS, bucket
from sona_jax.config import SonaConfig
from sona_jax.data.stored import StoredEvent
from sona_jax.model.training_data import event_targets
from sona_jax.model.version import TrainedModel
from sona_jax.serve import item_queries, viewers
from sona_jax.serve.batch import Query, RequestFilter, ViewerProfile
from sona_jax.serve.engine import Lists, Scores, ServingEngine
from sona_jax.serve.fusion import N_SOURCES
from sona_jax.serve.viewers import AdapterResult

MILLISECONDS = 1000
COMPILATION_CACHE = "xla-cache"  # under the data directory


def use_compilation_cache(path: Path) -> None:
    """Keep every compiled program in ``path`` (JAX's persistent compilation cache): a restart
    of the same model and config loads its programs instead of compiling them again. Programs
    are keyed by everything that shapes them (jax version, shapes, static config)."""
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


class Runtime:
    """The served engine (one model version under the served config) plus the functions the
    batchers call."""

    def __init__(self, model: TrainedModel | None, cfg: SonaConfig, serving: ServingSettings):
        """Serving ``model`` (or nothing until the first `publish`)."""
        self.lock = threading.Lock()
        self.writer = asyncio.Lock()  # one replacement at a time (catalogue, tables, models)
        self.cfg, self.serving = cfg, serving
        self._engine: ServingEngine | None = None
        self._canned_key: tuple[int, int] | None = None  # `serving.canned_engine` only
        self._canned_lists: Lists | None = None
        if model is not None:
            self.load(model)

    def prepare(self, model: TrainedModel) -> ServingEngine:
        """A model version as served (with room for new items); raises `ConfigError` when its
        train-time config disagrees with the served config."""
        return ServingEngine.load(model, self.cfg).with_headroom()

    def load(self, model: TrainedModel) -> None:
        """Prepare, compile and publish a model version."""
        self.publish(self.prepare(model))

    def publish(
        self, engine: ServingEngine, progress: Callable[[int, int], None] | None = None
    ) -> None:
        """Serve ``engine`` from the next batch on, compiled first when its shapes are new
        (``progress(done, total)`` as its programs compile)."""
        current = self._engine
        if self.serving.warm_up and (current is None or _shapes(current) != _shapes(engine)):
            # The served engine keeps its cores meanwhile.
            in_background(self.warm_up, engine, progress)
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

    def warm_up(
        self,
        engine: ServingEngine | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        """Compile every program a valid request can run, before ``engine`` (default: the
        served one) serves traffic; ``progress(done, total)`` after each.

        That is: recommendations for every user bucket a batch can fill (every list length
        shares one program), with the model's list widths and the wide ones; scores for every
        bucket of items per request; similar items; profiles for every bucket of stored events up to
        ``serving.warm_up_max_events``; adapter training for every bucket of viewers the
        learner trains together. Buckets above ``serving.max_batch`` (or above 1 with batching
        off) are never used. With the persistent compilation cache a warm restart loads them.
        """
        engine = engine or self.engine
        tasks = warm_up_tasks(engine, self.cfg, self.serving)
        for done, task in enumerate(tasks, start=1):
            task()
            if progress is not None:
                progress(done, len(tasks))

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
        key = jax.random.PRNGKey(int(now * MILLISECONDS) % (2**31))
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


def warm_up_tasks(
    engine: ServingEngine, cfg: SonaConfig, serving: ServingSettings
) -> list[Callable[[], object]]:
    """One call per program `Runtime.warm_up` compiles (see there)."""
    largest = serving.max_batch if serving.batching else 1
    sizes = [size for size in USER_BUCKETS if size <= bucket(largest, USER_BUCKETS)]
    empty = viewers.empty_profile(engine)
    wide = replace(empty, seen=np.arange(engine.widths.seen + 1, dtype=np.int32) % engine.capacity)
    dismissing = replace(
        empty, dismissed=np.arange(engine.widths.dismissed + 1, dtype=np.int32) % engine.capacity
    )
    lam = cfg.diversity.mmr_lambda
    most = bucket(serving.max_batch_score_ids, SCORE_BUCKETS)
    widths = [w for w in SCORE_BUCKETS if w < most] + [most]
    tasks: list[Callable[[], object]] = []
    for size in sizes:
        for profile in (empty, wide):
            tasks.append(partial(engine.recommend_queries, [Query(profile, 1, True, lam)] * size))
        for width in widths:
            for profile in (empty, dismissing):  # seen lists shape only the retrieval inside
                scoring = Query(profile, items=np.zeros(width, np.int32))
                tasks.append(partial(engine.score_queries, [scoring] * size))
    tasks.append(partial(item_queries.similar, engine, 0, 1))
    # filtered similar items (over the catalogue) and filtered batch scores (at items)
    some_filter = RequestFilter(one_per_series=True, year_min=0.0)
    tasks.append(partial(item_queries.similar, engine, 0, 1, some_filter))
    for width in widths:
        tasks.append(partial(item_queries.passing, engine, some_filter, np.zeros(width, np.int32)))
    item = engine.item_ids[0]
    for n_events in EVENT_BUCKETS:
        if n_events > bucket(serving.warm_up_max_events, EVENT_BUCKETS):
            break
        events = [_warm_up_event(item, i) for i in range(n_events)]
        tasks.append(
            partial(viewers.viewer_profile, engine, "warm-up", events, None, 0.0, time.time())
        )
    # A learner batch's engagement targets: every bucket its events can fill.
    size, most = EVENT_BUCKETS[0], serving.warm_up_max_events * serving.learner_max_batch
    while size <= bucket(most, EVENT_BUCKETS):
        zeros = np.zeros(size, np.float32)
        tasks.append(partial(event_targets, zeros, zeros, zeros.astype(bool), cfg.preference))
        size = bucket(size + 1, EVENT_BUCKETS)
    training = [_warm_up_event(item, i) for i in range(cfg.lora.min_events)]
    for n_users in USER_BUCKETS:
        if n_users > bucket(serving.learner_max_batch, USER_BUCKETS):
            break
        users = [f"warm-up-{i}" for i in range(n_users)]
        events = [replace(e, user_id=u) for u in users for e in training]
        key = jax.random.PRNGKey(0)
        tasks.append(partial(viewers.train_viewers, engine, users, [empty] * n_users, events, key))
    return tasks


def _warm_up_event(content_id: str, i: int) -> EventRow:
    return EventRow("warm-up", content_id, float(i), 1.0, None, False, False, None, None)


def _shapes(engine: ServingEngine) -> list[tuple[int, ...]]:
    """The array shapes the jitted calls are compiled for."""
    return [tuple(x.shape) for x in jax.tree_util.tree_leaves(engine.state)]
