"""API keys (SPEC 5): a valid ``Authorization: Bearer`` key on every /api route when keys are
configured, and an admin key for catalogue writes (SPEC 5: "catalog writes need an admin key";
adapter training is a route SPEC 5 lists for ordinary callers), and for creating and changing
experiments (they change what every viewer is served)."""

from __future__ import annotations

from service.errors import ApiError

ADMIN_ROUTES = frozenset({("POST", "/api/v1/content")})
SCHEME = "bearer"  # compared case-insensitively (RFC 9110: auth schemes are case-insensitive)


class KeyCheck:
    """``check(method, path, header)`` raises 401 without a valid key (when keys are
    configured) and 403 for admin operations without an admin key."""

    def __init__(self, api_keys: frozenset[str], admin_keys: frozenset[str]):
        self.api_keys, self.admin_keys = api_keys, admin_keys

    def __call__(self, method: str, path: str, header: str) -> None:
        if not self.api_keys and not self.admin_keys:
            return
        if not path.startswith("/api/"):
            return
        scheme, _, credentials = header.strip().partition(" ")
        key = credentials.strip() if scheme.lower() == SCHEME else ""
        if key not in self.api_keys and key not in self.admin_keys:
            raise ApiError(
                401,
                "unauthorized",
                "a valid Authorization: Bearer key is required",
                headers={"WWW-Authenticate": "Bearer"},
            )
        needs_admin = (
            (method, path) in ADMIN_ROUTES
            or (method == "DELETE" and path.startswith("/api/v1/content/"))
            or (method == "POST" and path.startswith("/api/v1/experiments"))
        )
        if needs_admin and key not in self.admin_keys:
            raise ApiError(403, "forbidden", "this operation needs an admin key")
