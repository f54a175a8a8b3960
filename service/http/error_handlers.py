"""Every error answers JSON ``{"error", "message", "details"?}`` (SPEC 5): validation errors,
HTTP errors (404, 405, 413, malformed JSON), overload (503) and anything unexpected (500)."""

from __future__ import annotations

import logging
import math

from pydantic import ValidationError
from quart import Quart, request
from quart_schema import RequestSchemaValidationError
from werkzeug.exceptions import HTTPException

from service.errors import ApiError, refusal
from service.metrics import Metrics
from service.serving.admission import Overloaded

log = logging.getLogger("sona")
HTTP_ERROR_NAMES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}


def refusal_of(error: Exception, metrics: Metrics) -> ApiError:
    """What a handler's exception is answered with (on the Quart route and the fast path)."""
    if isinstance(error, ApiError):
        return error
    if isinstance(error, Overloaded):
        metrics.overloaded.inc()
        retry = str(max(1, math.ceil(error.retry_after)))  # whole seconds (RFC 9110)
        return ApiError(503, "overloaded", str(error), headers={"Retry-After": retry})
    log.error("unhandled error on a hot route", exc_info=error)
    return ApiError(500, "internal_error", "the server failed; this is logged")


def validation_refusal(error: RequestSchemaValidationError) -> ApiError:
    """A 400 naming each invalid field."""
    if not isinstance(error.validation_error, ValidationError):
        return ApiError(400, "validation_error", f"invalid request body: {error.validation_error}")
    return invalid_fields(error.validation_error)


def invalid_fields(error: ValidationError, prefix: tuple[str, ...] = ()) -> ApiError:
    """A 400 naming each field pydantic refused, under ``prefix`` (where the validated part
    sits in the request, e.g. ("filters",))."""
    details = [
        {"field": ".".join(str(p) for p in (*prefix, *e["loc"])) or "body", "message": e["msg"]}
        for e in error.errors(include_url=False, include_context=False)
    ]
    message = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5])
    return ApiError(400, "validation_error", message, details)


def register_error_handlers(app: Quart, metrics: Metrics, max_body_bytes: int) -> None:
    @app.errorhandler(RequestSchemaValidationError)
    async def invalid(error: RequestSchemaValidationError):
        return refusal(validation_refusal(error))

    @app.errorhandler(ApiError)
    async def api_error(error: ApiError):
        return refusal(error)

    @app.errorhandler(Overloaded)
    async def overloaded(error: Overloaded):
        return refusal(refusal_of(error, metrics))

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException):
        message = {
            413: f"request body larger than {max_body_bytes} bytes",
            400: "malformed request: the body must be valid JSON",
            404: f"no route {request.method} {request.path}",
        }.get(error.code, error.description or error.name)
        name = HTTP_ERROR_NAMES.get(error.code, "http_error")
        allowed = getattr(error, "valid_methods", None)  # a 405 says what is allowed (RFC 9110)
        headers = {"Allow": ", ".join(sorted(allowed))} if allowed else None
        return refusal(ApiError(error.code or 500, name, message, headers=headers))

    @app.errorhandler(Exception)
    async def unexpected(error: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return refusal(ApiError(500, "internal_error", "the server failed; this is logged"))
