"""Personalization scores of given items for a viewer (SPEC 5), for search re-ranking: the
viewer's experiment arm and model version, as their lists are made; a score is no exposure."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Sequence

import numpy as np
import orjson

from service import schemas
from service.answers.context import resolve
from service.answers.filters import request_filter
from service.answers.recommendations import item_index, keep_candidates, kept_candidates
from service.errors import ApiError
from service.serving.served_version import ServedVersion
from service.state import AppState
from sona_jax.serve import item_queries
from sona_jax.serve.batch import Query
from sona_jax.serve.fusion import SOURCE_NAMES
from sona_jax.serve.score_batches import Scores

COMPONENT_NAMES = (*SOURCE_NAMES, "lora_boost")


def components(values: np.ndarray) -> dict[str, float]:
    """The named score components of one item (``values``: (len(COMPONENT_NAMES),))."""
    return dict(zip(COMPONENT_NAMES, values.tolist(), strict=True))


async def score_query(
    state: AppState, user_id: str, context: tuple[int, int, int], content_ids: Sequence[str]
) -> tuple[ServedVersion, Query, Hashable]:
    """What scores ``content_ids`` (items the served catalogue holds) for a viewer in a context
    (device, time of day and mood indices), as their list is made: the version that serves
    them (their experiment arms' model version, else the default), the query with their arms'
    fusion and cold-start settings (the shipped ones for everyone else) and the candidates
    this process keeps for them (the ones a default recommendation uses; None: the engine call
    retrieves them), and the key those are kept under. An item an arm's version has not taken
    in yet (a write of the last moments) is scored by the default version for that request."""
    arms = state.experiments.assignment(user_id, state.serves)
    served = state.served_by(arms.model_version)
    rows = served.runtime.engine.item_index
    if any(c not in rows for c in content_ids):
        served = state.served
        rows = served.runtime.engine.item_index
    version, profile = await served.profiles.entry(user_id)
    key, candidates = kept_candidates(state, served.runtime, user_id, version, profile, True)
    device, tod, mood = context
    query = Query(
        profile,
        device=device,
        time_of_day=tod,
        mood=mood,
        items=np.array([rows[c] for c in content_ids], np.int32),
        candidates=candidates,
        fusion=arms.fusion,
        cold_start=arms.cold_start,
    )
    return served, query, key


async def scored(
    state: AppState, user_id: str, context: tuple[int, int, int], content_ids: Sequence[str]
) -> Scores:
    """`score_query`'s scores, through the version's score batcher (candidates it retrieved
    are kept). A score is no exposure: only lists shown are."""
    served, query, key = await score_query(state, user_id, context, content_ids)
    result = await served.score.submit(query)
    keep_candidates(state, key, result["candidates"])
    return result["scores"]


async def score_body(state: AppState, data: schemas.ScoreRequest) -> bytes:
    """The personalization score answer (JSON bytes); shared by the route and the fast path."""
    item_index(state, str(data.content_id), "content_id")  # a 404 naming the field
    context = resolve(data.context)
    result = await scored(state, str(data.user_id), context.indices, [str(data.content_id)])
    answer = {
        "user_id": str(data.user_id),
        "content_id": str(data.content_id),
        "score": float(result.score[0]),
        "components": components(result.components[0]),
    }
    if context.ignored:
        answer["ignored_context"] = context.ignored
    return orjson.dumps(answer)


async def batch_scores(
    state: AppState, data: schemas.BatchScoreRequest
) -> schemas.BatchScoreResponse:
    """Scores of up to ``serving.max_batch_score_ids`` items in one engine call; unknown ids
    and those the filters remove are named apart."""
    limit = state.serving.max_batch_score_ids
    if len(data.content_ids) > limit:
        raise ApiError(
            400, "validation_error", f"content_ids: at most {limit} content ids per request"
        )
    engine = state.engine().engine
    index = engine.item_index
    ids = [str(c) for c in data.content_ids]
    known = [(c, index[c]) for c in ids if c in index]
    unknown = [c for c in ids if c not in index]
    item_filter, ignored_filters = request_filter(data.filters, engine, state.cfg)
    filtered = []
    if item_filter is not None and known:
        kept = await asyncio.get_running_loop().run_in_executor(
            state.executor,
            item_queries.passing,
            engine,
            item_filter,
            np.array([i for _, i in known]),
        )
        filtered = [c for (c, _), ok in zip(known, kept, strict=True) if not ok]
        known = [pair for pair, ok in zip(known, kept, strict=True) if ok]
    scores = []
    if known:
        result = await scored(
            state,
            str(data.user_id),
            resolve(data.context).indices,
            [c for c, _ in known],
        )
        scores = [
            schemas.BatchScoreItem(content_id=c, score=float(s), components=components(comp))
            for (c, _), s, comp in zip(known, result.score, result.components, strict=True)
        ]
    return schemas.BatchScoreResponse(
        user_id=str(data.user_id),
        scores=scores,
        unknown_content_ids=unknown,
        filtered_content_ids=filtered,
        ignored_filters=ignored_filters or None,
    )
