"""The programs a served model version needs, written down: one call per program, run before the
engine serves (`Runtime.warm_up`), so no request ever waits on a compile.

At the default `ServedShapes` that is 16 programs per served shape (the test
`tests/sona_jax/serve/test_program_plan.py` lists them and fails when a change adds one):

- per batch size (1, 4, 8, 16, 32, 64): lists (`recommend.serve_lists`: retrieval when the
  viewers' candidates are not kept, then ranking, in one program) and scores of given items
  from kept candidates (`recommend.score_items`, rows of ``score_width`` items; a viewer's
  candidates are retrieved by the lists' program first): 12;
- the context candidates made whenever the tables change (`retrieval.context_candidates`): 1;
- similar items and the catalogue's filter mask (`item_queries.item_view`): 1;
- a viewer's profile, in steps of ``profile_events`` events (`profile.add_profile_step`): 1;
- the learner's adapter training, ``learner_users`` viewers a call (`adapters.train_chunk`): 1.

Before (93 programs), every power-of-two batch size up to 128 compiled retrieval, ranking
and scores apart, each at two list widths, scores at three widths, a profile program per
power-of-four event count, and the learner four programs per batch size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

import numpy as np

from sona_jax.data.stored import StoredEvent
from sona_jax.serve import item_queries, viewers
from sona_jax.serve.batch import Query, RequestFilter
from sona_jax.serve.engine import ServingEngine

Task = Callable[[], object]


def program_plan(engine: ServingEngine, now: float) -> list[Task]:
    """One call per program a served ``engine`` runs (see the module's list); ``now``: the
    clock the profile and learner calls are made at (seconds since the epoch)."""
    shapes = engine.shapes
    if shapes is None:
        raise ValueError("program_plan: the engine is not served (`ServingEngine.served`)")
    cfg = engine.cfg
    empty = viewers.empty_profile(engine)
    ranking = Query(empty, 1, True, cfg.diversity.mmr_lambda)
    tasks: list[Task] = [
        partial(engine.recommend_queries, [ranking] * size) for size in shapes.batch_sizes
    ]
    scoring = Query(empty, items=np.zeros(shapes.score_width, np.int32))
    tasks += [partial(engine.score_queries, [scoring] * size) for size in shapes.batch_sizes]
    tasks.append(partial(item_queries.similar, engine, 0, 1))
    tasks.append(partial(item_queries.passing, engine, RequestFilter(), np.zeros(1, np.int32)))
    item = engine.item_ids[0]
    event = _event("warm-up", item, now)
    tasks.append(partial(viewers.viewer_profile, engine, "warm-up", [event], None, 0.0, now))
    users = [f"warm-up-{i}" for i in range(cfg.lora.min_events)]
    events = [replace(event, user_id=u) for u in users]
    profiles = [empty] * len(users)
    tasks.append(
        partial(viewers.train_viewers, engine, users, profiles, events, viewers.host_key(0))
    )
    return tasks


@dataclass(frozen=True)
class _Event:
    """A `StoredEvent` the plan's calls are made with."""

    user_id: str
    content_id: str
    ts: float
    completion_rate: float = 1.0
    rating: int | None = None
    is_rewatch: bool = False
    dismissed: bool = False
    device_type: str | None = None
    time_of_day: str | None = None


def _event(user_id: str, content_id: str, now: float) -> StoredEvent:
    return _Event(user_id, content_id, now)
