"""Background adapter training: viewers due (every N new events, or asked) are trained together
in one vmapped call, off the request path."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import replace

from service.serving.profiles import Profiles

MILLISECONDS = 1000


class InsufficientData(Exception):
    """Fewer than ``lora.min_events`` usable events: ``count`` of the ``stored`` events are on
    items the served model knows (the others cannot train an adapter yet)."""

    def __init__(self, count: int, stored: int | None = None):
        super().__init__(count)
        self.count, self.stored = count, count if stored is None else stored


class TooSoon(Exception):
    def __init__(self, retry_after: float):
        super().__init__(retry_after)
        self.retry_after = retry_after


class Learner:
    """Gathers training requests for ``window_ms`` (at most ``max_batch`` viewers) and trains
    them in one engine call."""

    def __init__(self, profiles: Profiles, max_batch: int, window_ms: float):
        self.profiles = profiles
        self.queue: asyncio.Queue = asyncio.Queue()
        self.max_batch, self.window = max_batch, window_ms / MILLISECONDS
        self.task: asyncio.Task | None = None
        self.trained = 0

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run(), name="learner")

    def schedule(self, user_id: str) -> None:
        self.queue.put_nowait((user_id, False, None))

    async def train_now(self, user_id: str, force: bool) -> dict:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((user_id, force, future))
        return await future

    async def _run(self) -> None:
        while True:
            batch = [await self.queue.get()]
            deadline = time.monotonic() + self.window
            while len(batch) < self.max_batch and (left := deadline - time.monotonic()) > 0:
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), left))
                except TimeoutError:
                    break
            try:
                await self._train(batch)
            except Exception as error:  # noqa: BLE001 - keep learning after a failed batch
                for _, _, future in batch:
                    if future is not None and not future.done():
                        future.set_exception(error)

    async def _train(self, batch) -> None:
        runtime = self.profiles.runtime
        cfg = runtime.cfg.lora
        now = time.time()
        user_ids, versions, profiles, events, waiters = [], [], [], [], []
        for user_id, force, future in batch:
            if user_id in user_ids:  # one training per user per batch; share the result
                waiters[user_ids.index(user_id)].append(future)
                continue
            stored = await self.profiles.store.user_events(user_id)
            known = runtime.engine.item_index
            usable = sum(e.content_id in known for e in stored)
            if usable < cfg.min_events:
                if future is not None and not future.done():
                    future.set_exception(InsufficientData(usable, len(stored)))
                continue
            version, profile = await self.profiles.entry(user_id)
            wait = profile.last_trained + cfg.train_interval_seconds - now
            if wait > 0 and not force:
                if future is not None and not future.done():
                    future.set_exception(TooSoon(wait))
                continue
            user_ids.append(user_id)
            versions.append(version)
            profiles.append(profile)
            events += stored
            waiters.append([future])
        if not user_ids:
            return
        started = time.perf_counter()
        results = await self.profiles.in_engine(
            runtime.train_batch, user_ids, profiles, events, now
        )
        duration_ms = (time.perf_counter() - started) * MILLISECONDS
        for user_id, version, profile, futures, result in zip(
            user_ids, versions, profiles, waiters, results, strict=True
        ):
            trained = replace(profile, adapter=result.adapter, last_trained=now)
            await self.profiles.save_trained(user_id, version, trained)
            self.trained += 1
            info = {
                "duration_ms": duration_ms,
                "events_used": result.events_used,
                "loss": result.loss,
                "loss_before": result.loss_before,
                "batch_users": len(user_ids),
            }
            for future in futures:
                if future is not None and not future.done():
                    future.set_result(info)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
