"""``POST /api/v1/profile/update`` (events in, profile refreshed at once) and
``POST /api/v1/lora/train`` (one viewer's adapter, now)."""

from __future__ import annotations

import time

import numpy as np
from quart import Blueprint, jsonify
from quart_schema import validate_request, validate_response

from service import schemas
from service.answers import policy
from service.errors import ApiError
from service.learning.learner import InsufficientData, TooSoon
from service.state import app_state
from service.storage import EventRow

MILLISECONDS = 1000

blueprint = Blueprint("learning", __name__)


def _event_rows(user_id: str, events: list[schemas.ViewingEvent]) -> list[EventRow]:
    return [
        EventRow(
            user_id,
            str(e.content_id),
            e.timestamp.timestamp(),
            e.completion_rate,
            e.rating,
            e.is_rewatch,
            e.dismissed,
            e.device_type,
            e.time_of_day,
            None if e.recommendation_id is None else str(e.recommendation_id),
        )
        for e in events
    ]


@blueprint.post("/api/v1/profile/update")
@validate_request(schemas.ProfileUpdateRequest)
@validate_response(schemas.ProfileUpdateResponse)
async def profile_update(data: schemas.ProfileUpdateRequest):
    state = app_state()
    user_id, limit = str(data.user_id), state.serving.max_events_per_update
    if len(data.viewing_events) > limit:
        raise ApiError(
            400, "validation_error", f"viewing_events: at most {limit} events per update"
        )
    content_ids = [str(e.content_id) for e in data.viewing_events]
    existing = await state.store.existing_content(content_ids)
    missing = [i for i, c in enumerate(content_ids) if c not in existing]
    if missing:
        raise ApiError(
            404,
            "content_not_found",
            f"viewing_events.{missing[0]}.content_id: unknown content {content_ids[missing[0]]}",
            [{"field": f"viewing_events.{i}.content_id"} for i in missing[:20]],
        )
    events = _event_rows(user_id, data.viewing_events)
    if state.runtime is None:  # no model yet: store them; the first rebuild trains on them
        new = await state.store.add_events(events)
        state.metrics.events.inc(new)
        return schemas.ProfileUpdateResponse(
            status="updated",
            user_id=user_id,
            events_processed=len(events),
            events_new=new,
            interaction_count=len(await state.store.user_events(user_id)),
            training_scheduled=False,
        )
    if any(c not in state.runtime.engine.item_index for c in existing):
        await state.catalogue.catch_up()  # written through another process a moment ago
    new, since, profile = await state.profiles.record_events(user_id, events)
    state.metrics.events.inc(new)
    due = policy.retrain_due(since, profile.events, state.cfg)
    if due:
        state.learner.schedule(user_id)
    return schemas.ProfileUpdateResponse(
        status="updated",
        user_id=user_id,
        events_processed=len(events),
        events_new=new,
        interaction_count=profile.events,
        training_scheduled=due,
    )


@blueprint.post("/api/v1/lora/train")
@validate_request(schemas.TrainRequest)
@validate_response(schemas.TrainResponse)
async def train(data: schemas.TrainRequest):
    state = app_state()
    state.engine()
    lora = state.cfg.lora
    user_id = str(data.user_id)
    started = time.perf_counter()
    try:
        info = await state.learner.train_now(user_id, data.force)
    except InsufficientData as error:
        unusable = error.stored - error.count
        why = (
            f" ({unusable} of their {error.stored} events are on items the model has not "
            "learned yet)"
            if unusable
            else ""
        )
        return jsonify(
            {
                "error": "Insufficient training data",
                "message": f"training needs at least {lora.min_events} usable "
                f"events; user has {error.count}{why}",
                "current_count": error.count,
            }
        ), 400
    except TooSoon as error:
        raise ApiError(
            429,
            "training_too_frequent",
            f"this user was trained less than {lora.train_interval_seconds:.0f}"
            f"s ago; retry in {error.retry_after:.0f}s or pass force=true",
            headers={"Retry-After": str(int(np.ceil(error.retry_after)))},
        ) from None
    return schemas.TrainResponse(
        status="training_completed",
        user_id=user_id,
        duration_ms=(time.perf_counter() - started) * MILLISECONDS,
        training_iterations=lora.iterations,
        events_used=info["events_used"],
        loss=info["loss"],
    )
