"""The one error type handlers raise: answered as ``{"error", "message", "details"?}``."""

from __future__ import annotations

import orjson


class ApiError(Exception):
    """An error answered with ``status``, a JSON body and extra ``headers``."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        details=None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.error, self.message = status, error, message
        self.details, self.headers = details, headers or {}

    def fields(self) -> dict:
        fields = {"error": self.error, "message": self.message}
        if self.details is not None:
            fields["details"] = self.details
        return fields

    def body(self) -> bytes:
        return orjson.dumps(self.fields())


def refusal(error: ApiError):
    """The Quart response answering ``error``."""
    from quart import Response

    response = Response(error.body(), status=error.status, content_type="application/json")
    for key, value in error.headers.items():
        response.headers[key] = value
    return response
