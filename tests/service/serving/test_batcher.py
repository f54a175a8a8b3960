"""The micro-batcher: batching, bounded queue, and callers that hang up."""

import asyncio
import threading
import time

import pytest

from service.serving.batcher import MicroBatcher, Overloaded

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
    batcher = MicroBatcher("t", _doubling(calls), max_batch=64, window_ms=20, max_queue=100)
    batcher.start()
    results = await asyncio.gather(*(batcher.submit(i) for i in range(40)))
    assert results == [2 * i for i in range(40)]
    assert len(calls) <= 3 and sum(len(c) for c in calls) == 40
    await batcher.drain()


async def test_cancelled_waiter_is_skipped_and_the_batcher_lives_on():
    calls, gate = [], threading.Event()
    batcher = MicroBatcher("t", _doubling(calls, gate), max_batch=8, window_ms=5, max_queue=100)
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
    batcher = MicroBatcher("t", _doubling(calls, gate), max_batch=8, window_ms=20, max_queue=100)
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
    batcher = MicroBatcher("t", _doubling([], gate), max_batch=1, window_ms=0, max_queue=2)
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
    batcher = MicroBatcher("t", _doubling([]), max_batch=4, window_ms=50, max_queue=100)
    batcher.start()
    pending = [asyncio.create_task(batcher.submit(i)) for i in range(10)]
    await asyncio.sleep(0)
    await batcher.drain()
    assert [t.result() for t in pending] == [2 * i for i in range(10)]
    with pytest.raises(Overloaded):
        await batcher.submit(1)


async def test_batch_size_avoids_mostly_padding_calls():
    batcher = MicroBatcher(
        "t",
        _doubling([]),
        max_batch=128,
        window_ms=1,
        max_queue=1000,
        sizes=(1, 2, 4, 8, 16, 32, 64, 128),
    )
    # 33 would be padded to 64 (48 % padding): take 32 now, the last one rides the next call.
    assert batcher.batch_size(33) == 32
    assert batcher.batch_size(40) == 32
    assert batcher.batch_size(50) == 50  # 22 % padding: worth taking whole
    assert batcher.batch_size(5) == 5  # small batches are taken whole (latency first)
    assert batcher.batch_size(500) == 128
    plain = MicroBatcher("t", _doubling([]), max_batch=64, window_ms=1, max_queue=1000)
    assert plain.batch_size(33) == 33
    # The served sizes (1, 4, 16, 64): small batches whole, 20 cut to 16; more than the
    # largest: the largest (the engine would split the rest into another call anyway).
    served = MicroBatcher(
        "t", _doubling([]), max_batch=128, window_ms=1, max_queue=1000, sizes=(1, 4, 16, 64)
    )
    assert [served.batch_size(n) for n in (3, 9, 20, 50, 64, 100)] == [3, 9, 16, 50, 64, 64]


async def test_two_batches_in_flight_overlap():
    gate, calls, started = threading.Event(), [], []
    doubling = _doubling(calls, gate)

    def process(items):
        started.append(list(items))
        return doubling(items)

    batcher = MicroBatcher("t", process, max_batch=2, window_ms=0, max_queue=100, engines=2)
    batcher.start()
    tasks = [asyncio.create_task(batcher.submit(i)) for i in range(4)]
    await asyncio.sleep(0.1)
    assert len(started) == 2 and calls == []  # both calls running at once, held by the gate
    gate.set()
    assert [await t for t in tasks] == [0, 2, 4, 6]
    assert sorted(map(sorted, calls)) == [[0, 1], [2, 3]]
    await batcher.drain()


async def test_window_counts_from_the_oldest_request():
    calls = []
    batcher = MicroBatcher("t", _doubling(calls), max_batch=64, window_ms=300, max_queue=100)
    loop = asyncio.get_running_loop()
    waiting = [asyncio.create_task(batcher.submit(i)) for i in range(3)]
    await asyncio.sleep(0.35)  # they queued before the worker started: they waited enough
    started = loop.time()
    batcher.start()
    assert [await t for t in waiting] == [0, 2, 4]
    assert loop.time() - started < 0.2  # served at once, not after another 300 ms window
    await batcher.drain()


@pytest.mark.parametrize(("solo_from", "together"), [(0, 1), (None, 2)])
async def test_batches_above_solo_from_run_alone(solo_from, together):
    gate, started = threading.Event(), []

    def process(items):
        started.append(list(items))
        gate.wait(5)
        return [2 * item for item in items]

    batcher = MicroBatcher(
        "t", process, max_batch=2, window_ms=0, max_queue=100, engines=2, solo_from=solo_from
    )
    batcher.start()
    tasks = [asyncio.create_task(batcher.submit(i)) for i in range(4)]
    await asyncio.sleep(0.1)
    assert len(started) == together  # solo: the second call waits for the first to end
    gate.set()
    assert [await t for t in tasks] == [0, 2, 4, 6]
    await batcher.drain()


async def test_a_burst_is_one_batch_even_with_two_engines():
    calls = []
    batcher = MicroBatcher(
        "t", _doubling(calls), max_batch=64, window_ms=80, max_queue=100, engines=2
    )
    batcher.start()
    tasks = []
    for i in range(20):  # spread over about 10 ms, well inside the window
        tasks.append(asyncio.create_task(batcher.submit(i)))
        await asyncio.sleep(0.0005)
    assert [await t for t in tasks] == [2 * i for i in range(20)]
    assert len(calls) == 1  # the idle second engine did not start a batch of its own
    await batcher.drain()


async def test_a_batch_with_the_wrong_number_of_results_fails_its_callers_only():
    def short(items):
        return [0] if len(items) > 1 else [2 * items[0]]

    batcher = MicroBatcher("t", short, max_batch=8, window_ms=20, max_queue=100)
    batcher.start()
    first = [asyncio.create_task(batcher.submit(i)) for i in range(3)]
    outcomes = await asyncio.gather(*first, return_exceptions=True)
    assert all(isinstance(o, RuntimeError) and "1 results for 3 items" in str(o) for o in outcomes)
    assert await batcher.submit(4) == 8  # the engine thread lives on
    await batcher.drain()


async def test_admission_by_waiting_time_refuses_at_once_and_answers_within_the_deadline():
    """A burst far beyond what the deadline allows: the excess is refused at once (or when
    its turn comes too late), and nobody answered waited more than the deadline plus a batch."""

    def slow(items):  # 20 ms a call, whatever its size
        time.sleep(0.02)
        return list(items)

    batcher = MicroBatcher("t", slow, max_batch=4, window_ms=5, max_queue=10_000, max_wait_ms=100)
    batcher.start()
    assert await asyncio.gather(*(batcher.submit(i) for i in range(4))) == [0, 1, 2, 3]
    assert batcher.cost_per_item.seconds > 0  # one full batch measured: 5 ms a request
    loop = asyncio.get_running_loop()

    async def timed(i):
        started = loop.time()
        try:
            await batcher.submit(i)
            return "answered", loop.time() - started
        except Overloaded as refused:
            assert refused.retry_after > 0
            return "refused", loop.time() - started

    outcomes = await asyncio.gather(*(timed(i) for i in range(400)))
    answered = [t for kind, t in outcomes if kind == "answered"]
    refused = [t for kind, t in outcomes if kind == "refused"]
    assert answered and len(refused) > 300  # 100 ms holds about 20 requests at 5 ms each
    assert max(answered) < 0.1 + 0.02 + 0.05  # deadline + one batch + scheduling slack
    assert sorted(refused)[len(refused) // 2] < 0.01  # most refusals come at once
    await batcher.drain()
