"""``GET /health`` (live), ``GET /ready`` (storage, cache and model) and ``GET /metrics``."""

from __future__ import annotations

import contextlib

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from quart import Blueprint, Response, jsonify
from quart_schema import validate_response

from service import SERVICE_NAME, VERSION, schemas
from service.answers.freshness import freshness, set_gauges
from service.state import app_state

blueprint = Blueprint("health", __name__)


@blueprint.get("/health")
@validate_response(schemas.HealthResponse)
async def health():
    return schemas.HealthResponse(status="healthy", service=SERVICE_NAME, version=VERSION)


@blueprint.get("/ready")
async def ready():
    state = app_state()
    checks = {"storage": False, "cache": False, "model": state.runtime is not None}
    with contextlib.suppress(Exception):
        checks["storage"] = await state.store.ping()
    checks["cache"] = await state.cache.ping()
    ok = checks["storage"] and checks["model"]  # losing Redis degrades, it does not stop us
    body = {
        "status": "ready" if ok else "not_ready",
        "checks": checks,
        "storage": state.store.kind,
        "cache": state.cache.kind,
        "model_version": state.runtime.version if checks["model"] else None,
        "model": freshness(state),
        "startup": state.startup.report(),
    }
    return jsonify(body), 200 if ok else 503


@blueprint.get("/metrics")
async def metrics():
    state = app_state()
    set_gauges(state)
    return Response(generate_latest(state.metrics.registry), content_type=CONTENT_TYPE_LATEST)
