"""The catalogue: ``POST /api/v1/content`` (batch upsert), ``GET /api/v1/content`` (pages),
``GET`` / ``DELETE /api/v1/content/{id}``."""

from __future__ import annotations

import uuid

import numpy as np
from quart import Blueprint, jsonify
from quart_schema import validate_querystring, validate_request, validate_response

from service import schemas
from service.errors import ApiError
from service.state import app_state
from service.storage import ContentRow

blueprint = Blueprint("content", __name__)


def _uuid_path(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ApiError(400, "validation_error", f"content_id: not a UUID: {value!r}") from None


def _content_item(row: ContentRow) -> schemas.ContentItem:
    embedding = (
        np.frombuffer(row.embedding, np.float32).tolist() if row.embedding is not None else None
    )
    return schemas.ContentItem(
        content_id=row.content_id,
        title=row.title,
        genres=row.genres,
        duration_minutes=row.duration_minutes,
        release_year=row.release_year,
        moods=row.moods,
        series_id=row.series_id,
        embedding=embedding,
    )


@blueprint.post("/api/v1/content")
@validate_request(schemas.ContentUpsertRequest)
@validate_response(schemas.ContentUpsertResponse)
async def upsert_content(data: schemas.ContentUpsertRequest):
    state = app_state()
    dim = state.cfg.model.embedding_dim
    rows = []
    for i, item in enumerate(data.items):
        if item.embedding is not None and len(item.embedding) != dim:
            raise ApiError(
                400,
                "validation_error",
                f"items.{i}.embedding: expected {dim} values, got {len(item.embedding)}",
            )
        rows.append(
            ContentRow(
                str(item.content_id),
                item.title,
                item.genres,
                item.duration_minutes,
                item.release_year,
                item.moods,
                item.series_id,
                np.asarray(item.embedding, np.float32).tobytes() if item.embedding else None,
            )
        )
    count = await state.store.upsert_content(rows)
    if state.catalogue is not None:  # served from the next request on
        written = [r.content_id for r in rows]
        await state.catalogue.write(written)
        await state.model_arms.catalogue_written(written)
    return schemas.ContentUpsertResponse(status="upserted", count=count)


@blueprint.get("/api/v1/content")
@validate_querystring(schemas.ContentListQuery)
@validate_response(schemas.ContentListResponse)
async def list_content(query_args: schemas.ContentListQuery):
    cursor = None if query_args.cursor is None else str(query_args.cursor)
    rows = await app_state().store.list_content(query_args.limit, cursor)
    next_cursor = rows[-1].content_id if len(rows) == query_args.limit else None
    return schemas.ContentListResponse(
        items=[_content_item(r) for r in rows], next_cursor=next_cursor
    )


@blueprint.get("/api/v1/content/<content_id>")
@validate_response(schemas.ContentItem)
async def get_content(content_id: str):
    row = await app_state().store.get_content(_uuid_path(content_id))
    if row is None:
        raise ApiError(404, "content_not_found", f"content_id: unknown content {content_id}")
    return _content_item(row)


@blueprint.delete("/api/v1/content/<content_id>")
async def delete_content(content_id: str):
    state = app_state()
    content_id = _uuid_path(content_id)
    if not await state.store.delete_content(content_id):
        raise ApiError(404, "content_not_found", f"content_id: unknown content {content_id}")
    if state.catalogue is not None:  # never served again, from the next request on
        await state.catalogue.write([content_id])
        await state.model_arms.catalogue_written([content_id])
    return jsonify({"status": "deleted", "content_id": content_id})
