"""Scheduled rebuilds (SPEC 4.2, ``[learning] rebuild_interval_seconds``): every interval, when
at least ``rebuild_min_events`` events arrived since the served model, run ``sona train
--from-store`` as a child process — off the serving path (its own interpreter and cores' worth
of Python), one at a time across every process and host (the store's trainer lock). The model
watcher then swaps every process to the new version."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable

from service.settings import Settings
from service.storage import RebuildRecord, Store

log = logging.getLogger("sona.rebuilds")
EXIT_BUSY = 75  # `sona train --from-store`: another trainer holds the lock
TRAINER_NICE = 19


def lowest_priority() -> None:
    """In the trainer child, before it runs: the lowest CPU priority."""
    os.nice(TRAINER_NICE)


def trainer_command(settings: Settings) -> list[str]:
    """The child process that rebuilds from this server's store under its engine config."""
    command = [
        sys.executable,
        "-m",
        "service.cli",
        "train",
        "--from-store",
        "--data-dir",
        str(settings.data_dir),
        "--config-json",
        json.dumps(settings.config.model_dump()),
        "--keep",
        str(settings.learning.keep_versions),
    ]
    if settings.database_url:
        command += ["--database-url", settings.database_url]
    return command


class RebuildScheduler:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        events_since_model: Callable[[], Awaitable[int]],
        on_success: Callable[[], Awaitable[None]],
    ):
        self.settings, self.store = settings, store
        self.events_since_model, self.on_success = events_since_model, on_success
        self.task: asyncio.Task | None = None
        self.running: asyncio.subprocess.Process | None = None

    def start(self) -> None:
        if self.settings.learning.rebuild_interval_seconds > 0:
            self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        learning = self.settings.learning
        while True:
            await asyncio.sleep(learning.rebuild_interval_seconds)
            try:
                if await self.events_since_model() >= learning.rebuild_min_events:
                    await self.rebuild()
            except Exception:  # noqa: BLE001 - try again next interval
                log.exception("scheduled rebuild failed")

    async def rebuild(self) -> str:
        """Run one trainer; returns "succeeded", "skipped" (another holds the lock) or
        "failed" (recorded in the store when the trainer could not record it itself)."""
        async with self.store.trainer_lock() as free:
            if not free:  # cheap check first: no child process just to find the lock held
                return "skipped"
        started = time.time()
        self.running = await asyncio.create_subprocess_exec(
            *trainer_command(self.settings),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=lowest_priority,  # the server's threads keep their cores
        )
        try:
            _, stderr = await asyncio.wait_for(
                self.running.communicate(), self.settings.learning.trainer_timeout_seconds
            )
        except TimeoutError:
            self.running.kill()
            await self.running.wait()
            stderr = b"timed out"
        code, self.running = self.running.returncode, None
        if code == 0:
            log.info("rebuild succeeded in %.1fs", time.time() - started)
            await self.on_success()
            return "succeeded"
        if code == EXIT_BUSY:
            return "skipped"
        last = await self.store.last_rebuild()
        if last is None or last.started_at < started:  # the trainer died before recording
            message = stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
            await self.store.record_rebuild(
                RebuildRecord(started, time.time(), "failed", None, f"exit {code}: {message[0]}")
            )
        log.error("rebuild failed (exit %s)", code)
        return "failed"

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.running is not None and self.running.returncode is None:
            self.running.kill()
