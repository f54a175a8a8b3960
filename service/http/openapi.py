"""The OpenAPI document as the API answers: every status an operation can give, the bearer key on
every /api operation, UUID path parameters and the embedding's exact length (the served model's
dimension). quart-schema builds it from the routes' models; `SonaOpenAPI` adds what the models
cannot say."""

from __future__ import annotations

from typing import Any

from quart_schema import OpenAPIProvider

from service.schemas import ErrorResponse

ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
ERROR_MEANINGS = {
    400: "invalid input: the message and details name the field",
    401: "no valid Authorization: Bearer key (when keys are configured)",
    403: "this operation needs an admin key",
    404: "unknown content, experiment or route",
    409: "the experiment's name is taken, or its status cannot go there from where it is",
    413: "request body larger than serving.max_body_bytes",
    429: "trained too recently; Retry-After says when to retry",
    503: "no model loaded yet, or overloaded; Retry-After says when to retry",
}
EXPERIMENT = "/api/v1/experiments/{experiment_id}"
ADMIN = {
    ("post", "/api/v1/content"),
    ("delete", "/api/v1/content/{content_id}"),
    ("post", "/api/v1/experiments"),
    ("post", EXPERIMENT + "/status"),
}
CONFLICTS = {("post", "/api/v1/experiments"), ("post", EXPERIMENT + "/status")}
CREATES = {("post", "/api/v1/experiments")}  # answer 201
NAMES_CONTENT = {  # operations that answer 404 for content the catalogue does not hold
    ("post", "/api/v1/recommendations/similar"),
    ("post", "/api/v1/personalization/score"),
    ("post", "/api/v1/profile/update"),
    ("get", "/api/v1/content/{content_id}"),
    ("delete", "/api/v1/content/{content_id}"),
    ("get", EXPERIMENT),
    ("post", EXPERIMENT + "/status"),
}
NEEDS_MODEL = {  # operations that answer 503 while no model is loaded, or under overload
    ("post", "/api/v1/recommendations"),
    ("post", "/api/v1/recommendations/similar"),
    ("post", "/api/v1/personalization/score"),
    ("post", "/api/v1/personalization/batch-score"),
    ("post", "/api/v1/lora/train"),
}
RATE_LIMITED = {("post", "/api/v1/lora/train")}


class SonaOpenAPI(OpenAPIProvider):
    """quart-schema's provider, completed; ``embedding_dim`` is set per app."""

    embedding_dim: int

    def schema(self) -> dict[str, Any]:
        document = super().schema()
        components = document["components"]["schemas"]
        components["ErrorResponse"] = ErrorResponse.model_json_schema()
        for path, operations in document["paths"].items():
            for method, operation in operations.items():
                self._complete(method, path, operation)
        item = components.get("ContentItem")
        if item is not None:
            embedding = item["properties"]["embedding"]["anyOf"][0]
            embedding["minItems"] = embedding["maxItems"] = self.embedding_dim
        return document

    def _complete(self, method: str, path: str, operation: dict[str, Any]) -> None:
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "path" and parameter["name"] == "content_id":
                parameter["schema"] = {"type": "string", "format": "uuid"}
        if not path.startswith("/api/"):
            if path == "/metrics":
                operation["responses"][200] = {
                    "description": "Prometheus text exposition",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            if path == "/ready":
                operation["responses"].setdefault(200, {"description": "ready"})
                operation["responses"][503] = {"description": "storage or model not ready"}
            return
        operation["security"] = [{"bearer": []}]
        statuses = [400, 401]
        if "requestBody" in operation:
            operation["requestBody"]["required"] = True
            statuses.append(413)
        key = (method, path)
        statuses += [403] * (key in ADMIN) + [404] * (key in NAMES_CONTENT)
        statuses += [409] * (key in CONFLICTS)
        statuses += [429] * (key in RATE_LIMITED) + [503] * (key in NEEDS_MODEL)
        responses = operation["responses"]
        if key in CREATES:
            responses[201] = responses.pop(200, {"description": "created"})
        if not any(200 <= int(code) < 300 for code in responses):
            responses[200] = {"description": "done"}
        for status in statuses:  # int keys, as quart-schema writes them
            responses[status] = {
                "description": ERROR_MEANINGS[status],
                "content": {"application/json": {"schema": ERROR_REF}},
            }
