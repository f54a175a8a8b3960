"""A viewer's recommendation list, as the API, the fast path and the console answer it: the
viewer's experiment arms and model version, the cached list or one engine call, and, for a list
shown to a viewer only, the exposure and list counters."""

from __future__ import annotations

import uuid
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from service import schemas
from service.answers import policy
from service.answers.context import RequestContext, resolve
from service.answers.filters import cache_part, request_filter
from service.errors import ApiError
from service.experiments.live import Assignment
from service.serving.cache import Version
from service.serving.candidates import candidate_key
from service.serving.runtime import Runtime
from service.serving.served_version import ServedVersion
from service.state import AppState
from sona_jax.serve.batch import Query, RequestFilter, ViewerCandidates, ViewerProfile
from sona_jax.serve.fusion import KIND_NAMES


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


@dataclass(frozen=True)
class ListRequest:
    """A list request in the engine's terms: the viewer, list length, exclusion, MMR λ (the
    request's, else their arm's, else the config's), the resolved context and filters, and
    their experiment arms."""

    user_id: str
    limit: int
    exclude_watched: bool
    mmr_lambda: float
    context: RequestContext
    item_filter: RequestFilter | None
    ignored_filters: dict
    arms: Assignment


def list_query(
    request: ListRequest,
    profile: ViewerProfile,
    seed: int,
    candidates: ViewerCandidates | None = None,
) -> Query:
    """The engine query of ``request`` for a viewer's ``profile`` (exploration drawn from
    ``seed``; ``candidates``: the viewer's kept ones, None: the call retrieves them)."""
    device, tod, mood = request.context.indices
    return Query(
        profile,
        request.limit,
        request.exclude_watched,
        request.mmr_lambda,
        device,
        tod,
        mood,
        seed,
        candidates=candidates,
        filters=request.item_filter,
        fusion=request.arms.fusion,
        cold_start=request.arms.cold_start,
    )


def list_request(
    state: AppState, data: schemas.RecommendationRequest, served: ServedVersion, arms: Assignment
) -> ListRequest:
    """``data`` resolved against the engine ``served`` answers with (400 naming a bad field)."""
    item_filter, ignored = request_filter(data.filters, served.runtime.engine, state.cfg)
    return ListRequest(
        str(data.user_id),
        data.limit or state.serving.default_limit,
        data.exclude_watched,
        policy.mmr_lambda(data.diversity_threshold, state.cfg, arms.mmr_lambda),
        resolve(data.context),
        item_filter,
        ignored,
        arms,
    )


async def recommendations_body(
    state: AppState, data: schemas.RecommendationRequest, shown: bool = True
) -> bytes:
    """The recommendations answer (JSON bytes); shared by the Quart route, the fast path and
    the console. ``shown`` False (an operator looking at a viewer): the list is neither an
    experiment exposure nor counted as listed, so looking does not move what is watched."""
    state.engine()
    user_id = str(data.user_id)
    arms = state.experiments.assignment(user_id, state.serves)
    served = state.served_by(arms.model_version)  # the default, or a variant's model version
    request = list_request(state, data, served, arms)
    version, profile = await served.profiles.entry(user_id)
    recommendation_id = str(uuid.uuid4())
    key = _cache_key(state, served.runtime, request, profile)
    body = None if key is None else await state.cache.get(key)
    if body is not None:  # a cached list: read back what it holds
        listed = [r["content_id"] for r in orjson.loads(body)["recommendations"]]
    else:
        body, listed = await _computed_body(state, served, request, version, profile)
        if key is not None:
            await state.cache.set(key, body, state.serving.recommendation_ttl_seconds)
    if shown:
        state.metrics.item_listed.update(listed)
        if arms.arms:
            state.experiments.expose(recommendation_id, user_id, arms.arms, listed)
    return _with_id(body, recommendation_id)


def _cache_key(
    state: AppState, runtime: Runtime, request: ListRequest, profile: ViewerProfile
) -> Hashable | None:
    """The key ``request``'s list is cached under (None: lists are not cached)."""
    if not state.serving.recommendation_ttl_seconds:
        return None
    return policy.list_cache_key(
        request.user_id,
        profile.events,
        runtime.version,
        runtime.engine.revision,  # a catalogue write changes the list
        request.limit,
        request.exclude_watched,
        request.mmr_lambda,
        *request.context.indices,
        sorted(request.context.ignored.items()),  # the answer names them
        cache_part(request.item_filter),
        request.arms.key,
    )


async def _computed_body(
    state: AppState,
    served: ServedVersion,
    request: ListRequest,
    version: Version,
    profile: ViewerProfile,
) -> tuple[bytes, list[str]]:
    """The answer of one engine call, without its recommendation_id (cached as it is), and
    the content ids it lists."""
    # A filtered list retrieves through its filter (the kept candidates may hold too few
    # that pass) and keeps nothing.
    pool_key, candidates = (
        kept_candidates(
            state, served.runtime, request.user_id, version, profile, request.exclude_watched
        )
        if request.item_filter is None
        else (None, None)
    )
    query = list_query(request, profile, policy.new_request_seed(), candidates)
    result = await served.recommend.submit(query)
    if pool_key is not None:
        keep_candidates(state, pool_key, result["candidates"])
    context = request.context
    items = _items(result["rows"], result["engine"], context, state.metrics.listed)
    answer = {
        "recommendations": items,
        "generated_at": datetime.now(UTC).isoformat(),
        "ttl_seconds": state.serving.recommendation_ttl_seconds,
    }
    if context.ignored:
        answer["ignored_context"] = context.ignored
    if request.ignored_filters:
        answer["ignored_filters"] = request.ignored_filters
    if request.arms.arms:
        tags = [arm.tag() for arm in request.arms.arms]
        answer.update(tags[0])
        answer["experiments"] = tags
    return orjson.dumps(answer), [item["content_id"] for item in items]
