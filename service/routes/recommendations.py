"""``POST /api/v1/recommendations`` and ``POST /api/v1/recommendations/similar``."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Hashable
from datetime import UTC, datetime

import orjson
from quart import Blueprint, Response
from quart_schema import document_response, validate_request, validate_response

from service import schemas
from service.answers import policy
from service.answers.context import resolve
from service.answers.filters import cache_part, request_filter
from service.errors import ApiError
from service.experiments.live import Assignment
from service.learning.demo_data import new_request_seed
from service.serving.cache import Version
from service.serving.candidates import candidate_key
from service.serving.model_arms import Served
from service.serving.runtime import Runtime
from service.state import AppState, app_state
from sona_jax.serve import item_queries
from sona_jax.serve.batch import Query, ViewerCandidates, ViewerProfile
from sona_jax.serve.fusion import KIND_NAMES

blueprint = Blueprint("recommendations", __name__)


def item_index(state: AppState, content_id: str, field_name: str) -> int:
    """The item row of ``content_id`` in the served model, or a 404 naming the field."""
    index = state.engine().engine.item_index.get(content_id)
    if index is None and state.catalogue.waits_for(content_id):
        raise ApiError(
            404,
            "content_not_served_yet",
            f"{field_name}: content {content_id} is stored and served once the catalogue's "
            "next capacity has compiled (within about a minute)",
            {"field": field_name},
            headers={"Retry-After": "10"},
        )
    if index is None:
        raise ApiError(
            404,
            "content_not_found",
            f"{field_name}: unknown content {content_id}",
            {"field": field_name},
        )
    return index


def _items(rows: list, engine, context, listed: list[int]) -> list[dict]:
    """The answer's items; counts each one's kind in ``listed`` (by `KIND_NAMES` index)."""
    ids, titles = engine.item_ids, engine.titles
    items = []
    for item, score, kind, based in rows:
        listed[kind] += 1
        kind_name = KIND_NAMES[kind]
        history = based if based >= 0 else None
        items.append(
            {
                "content_id": ids[item],
                "confidence_score": round(score, 6),
                "recommendation_type": kind_name,
                "based_on": policy.based_on(kind_name, None if history is None else ids[history]),
                "explanation": policy.explanation(
                    kind_name, None if history is None else titles[history], context
                ),
            }
        )
    return items


def kept_candidates(
    state: AppState,
    runtime: Runtime,
    user_id: str,
    version: Version,
    profile: ViewerProfile,
    exclude_watched: bool,
) -> tuple[Hashable, ViewerCandidates | None]:
    """The key of a viewer's candidates for this profile and exclusion, and the candidates
    this process keeps under it (None: the engine call retrieves them)."""
    key = candidate_key(user_id, version.parts, profile, exclude_watched, runtime.engine, state.cfg)
    return key, state.candidates.get(key) if state.candidates is not None else None


def keep_candidates(state: AppState, key: Hashable, found: ViewerCandidates | None) -> None:
    """Keep the candidates an engine call retrieved (None: it used the kept ones)."""
    if found is not None and state.candidates is not None:
        state.candidates.put(key, found)


def _with_id(body: bytes, recommendation_id: str) -> bytes:
    """``body`` (a JSON object) with this answer's own ``recommendation_id`` first: a cached
    list is shown again under a new id."""
    return b'{"recommendation_id":"' + recommendation_id.encode() + b'",' + body[1:]


async def recommendations_body(
    state: AppState, data: schemas.RecommendationRequest, shown: bool = True
) -> bytes:
    """The recommendations answer (JSON bytes); shared by the Quart route, the fast path and
    the console. ``shown`` False (an operator looking at a viewer): the list is neither an
    experiment exposure nor counted as listed, so looking does not move what is watched."""
    state.engine()
    user_id = str(data.user_id)
    limit = data.limit or state.serving.default_limit
    arms = state.experiments.assignment(user_id, state.serves)
    served = state.served_by(arms.model_version)  # the default, or a variant's model version
    version, profile = await served.profiles.entry(user_id)
    recommendation_id = str(uuid.uuid4())
    body, listed = await _list_body(state, served, data, user_id, limit, version, profile, arms)
    if listed is None:  # a cached list: read back what it holds
        listed = [r["content_id"] for r in orjson.loads(body)["recommendations"]]
    if shown:
        state.metrics.item_listed.update(listed)
        if arms.arms:
            state.experiments.expose(recommendation_id, user_id, arms.arms, listed)
    return _with_id(body, recommendation_id)


async def _list_body(
    state: AppState,
    served: Served,
    data: schemas.RecommendationRequest,
    user_id: str,
    limit: int,
    version: Version,
    profile: ViewerProfile,
    arms: Assignment,
) -> tuple[bytes, list[str] | None]:
    """The answer without its recommendation_id (cached as it is), and the content ids it
    lists (None when it came from the cache)."""
    runtime = served.runtime
    lam = policy.mmr_lambda(data.diversity_threshold, state.cfg, arms.mmr_lambda)
    context = resolve(data.context)
    device, tod, mood = context.indices
    item_filter, ignored_filters = request_filter(data.filters, runtime.engine, state.cfg)
    ttl = state.serving.recommendation_ttl_seconds
    if ttl:
        key = policy.list_cache_key(
            user_id,
            profile.events,
            runtime.version,
            runtime.engine.revision,  # a catalogue write changes the list
            limit,
            data.exclude_watched,
            lam,
            device,
            tod,
            mood,
            sorted(context.ignored.items()),  # the answer names them
            cache_part(item_filter),
            arms.key,
        )
        cached = await state.cache.get(key)
        if cached is not None:
            return cached, None
    # A filtered list retrieves through its filter (the kept candidates may hold too few
    # that pass) and keeps nothing.
    pool_key, candidates = (
        kept_candidates(state, runtime, user_id, version, profile, data.exclude_watched)
        if item_filter is None
        else (None, None)
    )
    result = await served.recommend.submit(
        Query(
            profile,
            limit,
            data.exclude_watched,
            lam,
            device,
            tod,
            mood,
            new_request_seed(),
            candidates=candidates,
            filters=item_filter,
            fusion=arms.fusion,
            cold_start=arms.cold_start,
        )
    )
    if pool_key is not None:
        keep_candidates(state, pool_key, result["candidates"])
    items = _items(result["rows"], result["engine"], context, state.metrics.listed)
    answer = {
        "recommendations": items,
        "generated_at": datetime.now(UTC).isoformat(),
        "ttl_seconds": ttl,
    }
    if context.ignored:
        answer["ignored_context"] = context.ignored
    if ignored_filters:
        answer["ignored_filters"] = ignored_filters
    if arms.arms:
        tags = [arm.tag() for arm in arms.arms]
        answer.update(tags[0])
        answer["experiments"] = tags
    body = orjson.dumps(answer)
    if ttl:
        await state.cache.set(key, body, ttl)
    return body, [item["content_id"] for item in items]


@blueprint.post("/api/v1/recommendations")
@validate_request(schemas.RecommendationRequest)
@document_response(schemas.RecommendationResponse)
async def recommendations(data: schemas.RecommendationRequest):
    return Response(await recommendations_body(app_state(), data), content_type="application/json")


@blueprint.post("/api/v1/recommendations/similar")
@validate_request(schemas.SimilarRequest)
@validate_response(schemas.SimilarResponse)
async def similar(data: schemas.SimilarRequest):
    state = app_state()
    engine = state.engine().engine
    index = item_index(state, str(data.content_id), "content_id")
    item_filter, ignored_filters = request_filter(data.filters, engine, state.cfg)
    top, similarity = await asyncio.get_running_loop().run_in_executor(
        state.executor, item_queries.similar, engine, index, data.limit, item_filter
    )
    return schemas.SimilarResponse(
        similar_content=[
            schemas.SimilarItem(
                content_id=engine.item_ids[i],
                similarity=float(s),
                title=engine.titles[i],
            )
            for i, s in zip(top, similarity, strict=True)
        ],
        ignored_filters=ignored_filters or None,
    )
