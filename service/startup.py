"""What start-up is doing, for the log and for `/ready`: a phase, its progress, how long it has
run. Start-up work that takes more than a moment (seeding the demo, training the first model,
compiling) reports through `advance`; the log gets a line per phase and per tenth of it."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

log = logging.getLogger("sona.startup")
LOG_STEPS = 10  # progress lines per phase


@dataclass
class Startup:
    phase: str = "opening storage"
    done_steps: int = 0
    total_steps: int = 0
    began: float = field(default_factory=time.monotonic)
    phase_began: float = field(default_factory=time.monotonic)
    finished_after: float | None = None  # seconds from start to ready
    error: str | None = None

    def begin(self, phase: str) -> None:
        self.phase, self.done_steps, self.total_steps = phase, 0, 0
        self.phase_began = time.monotonic()
        log.info("start-up: %s", phase)

    def advance(self, done: int, total: int) -> None:
        """``done`` of ``total`` steps of the current phase (callable from any thread)."""
        step = max(1, total // LOG_STEPS)
        if done == total or done // step != self.done_steps // step:
            log.info(
                "start-up: %s, %d of %d (%.1f s)",
                self.phase,
                done,
                total,
                time.monotonic() - self.phase_began,
            )
        self.done_steps, self.total_steps = done, total

    def done(self) -> None:
        self.finished_after = time.monotonic() - self.began
        self.phase = "ready"
        log.info("start-up: ready after %.1f s", self.finished_after)

    def failed(self, error: str) -> None:
        self.phase, self.error = "failed", error

    def report(self) -> dict:
        """What `/ready` shows."""
        now = time.monotonic()
        body = {"phase": self.phase, "seconds": round(now - self.began, 2)}
        if self.total_steps:
            body["progress"] = {"done": self.done_steps, "total": self.total_steps}
        if self.finished_after is not None:
            body["seconds"] = round(self.finished_after, 2)
        if self.error is not None:
            body["error"] = self.error
        return body
