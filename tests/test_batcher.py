"""The micro-batcher: batching, bounded queue, and callers that hang up."""

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from service.batcher import MicroBatcher, Overloaded

pytestmark = pytest.mark.asyncio


def _doubling(log, gate=None):
    def process(items):
        if gate is not None:
            gate.wait(5)
        log.append(list(items))
        return [2 * item for item in items]

    return process


async def test_concurrent_requests_share_one_call_and_get_their_own_result():
    calls = []
    batcher = MicroBatcher("t", _doubling(calls), ThreadPoolExecutor(1), max_batch=64,
                           window_ms=20, max_queue=100)
    batcher.start()
    results = await asyncio.gather(*(batcher.submit(i) for i in range(40)))
    assert results == [2 * i for i in range(40)]
    assert len(calls) <= 3 and sum(len(c) for c in calls) == 40
    await batcher.drain()


async def test_cancelled_waiter_is_skipped_and_the_batcher_lives_on():
    calls, gate = [], threading.Event()
    batcher = MicroBatcher("t", _doubling(calls, gate), ThreadPoolExecutor(1), max_batch=8,
                           window_ms=5, max_queue=100)
    batcher.start()
    first = asyncio.create_task(batcher.submit(1))  # this batch blocks on the gate
    await asyncio.sleep(0.05)
    hung_up = asyncio.create_task(batcher.submit(2))
    kept = asyncio.create_task(batcher.submit(3))
    await asyncio.sleep(0.01)
    hung_up.cancel()  # the caller goes away while its item waits
    gate.set()
    assert await first == 2 and await kept == 6
    assert [2] not in calls and all(2 not in c for c in calls[1:])
    assert await batcher.submit(5) == 10  # still serving
    await batcher.drain()


async def test_cancel_during_compute_does_not_break_others():
    calls, gate = [], threading.Event()
    batcher = MicroBatcher("t", _doubling(calls, gate), ThreadPoolExecutor(1), max_batch=8,
                           window_ms=20, max_queue=100)
    batcher.start()
    tasks = [asyncio.create_task(batcher.submit(i)) for i in range(4)]
    await asyncio.sleep(0.05)  # the batch is now computing, blocked on the gate
    tasks[1].cancel()
    gate.set()
    assert [await t for t in (tasks[0], tasks[2], tasks[3])] == [0, 4, 6]
    assert await batcher.submit(7) == 14
    await batcher.drain()


async def test_full_queue_is_refused():
    gate = threading.Event()
    batcher = MicroBatcher("t", _doubling([], gate), ThreadPoolExecutor(1), max_batch=1,
                           window_ms=0, max_queue=2)
    batcher.start()
    running = [asyncio.create_task(batcher.submit(0))]
    await asyncio.sleep(0.05)  # the worker holds item 0, blocked on the gate
    running += [asyncio.create_task(batcher.submit(i)) for i in (1, 2)]
    await asyncio.sleep(0.01)  # items 1 and 2 fill the queue
    with pytest.raises(Overloaded):
        await batcher.submit(99)
    gate.set()
    assert [await t for t in running] == [0, 2, 4]
    await batcher.drain()


async def test_drain_answers_everything_queued():
    batcher = MicroBatcher("t", _doubling([]), ThreadPoolExecutor(1), max_batch=4,
                           window_ms=50, max_queue=100)
    batcher.start()
    pending = [asyncio.create_task(batcher.submit(i)) for i in range(10)]
    await asyncio.sleep(0)
    await batcher.drain()
    assert [t.result() for t in pending] == [2 * i for i in range(10)]
    with pytest.raises(Overloaded):
        await batcher.submit(1)
