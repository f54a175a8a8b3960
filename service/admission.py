"""Admission by waiting time (``serving.max_wait_ms``): a request that has already waited, or
would wait, longer than the deadline is answered 503 + Retry-After rather than served late.

A request's clock starts when the app first sees it (`mark_started`, on the fast path and in
Quart's before-request hook) and is checked before each stage that queues: the profile lookup
(store reads) and the engine's micro-batch queue (`service.batcher`), which also refuses, when
it takes a request, one whose deadline has passed meanwhile.
"""

from __future__ import annotations

import time
from contextvars import ContextVar

REQUEST_STARTED: ContextVar[float | None] = ContextVar("sona_request_started", default=None)


class Overloaded(RuntimeError):
    """The request would wait too long (or a queue is full); ``retry_after`` in seconds."""

    def __init__(self, message: str, retry_after: float = 1.0):
        super().__init__(message)
        self.retry_after = retry_after


def mark_started() -> float:
    """Start this request's clock (monotonic seconds); returns it."""
    now = time.monotonic()
    REQUEST_STARTED.set(now)
    return now


def request_started() -> float:
    """When this request started (now, outside a request)."""
    started = REQUEST_STARTED.get()
    return time.monotonic() if started is None else started


def admit(max_wait_ms: float, stage: str) -> None:
    """Raise `Overloaded` when this request has waited longer than ``max_wait_ms`` (0: never)
    before ``stage``."""
    if not max_wait_ms:
        return
    waited = time.monotonic() - request_started()
    if waited * 1000 > max_wait_ms:
        raise Overloaded(
            f"waited {waited * 1000:.0f} ms before {stage} (serving.max_wait_ms is "
            f"{max_wait_ms:.0f})",
            retry_after=waited,
        )
