"""The SONA HTTP API (SPEC 5) on Quart: `create_app(settings)`.

The app is its typed state (`service.state.AppState`), one blueprint per resource
(`service.routes`), JSON error handlers, API-key checks and request metrics; the two hot routes
are also served by a lean ASGI path in front of Quart (`service.fast_path`) with the same
handlers. No scoring logic lives here.
"""

from __future__ import annotations

import time
from functools import partial

from quart import Quart, Response, g, request
from quart_schema import QuartSchema

from service import schemas
from service.error_handlers import refusal_of, register_error_handlers
from service.errors import ApiError, refusal
from service.fast_path import FastPath, HotRoute
from service.routes import BLUEPRINTS
from service.routes.health import VERSION
from service.routes.recommendations import recommendations_body
from service.routes.scores import score_body
from service.settings import Settings
from service.state import EXTENSION, AppState


def create_app(settings: Settings | None = None) -> Quart:
    """The app for ``settings`` (defaults: SQLite under ./sona-data, in-process cache)."""
    state = AppState(settings or Settings())
    app = Quart("sona")
    app.extensions[EXTENSION] = state
    app.config["MAX_CONTENT_LENGTH"] = state.serving.max_body_bytes
    QuartSchema(
        app,
        info={"title": "SONA personalization engine", "version": VERSION},
        security_schemes={"bearer": {"type": "http", "scheme": "bearer"}},
    )
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    register_error_handlers(app, state.metrics, state.serving.max_body_bytes)
    app.before_serving(state.start)
    app.after_serving(state.stop)

    @app.before_request
    async def authenticate():
        g.started = time.perf_counter()
        try:
            state.keys(request.method, request.path, request.headers.get("Authorization", ""))
        except ApiError as error:
            return refusal(error)
        return None

    @app.after_request
    async def record(response: Response) -> Response:
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        started = getattr(g, "started", None)
        elapsed = None if started is None else time.perf_counter() - started
        state.metrics.observe_request(endpoint, response.status_code, elapsed)
        return response

    hot = {
        "/api/v1/recommendations": (schemas.RecommendationRequest, recommendations_body),
        "/api/v1/personalization/score": (schemas.ScoreRequest, score_body),
    }
    app.asgi_app = FastPath(
        app.asgi_app,
        {path: HotRoute(model, partial(body, state), path) for path, (model, body) in hot.items()},
        state.serving.max_body_bytes,
        state.keys,
        state.metrics.observe_request,
        partial(refusal_of, metrics=state.metrics),
    )
    return app


__all__ = ["Settings", "create_app"]
