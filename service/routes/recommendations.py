"""``POST /api/v1/recommendations`` and ``POST /api/v1/recommendations/similar``."""

from __future__ import annotations

from quart import Blueprint, Response
from quart_schema import document_response, validate_request, validate_response

from service import schemas
from service.answers.recommendations import recommendations_body
from service.answers.similar import similar_items
from service.state import app_state

blueprint = Blueprint("recommendations", __name__)


@blueprint.post("/api/v1/recommendations")
@validate_request(schemas.RecommendationRequest)
@document_response(schemas.RecommendationResponse)
async def recommendations(data: schemas.RecommendationRequest):
    return Response(await recommendations_body(app_state(), data), content_type="application/json")


@blueprint.post("/api/v1/recommendations/similar")
@validate_request(schemas.SimilarRequest)
@validate_response(schemas.SimilarResponse)
async def similar(data: schemas.SimilarRequest):
    return await similar_items(app_state(), data)
