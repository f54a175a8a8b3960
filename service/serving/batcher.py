"""Micro-batching: gather concurrent requests for a few milliseconds (or a full bucket) and
serve them with one call run off the event loop.

Engine threads pull batches from a thread-safe queue themselves: when a call ends, the thread
takes the requests that arrived meanwhile and starts the next call at once, without a round
trip through the event loop (which at saturation is busy answering the batch just finished:
measured, that round trip left the engine idle for about a fifth of the time). The loop only
enqueues requests and, once per batch, hands the results to the waiting callers.

Admission is by waiting time, not only by length: `submit` raises `Overloaded` (the API answers
503 + Retry-After) at once when the requests ahead would take longer than ``max_wait_ms`` to
serve at the measured cost per request, and an engine thread answers 503 for any request that
has waited longer than that by the time it is taken (the estimate can be wrong: a burst arrives
faster than it is measured). So an answered request has waited at most the deadline plus one
batch. The queue is bounded too (``max_queue``). A waiter that was cancelled (its caller hung
up) is skipped — its item is neither computed nor answered — and nothing it does can stop the
worker.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from service.serving.admission import Overloaded, RunningCost, waited
from service.settings import ServingSettings

log = logging.getLogger("sona.batcher")


ROUND_DOWN_FROM = 8  # smallest batch worth splitting to avoid padding
MAX_PADDING_SHARE = 0.25
OVERLAP_MAX_BATCH = 8  # larger batches run alone when the engine computes on several threads
FULL_WINDOW_FROM = 32  # batches this large (the last one) wait the whole window
_STOP = object()  # queued behind everything by `drain`


COST_SMOOTHING = 0.2  # weight of the newest batch in the running cost per request


class MicroBatcher:
    """``process(items) -> results`` (same length, same order) runs on ``engines`` threads of
    its own, at most that many batches at a time; ``sizes`` are the batch sizes ``process``
    pads to; batches larger than ``solo_from`` wait until no other batch runs (None: never).

    With one XLA thread (`serving.xla_threads = 1`) two calls in flight overlap one call's
    Python (building the batch, reading results) with the other's computation, which queues
    on that thread; with a pool of XLA threads, two large calls at once fight over the cores
    (measured: saturated throughput fell by a quarter), hence ``solo_from``.
    """

    def __init__(
        self,
        name: str,
        process: Callable[[Sequence[Any]], Sequence[Any]],
        max_batch: int,
        window_ms: float,
        max_queue: int,
        on_batch: Callable[[int, float], None] | None = None,
        engines: int = 1,
        sizes: Sequence[int] = (),
        solo_from: int | None = OVERLAP_MAX_BATCH,
        max_wait_ms: float = 0.0,
    ):
        self.name = name
        self.process = process
        self.max_batch = max_batch
        self.window = window_ms / 1000.0
        self.max_queue = max_queue
        # (item, future, arrived here, deadline): monotonic seconds
        self.pending: queue.SimpleQueue = queue.SimpleQueue()
        self.on_batch = on_batch
        self.engines = engines
        self.sizes = tuple(sizes)
        self.solo_from = solo_from
        self.max_wait = max_wait_ms / 1000.0  # 0: admit by queue length alone
        self.cost_per_item = RunningCost(COST_SMOOTHING)  # engine seconds per request
        self.last_size = FULL_WINDOW_FROM
        self.loop: asyncio.AbstractEventLoop | None = None
        self.threads: list[threading.Thread] = []
        self.running = 0  # batches being computed
        self.turns = threading.Condition()
        self.gathering = threading.Lock()
        self.closing = False

    def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.threads = [
            threading.Thread(target=self._engine, name=f"sona-{self.name}-{i}", daemon=True)
            for i in range(self.engines)
        ]
        for thread in self.threads:
            thread.start()

    async def submit(self, item: Any) -> Any:
        if self.closing:
            raise Overloaded(f"{self.name} is shutting down")
        waiting = self.pending.qsize()
        if waiting >= self.max_queue:
            raise Overloaded(f"{self.name} queue is full")
        now, so_far = time.monotonic(), waited()
        expected = so_far + self.expected_wait(waiting)
        if self.max_wait and expected > self.max_wait:
            raise Overloaded(
                f"{self.name}: waited {so_far * 1000:.0f} ms, and {waiting} requests "
                f"ahead would take about {self.expected_wait(waiting) * 1000:.0f} ms more "
                f"(serving.max_wait_ms is {self.max_wait * 1000:.0f})",
                retry_after=expected,
            )
        future = (self.loop or asyncio.get_running_loop()).create_future()
        self.pending.put((item, future, now, now + self.max_wait - so_far))
        return await future

    def expected_wait(self, waiting: int) -> float:
        """Seconds ``waiting`` queued requests take to serve, at the measured cost per request
        of full-ish batches (what a long queue is served in; 0 until one has run, so the first
        burst is admitted and shed only when its turn comes late), spread over the engine
        calls that overlap."""
        return waiting * self.cost_per_item.seconds / max(1, self.engines)

    def _gather(self) -> tuple[list, bool]:
        """(batch, stop): the oldest waiting request, then whatever arrives until it has
        waited the window (or a full batch is there). Runs on an engine thread.

        The window counts from when the oldest request arrived, not from when a thread got to
        it: under load requests queue while the previous batch computes, and they have waited
        long enough by then. It also scales with the last batch's size (full from
        ``FULL_WINDOW_FROM`` requests): at light load waiting buys little company and only adds
        latency; under heavy load it lets the batch fill.
        """
        first = self.pending.get()
        if first is _STOP:
            return [], True
        batch = [first]
        if self.max_batch > 1 and self.window > 0 and self.pending.qsize() < self.max_batch - 1:
            full_from = min(FULL_WINDOW_FROM, self.max_batch)
            window = self.window * min(1.0, self.last_size / full_from)
            remaining = window - (time.monotonic() - first[2])
            if remaining > 0:
                time.sleep(remaining)
        size = self.batch_size(1 + self.pending.qsize())
        while len(batch) < size:
            try:
                entry = self.pending.get_nowait()
            except queue.Empty:
                break
            if entry is _STOP:
                return batch, True
            batch.append(entry)
        self.last_size = len(batch)
        return batch, False

    def batch_size(self, waiting: int) -> int:
        """How many of ``waiting`` requests to take now.

        The engine pads a batch to the next of its compiled ``sizes`` and runs more than the
        largest in several calls: more than the largest waiting, the largest is taken. When
        the padding would be more than a quarter of the call (20 requests in a 64-row call),
        taking the size below (16) and leaving the rest for the next call serves more per
        second: most of a call's cost is per row (retrieval and scores read the whole
        catalogue for each). Small batches are always taken whole: there latency matters more
        than padding.
        """
        waiting = min(waiting, self.max_batch)
        if not self.sizes:
            return waiting
        if waiting >= self.sizes[-1]:
            return self.sizes[-1]
        up = min(s for s in self.sizes if s >= waiting)
        down = max((s for s in self.sizes if s <= waiting), default=waiting)
        if down >= ROUND_DOWN_FROM and (up - waiting) > MAX_PADDING_SHARE * up:
            return down
        return waiting

    def _engine(self) -> None:
        """One engine thread: gather, compute, hand the results to the loop; until `drain`."""
        stop = False
        while not stop:
            with self.gathering:  # one thread fills a batch while the others compute
                batch, stop = self._gather()
            # A future is only ever completed on the loop; reading done() here can race with a
            # cancellation, which costs at most one computed-and-dropped item.
            late, live = self._split_late(batch)
            if late:
                self.loop.call_soon_threadsafe(self._refuse_late, late)
            if live:
                self._compute(live)
        self.pending.put(_STOP)  # for the next thread

    def _split_late(self, batch: list) -> tuple[list, list]:
        """(futures of requests that waited past the deadline, live (item, future) pairs)."""
        now, late, live = time.monotonic(), [], []
        for item, future, _, deadline in batch:
            if future.done():
                continue
            if self.max_wait and now > deadline:
                late.append(future)
            else:
                live.append((item, future))
        return late, live

    def _refuse_late(self, futures: list) -> None:
        for future in futures:
            if not future.done():
                future.set_exception(
                    Overloaded(
                        f"{self.name}: waited longer than serving.max_wait_ms "
                        f"({self.max_wait * 1000:.0f})",
                        retry_after=self.max_wait,
                    )
                )

    def _compute(self, live: list) -> None:
        """Run one batch and hand its results (or its error) to the loop, whatever happens."""
        with self.turns:
            if self.solo_from is not None and len(live) > self.solo_from:
                self.turns.wait_for(lambda: self.running == 0)
            self.running += 1
        started = time.perf_counter()
        results, error = None, None
        try:
            results = self.process([item for item, _ in live])
            if len(results) != len(live):
                raise RuntimeError(f"{self.name}: {len(results)} results for {len(live)} items")
        except Exception as failure:  # noqa: BLE001 - one bad batch must not kill the worker
            log.exception("%s batch failed", self.name)
            error = failure
        except BaseException as failure:  # the thread stops, but its callers still hear why
            error = RuntimeError(f"{self.name}: engine stopped ({type(failure).__name__})")
            raise
        finally:
            elapsed = time.perf_counter() - started
            if len(live) * 2 >= self.max_batch:  # small batches cost far more per request
                self.cost_per_item.add(elapsed / len(live))
            with self.turns:
                self.running -= 1
                self.turns.notify_all()
            try:
                self.loop.call_soon_threadsafe(self._answer, live, results, error, elapsed)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                log.warning(
                    "%s: loop closed before a batch of %d was answered", self.name, len(live)
                )

    def _answer(
        self, live: list, results: Sequence[Any] | None, error: Exception | None, elapsed: float
    ) -> None:
        """On the loop: every live caller gets its own result (or the batch's error)."""
        for index, (_, future) in enumerate(live):
            if future.done():  # cancelled while we computed: skip
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(results[index])
        if self.on_batch is not None and error is None:
            self.on_batch(len(live), elapsed)

    async def drain(self, timeout: float = 10.0) -> None:
        """Stop taking work, answer everything already queued, then stop the threads."""
        self.closing = True
        if not self.threads:
            return
        self.pending.put(_STOP)  # behind every queued request

        def join() -> None:
            deadline = time.monotonic() + timeout
            for thread in self.threads:
                thread.join(max(0.0, deadline - time.monotonic()))

        await asyncio.get_running_loop().run_in_executor(None, join)
        if any(thread.is_alive() for thread in self.threads):
            log.error("%s: engine threads still busy after %.0f s", self.name, timeout)
        await asyncio.sleep(0)  # let the last answers (queued before join returned) run


def serving_batcher(
    name: str,
    process: Callable[[Sequence[Any]], Sequence[Any]],
    serving: ServingSettings,
    on_batch: Callable[[int, float], None] | None = None,
) -> MicroBatcher:
    """A started batcher of engine calls under the serving settings (batching on or off)."""
    batcher = MicroBatcher(
        name,
        process,
        serving.max_batch if serving.batching else 1,
        serving.batch_window_ms if serving.batching else 0.0,
        serving.max_queue,
        on_batch=on_batch,
        engines=serving.engine_threads,
        sizes=serving.served_shapes().batch_sizes,
        solo_from=None if serving.xla_threads == 1 else OVERLAP_MAX_BATCH,
        max_wait_ms=serving.max_wait_ms,
    )
    batcher.start()
    return batcher
