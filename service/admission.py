"""Admission by waiting time (``serving.max_wait_ms``): a request that has already waited, or
would wait, longer than the deadline is answered 503 + Retry-After rather than served late.

A request's clock starts when the app first sees it (`mark_started`, on the fast path and in
Quart's before-request hook) and is checked before each stage that queues: the profile lookup
(store reads) and the engine's micro-batch queue (`service.batcher`), which also refuses, when
it takes a request, one whose deadline has passed meanwhile.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
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


COST_SMOOTHING = 0.1  # weight of the newest request in a stage's running cost


class Stage:
    """A step requests queue for (the profile lookup: store reads, profile builds): how many
    are in it, and what one more costs. The cost is each request's time in the stage over the
    requests it found there plus itself, so it is the cost per request whatever the stage's
    parallelism (one SQLite connection, a PostgreSQL pool), and ``in_flight * cost`` is what a
    newcomer would wait."""

    def __init__(self, name: str):
        self.name, self.in_flight, self.cost = name, 0, 0.0

    @contextlib.contextmanager
    def admitted(self, max_wait_ms: float) -> Iterator[None]:
        """Enter the stage, or raise `Overloaded` when this request has waited, or would wait
        here, longer than ``max_wait_ms`` (0: never refuse)."""
        now = time.monotonic()
        waited = now - request_started()
        expected = waited + self.in_flight * self.cost
        if max_wait_ms and expected * 1000 > max_wait_ms:
            raise Overloaded(
                f"waited {waited * 1000:.0f} ms, and {self.in_flight} requests ahead in "
                f"{self.name} would take about {self.in_flight * self.cost * 1000:.0f} ms more "
                f"(serving.max_wait_ms is {max_wait_ms:.0f})",
                retry_after=expected,
            )
        ahead = self.in_flight
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            per_request = (time.monotonic() - now) / (ahead + 1)
            smoothing = COST_SMOOTHING if self.cost else 1.0
            self.cost += smoothing * (per_request - self.cost)
