"""``POST /api/v1/personalization/score`` and its batch form for search re-ranking."""

from __future__ import annotations

from quart import Blueprint, Response
from quart_schema import document_response, validate_request, validate_response

from service import schemas
from service.answers.scores import batch_scores, score_body
from service.state import app_state

blueprint = Blueprint("scores", __name__)


@blueprint.post("/api/v1/personalization/score")
@validate_request(schemas.ScoreRequest)
@document_response(schemas.ScoreResponse)
async def score(data: schemas.ScoreRequest):
    return Response(await score_body(app_state(), data), content_type="application/json")


@blueprint.post("/api/v1/personalization/score/batch")
@validate_request(schemas.BatchScoreRequest)
@validate_response(schemas.BatchScoreResponse)
async def score_batch(data: schemas.BatchScoreRequest):
    return await batch_scores(app_state(), data)
