"""The SONA HTTP API (SPEC 5) on Quart: `create_app(settings)`.

The app is its typed state (`service.state.AppState`), one blueprint per resource
(`service.routes`), JSON error handlers, API-key checks and request metrics; the two hot routes
are also served by a lean ASGI path in front of Quart (`service.http.fast_path`) with the same
handlers. No scoring logic lives here.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

from quart import Quart, Request, Response, g, request
from quart_schema import QuartSchema

from service import VERSION, schemas
from service.answers.recommendations import recommendations_body
from service.answers.scores import score_body
from service.errors import ApiError, refusal
from service.http.body import parse_json
from service.http.error_handlers import refusal_of, register_error_handlers
from service.http.fast_path import FastPath, HotRoute
from service.http.openapi import SonaOpenAPI
from service.routes import BLUEPRINTS
from service.routes.assets import SWAGGER_CSS, SWAGGER_JS
from service.serving.admission import mark_started
from service.settings import Settings
from service.state import EXTENSION, AppState


class SonaRequest(Request):
    """Quart's request, with JSON bodies read through the one input boundary
    (`service.http.body.parse_json`): malformed bytes are a 400 naming what is wrong."""

    max_json_depth: int  # set per app, from serving.max_json_depth

    async def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        if cache and self._cached_json[silent] is not Ellipsis:
            return self._cached_json[silent]
        if not (force or self.is_json):
            return None
        result = parse_json(await self.get_data(cache=cache, as_text=False), self.max_json_depth)
        if cache:
            self._cached_json[silent] = result
        return result


def create_app(settings: Settings | None = None) -> Quart:
    """The app for ``settings`` (defaults: SQLite under ./sona-data, in-process cache)."""
    state = AppState(settings or Settings())
    app = Quart("sona")
    app.request_class = type(
        "SonaRequest", (SonaRequest,), {"max_json_depth": state.serving.max_json_depth}
    )
    app.extensions[EXTENSION] = state
    app.config["MAX_CONTENT_LENGTH"] = state.serving.max_body_bytes
    # The docs page loads Swagger UI from the service (no CDN: hosts without internet);
    # ReDoc and Scalar would load theirs from a CDN, so they are not served.
    app.config["QUART_SCHEMA_SWAGGER_JS_URL"] = SWAGGER_JS
    app.config["QUART_SCHEMA_SWAGGER_CSS_URL"] = SWAGGER_CSS
    QuartSchema(
        app,
        redoc_ui_path=None,
        scalar_ui_path=None,
        info={"title": "SONA personalization engine", "version": VERSION},
        security_schemes={"bearer": {"type": "http", "scheme": "bearer"}},
        openapi_provider_class=type(
            "AppOpenAPI", (SonaOpenAPI,), {"embedding_dim": state.cfg.model.embedding_dim}
        ),
    )
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    register_error_handlers(app, state.metrics, state.serving.max_body_bytes)
    app.before_serving(state.start)
    app.after_serving(state.stop)

    @app.before_request
    async def authenticate():
        mark_started()
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
        state.serving.max_json_depth,
        state.keys,
        state.metrics.observe_request,
        partial(refusal_of, metrics=state.metrics),
    )
    return app


__all__ = ["Settings", "create_app"]
