"""Admission by waiting time (``serving.max_wait_ms``): a request that has already waited, or
would wait, longer than the deadline is answered 503 + Retry-After rather than served late.

A request's clock starts when the app first sees it (`mark_started`, on the fast path and in
Quart's before-request hook) and is checked on entry to each stage that queues: the profile
lookup (store reads and profile builds, with its queue as predicted on entry) and the engine's
micro-batch queue (`service.serving.batcher`, which also refuses, when it takes a request, one whose
deadline has passed meanwhile). Time spent waiting on the shared cache does not count
(`excuse`): the cache is optional, and a Redis that stalls or restarts degrades requests to
cache misses, it does not fail them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass
class RequestClock:
    started: float  # monotonic seconds
    excused: float = 0.0  # seconds that do not count (waiting on the optional cache)


REQUEST_CLOCK: ContextVar[RequestClock | None] = ContextVar("sona_request_clock", default=None)


class Overloaded(RuntimeError):
    """The request would wait too long (or a queue is full); ``retry_after`` in seconds."""

    def __init__(self, message: str, retry_after: float = 1.0):
        super().__init__(message)
        self.retry_after = retry_after


def mark_started() -> None:
    """Start this request's clock."""
    REQUEST_CLOCK.set(RequestClock(time.monotonic()))


def waited() -> float:
    """Seconds this request has waited so far, less what is excused (0 outside a request)."""
    clock = REQUEST_CLOCK.get()
    return 0.0 if clock is None else time.monotonic() - clock.started - clock.excused


def excuse(seconds: float) -> None:
    """Do not count ``seconds`` (spent on the optional cache) against this request's deadline."""
    clock = REQUEST_CLOCK.get()
    if clock is not None:
        clock.excused += seconds


STAGE_SMOOTHING = 0.1  # weight of the newest request in a stage's running cost


class RunningCost:
    """An exponentially weighted average of seconds per request (0 until the first sample,
    which it then takes whole)."""

    def __init__(self, smoothing: float):
        self.smoothing, self.seconds = smoothing, 0.0

    def add(self, seconds: float) -> None:
        weight = self.smoothing if self.seconds else 1.0
        self.seconds += weight * (seconds - self.seconds)


class Stage:
    """A step requests queue for (the profile lookup: store reads, profile builds): how many
    are in it, and what one more costs. The cost is each request's time in the stage over the
    requests it found there plus itself, so it is the cost per request whatever the stage's
    parallelism (one SQLite connection, a PostgreSQL pool), and ``in_flight * cost`` is what a
    newcomer would wait."""

    def __init__(self, name: str):
        self.name, self.in_flight, self.cost = name, 0, RunningCost(STAGE_SMOOTHING)

    @contextlib.contextmanager
    def admitted(self, max_wait_ms: float) -> Iterator[None]:
        """Enter the stage, or raise `Overloaded` when this request has waited, or would wait
        here, longer than ``max_wait_ms`` (0: never refuse)."""
        now, so_far = time.monotonic(), waited()
        expected = so_far + self.in_flight * self.cost.seconds
        if max_wait_ms and expected * 1000 > max_wait_ms:
            raise Overloaded(
                f"waited {so_far * 1000:.0f} ms, and {self.in_flight} requests ahead in "
                f"{self.name} would take about {self.in_flight * self.cost.seconds * 1000:.0f} ms more "
                f"(serving.max_wait_ms is {max_wait_ms:.0f})",
                retry_after=expected,
            )
        ahead = self.in_flight
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            self.cost.add((time.monotonic() - now) / (ahead + 1))
