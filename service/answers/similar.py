"""Items similar to an item (SPEC 3.5), under the request's filters."""

from __future__ import annotations

import asyncio

from service import schemas
from service.answers.filters import request_filter
from service.answers.recommendations import item_index
from service.state import AppState
from sona_jax.serve import item_queries


async def similar_items(state: AppState, data: schemas.SimilarRequest) -> schemas.SimilarResponse:
    """The ``data.limit`` items most similar to ``data.content_id`` that pass its filters (a
    404 naming the field for an unknown or not yet served item)."""
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
