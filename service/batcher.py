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


ROUND_DOWN_FROM = 8  # smallest batch worth splitting to avoid padding
MAX_PADDING_SHARE = 0.25
OVERLAP_MAX_BATCH = 8  # larger batches never run beside another one
FULL_WINDOW_FROM = 32  # batches this large (the last one) wait the whole window


class Overloaded(RuntimeError):
    """The batch queue is full."""


class MicroBatcher:
    """``process(items) -> results`` (same length, same order) runs in ``executor``, at most
    ``in_flight`` batches at a time; ``sizes`` are the batch sizes ``process`` pads to."""

    def __init__(self, name: str, process: Callable[[Sequence[Any]], Sequence[Any]],
                 executor: Executor, max_batch: int, window_ms: float, max_queue: int,
                 on_batch: Callable[[int, float], None] | None = None, in_flight: int = 1,
                 sizes: Sequence[int] = ()):
        self.name = name
        self.process = process
        self.executor = executor
        self.max_batch = max_batch
        self.window = window_ms / 1000.0
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=max_queue)
        self.on_batch = on_batch
        self.in_flight = in_flight
        self.sizes = tuple(sizes)
        self.last_size = FULL_WINDOW_FROM
        self.worker: asyncio.Task | None = None
        self.closing = False

    def start(self) -> None:
        self.worker = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    async def submit(self, item: Any) -> Any:
        if self.closing:
            raise Overloaded(f"{self.name} is shutting down")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        try:
            self.queue.put_nowait((item, future, loop.time()))
        except asyncio.QueueFull:
            raise Overloaded(f"{self.name} queue is full") from None
        return await future

    async def _gather(self) -> list:
        """The oldest waiting request, then whatever arrives until it has waited the window
        (or a full batch is there).

        The window counts from when the oldest request arrived, not from when the worker got
        to it: under load requests queue while the previous batch computes, and they have
        waited long enough by then. It also scales with the last batch's size (full from
        ``FULL_WINDOW_FROM`` requests): at light load waiting buys little company and only adds
        latency; under heavy load it lets the batch fill. One sleep per batch instead of a
        timed wait per request: at thousands of requests per second per-request timers cost
        more than they save.
        """
        batch = [await self.queue.get()]
        if self.max_batch > 1 and self.window > 0 and self.queue.qsize() < self.max_batch - 1:
            full_from = min(FULL_WINDOW_FROM, self.max_batch)
            window = self.window * min(1.0, self.last_size / full_from)
            remaining = window - (asyncio.get_running_loop().time() - batch[0][2])
            if remaining > 0:
                await asyncio.sleep(remaining)
        size = self.batch_size(1 + self.queue.qsize())
        while len(batch) < size:
            try:
                batch.append(self.queue.get_nowait())
            except asyncio.QueueEmpty:
                break
        self.last_size = len(batch)
        return batch

    def batch_size(self, waiting: int) -> int:
        """How many of ``waiting`` requests to take now.

        The engine pads a batch to the next of its compiled ``sizes``; when that padding would
        be more than a quarter of the call (33 requests in a 64-row call), taking the size
        below (32) and leaving the rest for the next call serves more per second. Small
        batches are always taken whole: there latency matters more than padding.
        """
        waiting = min(waiting, self.max_batch)
        if not self.sizes:
            return waiting
        up = min((s for s in self.sizes if s >= waiting), default=waiting)
        down = max((s for s in self.sizes if s <= waiting), default=waiting)
        if down >= ROUND_DOWN_FROM and (up - waiting) > MAX_PADDING_SHARE * up:
            return down
        return waiting

    async def _run(self) -> None:
        """Gather a batch whenever an engine slot is free; small batches run concurrently up to
        ``in_flight`` (at light load a request then need not wait for the call before it),
        large ones one at a time."""
        slots = asyncio.Semaphore(self.in_flight)
        running: set[asyncio.Task] = set()
        stopping = False
        while not stopping:
            await slots.acquire()
            batch = await self._gather()
            stopping = any(future is None for _, future, _ in batch)
            live = [(item, future) for item, future, _ in batch
                    if future is not None and not future.done()]
            if not live:
                slots.release()
                continue
            if running and len(live) > OVERLAP_MAX_BATCH:
                # A large batch means heavy load: two large calls at once only fight over
                # the cores (measured: saturated throughput fell by a quarter), so wait.
                await asyncio.wait(set(running))
            task = asyncio.get_running_loop().create_task(self._serve(live, slots))
            running.add(task)
            task.add_done_callback(running.discard)
        if running:
            await asyncio.gather(*running)

    async def _serve(self, live: list, slots: asyncio.Semaphore) -> None:
        started = time.perf_counter()
        try:
            results = await asyncio.get_running_loop().run_in_executor(
                self.executor, self.process, [item for item, _ in live])
        except Exception as error:  # noqa: BLE001 - one bad batch must not kill the worker
            log.exception("%s batch failed", self.name)
            for _, future in live:
                if not future.done():
                    future.set_exception(error)
            return
        finally:
            slots.release()
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
        await self.queue.put((None, None, 0.0))  # sentinel: behind every queued request
        try:
            await asyncio.wait_for(asyncio.shield(self.worker), timeout)
        except TimeoutError:
            self.worker.cancel()
