"""The HTTP boundary: the lean fast path for the hot endpoints, request bodies, the OpenAPI
document, error handlers and API keys."""
