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

import jax
import numpy as np

from service.settings import ServingSettings
from service.threads import in_background
from sona_jax.buckets import USER_BUCKETS
from sona_jax.config import SonaConfig
from sona_jax.data.stored import StoredEvent
from sona_jax.model.version import TrainedModel
from sona_jax.serve.batch import Query, ViewerProfile
from sona_jax.serve.engine import AdapterResult, Scores, ServingEngine

MILLISECONDS = 1000


class Runtime:
    """The served engine (one model version under the served config) plus the functions the
    batchers call."""

    def __init__(self, model: TrainedModel | None, cfg: SonaConfig, serving: ServingSettings):
        """Serving ``model`` (or nothing until the first `publish`)."""
        self.lock = threading.Lock()
        self.writer = asyncio.Lock()  # one replacement at a time (catalogue, tables, models)
        self.cfg, self.serving = cfg, serving
        self._engine: ServingEngine | None = None
        if model is not None:
            self.load(model)

    def prepare(self, model: TrainedModel) -> ServingEngine:
        """A model version as served (with room for new items); raises `ConfigError` when its
        train-time config disagrees with the served config."""
        return ServingEngine.load(model, self.cfg).with_headroom()

    def load(self, model: TrainedModel) -> None:
        """Prepare, compile and publish a model version."""
        self.publish(self.prepare(model))

    def publish(self, engine: ServingEngine) -> None:
        """Serve ``engine`` from the next batch on, compiled first when its shapes are new."""
        current = self._engine
        if self.serving.warm_up and (current is None or _shapes(current) != _shapes(engine)):
            in_background(self.warm_up, engine)  # the served engine keeps its cores meanwhile
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

    def warm_up(self, engine: ServingEngine | None = None) -> None:
        """Compile every user bucket a batch can fill, for the default list length, before
        ``engine`` (default: the served one) serves traffic (buckets above
        ``serving.max_batch``, or above 1 with batching off, are never used; each recommend
        program takes about 2.4 s to compile here)."""
        engine = engine or self.engine
        largest = self.serving.max_batch if self.serving.batching else 1
        empty = engine.empty_profile()
        query = Query(empty, self.serving.default_limit, True, self.cfg.diversity.mmr_lambda)
        scoring = Query(empty, items=np.zeros(1, np.int32))
        for size in USER_BUCKETS:
            engine.recommend_queries([query] * size)
            engine.score_queries([scoring] * size)
            if size >= largest:
                break

    # ---- what the batchers run -------------------------------------------------------------

    def recommend_batch(self, queries: Sequence[Query]) -> list[dict]:
        """Top-``limit`` lists for a batch of queries (one jitted call): per query, ``rows`` of
        (item index, score, kind index, based-on item index or -1), best first, and the
        engine whose ``model`` the indices refer to."""
        engine = self.engine
        lists = engine.recommend_queries(queries)
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
            }
            for i, q in enumerate(queries)
        ]

    def score_batch(self, queries: Sequence[Query]) -> list[Scores]:
        """Scores and components of each query's items (one jitted call)."""
        return self.engine.score_queries(queries)

    def train_batch(
        self,
        user_ids: Sequence[str],
        profiles: Sequence[ViewerProfile],
        events: Sequence[StoredEvent],
        now: float,
    ) -> list[AdapterResult]:
        """Retrain the adapters of several viewers in one vmapped call (SPEC 3.2)."""
        key = jax.random.PRNGKey(int(now * MILLISECONDS) % (2**31))
        return self.engine.train_viewers(user_ids, profiles, events, key)

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
        return (engine or self.engine).viewer_profile(
            user_id, events, adapter, last_trained, time.time()
        )


def _shapes(engine: ServingEngine) -> list[tuple[int, ...]]:
    """The array shapes the jitted calls are compiled for."""
    return [tuple(x.shape) for x in jax.tree_util.tree_leaves(engine.state)]
