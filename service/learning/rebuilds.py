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
from pathlib import Path

from service.serving.periodic import every
from service.settings import Settings
from service.storage import RebuildRecord, Store
from sona_jax.config import SonaConfig

log = logging.getLogger("sona.rebuilds")
EXIT_BUSY = 75  # `sona train --from-store`: another trainer holds the lock
TRAINER_NICE = 19


def lowest_priority() -> None:
    """In the trainer child, before it runs: the lowest CPU priority."""
    os.nice(TRAINER_NICE)


def trainer_command(
    data_dir: Path,
    *,
    config_path: Path | None = None,
    config: SonaConfig | None = None,
    database_url: str | None = None,
    keep: int | None = None,
) -> list[str]:
    """``sona train --from-store`` as a child process: on the store at ``database_url`` (else
    SQLite in ``data_dir``), under a TOML file or an engine config, keeping ``keep`` versions."""
    command = [sys.executable, "-m", "service.cli", "train", "--from-store"]
    command += ["--data-dir", str(data_dir)]
    if config_path is not None:
        command += ["--config", str(config_path)]
    if config is not None:
        command += ["--config-json", json.dumps(config.model_dump())]
    if keep is not None:
        command += ["--keep", str(keep)]
    if database_url:
        command += ["--database-url", database_url]
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
        learning = self.settings.learning
        if learning.rebuild_interval_seconds > 0:
            self.task = every(
                learning.rebuild_interval_seconds, self._due, "scheduled rebuild", log
            )

    async def _due(self) -> None:
        if await self.events_since_model() >= self.settings.learning.rebuild_min_events:
            await self.rebuild()

    async def rebuild(self) -> str:
        """Run one trainer; returns "succeeded", "skipped" (another holds the lock) or
        "failed" (recorded in the store when the trainer could not record it itself)."""
        async with self.store.trainer_lock() as free:
            if not free:  # cheap check first: no child process just to find the lock held
                return "skipped"
        started = time.time()
        self.running = await asyncio.create_subprocess_exec(
            *trainer_command(
                self.settings.data_dir,
                config=self.settings.config,
                database_url=self.settings.database_url,
                keep=self.settings.learning.keep_versions,
            ),
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
