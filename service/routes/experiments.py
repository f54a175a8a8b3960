"""Experiments: ``POST`` / ``GET /api/v1/experiments``, ``GET /api/v1/experiments/{id}``
(with results), ``POST /api/v1/experiments/{id}/status``."""

from __future__ import annotations

from quart import Blueprint, jsonify
from quart_schema import validate_request

from service import schemas
from service.answers import experiments
from service.state import app_state

blueprint = Blueprint("experiments", __name__)


@blueprint.post("/api/v1/experiments")
@validate_request(schemas.ExperimentRequest)
async def create(data: schemas.ExperimentRequest):
    record = await experiments.create(app_state(), data)
    return jsonify(experiments.public(record)), 201


@blueprint.get("/api/v1/experiments")
async def listing():
    state = app_state()
    found = await state.store.experiments()
    return jsonify({"experiments": [experiments.public(r) for r in found]})


@blueprint.get("/api/v1/experiments/<experiment_id>")
async def one(experiment_id: str):
    return jsonify(await experiments.experiment(app_state(), experiment_id))


@blueprint.post("/api/v1/experiments/<experiment_id>/status")
@validate_request(schemas.ExperimentStatusRequest)
async def set_status(experiment_id: str, data: schemas.ExperimentStatusRequest):
    state = app_state()
    record = await experiments.change_status(state, experiment_id, data.status, data.variant)
    return jsonify(experiments.public(record))
