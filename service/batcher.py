"""Micro-batching: gather concurrent requests for a few milliseconds (or a full bucket) and
serve them with one call run off the event loop.

The queue is bounded: `submit` raises `Overloaded` when it is full, which the API answers with
503 + Retry-After. A waiter that was cancelled (its caller hung up) is skipped — its item is
neither computed nor answered — and nothing it does can stop the worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any

log = logging.getLogger("sona.batcher")


class Overloaded(RuntimeError):
    """The batch queue is full."""


class MicroBatcher:
    """``process(items) -> results`` (same length, same order) runs in ``executor``."""

    def __init__(self, name: str, process: Callable[[Sequence[Any]], Sequence[Any]],
                 executor: Executor, max_batch: int, window_ms: float, max_queue: int,
                 on_batch: Callable[[int, float], None] | None = None):
        self.name = name
        self.process = process
        self.executor = executor
        self.max_batch = max_batch
        self.window = window_ms / 1000.0
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=max_queue)
        self.on_batch = on_batch
        self.worker: asyncio.Task | None = None
        self.closing = False

    def start(self) -> None:
        self.worker = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    async def submit(self, item: Any) -> Any:
        if self.closing:
            raise Overloaded(f"{self.name} is shutting down")
        future = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait((item, future))
        except asyncio.QueueFull:
            raise Overloaded(f"{self.name} queue is full") from None
        return await future

    async def _gather(self) -> list:
        """The first waiting request, then whatever arrives within the window (or a full batch).

        One sleep per batch instead of a timed wait per request: at thousands of requests per
        second the per-request timers cost more than the window saves.
        """
        batch = [await self.queue.get()]
        if self.max_batch > 1 and self.window > 0 and self.queue.qsize() < self.max_batch - 1:
            await asyncio.sleep(self.window)
        while len(batch) < self.max_batch:
            try:
                batch.append(self.queue.get_nowait())
            except asyncio.QueueEmpty:
                break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            batch = await self._gather()
            stopping = any(future is None for _, future in batch)
            live = [(item, future) for item, future in batch
                    if future is not None and not future.done()]
            if not live:
                continue
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(
                    self.executor, self.process, [item for item, _ in live])
            except Exception as error:  # noqa: BLE001 - one bad batch must not kill the worker
                log.exception("%s batch failed", self.name)
                for _, future in live:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), result in zip(live, results, strict=True):
                if not future.done():  # cancelled while we computed: skip
                    future.set_result(result)
            if self.on_batch is not None:
                self.on_batch(len(live), time.perf_counter() - started)

    async def drain(self, timeout: float = 10.0) -> None:
        """Stop taking work, answer everything already queued, then stop the worker."""
        self.closing = True
        if self.worker is None:
            return
        await self.queue.put((None, None))  # sentinel: behind every queued request
        try:
            await asyncio.wait_for(asyncio.shield(self.worker), timeout)
        except TimeoutError:
            self.worker.cancel()
