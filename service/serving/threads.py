"""Process-wide thread settings for `sona serve`: how many threads XLA computes on, how long
the event loop may keep the GIL from the engine thread, and which threads run at the lowest
priority (compiling, never serving).

On the CPU, XLA runs each engine call on a thread pool sized, when the backend starts, from the
CPUs the starting thread may use. Its threads hand work to one another between the many small
steps of a call; with the event loop (and, in the benchmark, the load generator) on the same
cores, those hand-offs wait for a core and one call took 10-12 ms instead of 7. One XLA thread
does the whole call on one core and leaves the other to the event loop: measured on this 2-core
machine, saturated recommendations went from about 2,650 to about 3,150 requests/s.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time

from service.serving.heap import collector_paused

log = logging.getLogger("sona.threads")


def limit_xla_threads(threads: int) -> int | None:
    """Start the JAX CPU backend with a pool of ``threads`` (0: XLA's default, one per core).

    Call before anything else starts the backend (the first array or jitted call does). The
    calling thread is confined to ``threads`` CPUs while the backend starts, which is what XLA
    sizes its pool from; afterwards every thread of the process, the pool's included, may run
    on every CPU again. Returns the pool's intended size, or None when left to XLA.
    """
    if threads <= 0 or not hasattr(os, "sched_setaffinity"):
        return None
    every = os.sched_getaffinity(0)
    if threads >= len(every):
        return None
    os.sched_setaffinity(0, set(sorted(every)[:threads]))
    try:
        import jax
        import jax.numpy as jnp

        jax.devices()
        jnp.zeros(1).block_until_ready()  # the pool exists once something has run
    finally:
        os.sched_setaffinity(0, every)  # this thread first, and loudly if it fails
        freed: set[str] = set()
        while True:  # until no thread started meanwhile is left confined
            tasks = set(os.listdir("/proc/self/task")) - freed
            if not tasks:
                break
            for task in tasks:
                with contextlib.suppress(OSError):  # a thread may have ended meanwhile
                    os.sched_setaffinity(int(task), every)
            freed |= tasks
    log.info("XLA computes on %d thread(s); %d CPUs available", threads, len(every))
    return threads


def set_gil_switch(milliseconds: float) -> None:
    """How long a thread may keep the GIL while another waits for it."""
    sys.setswitchinterval(milliseconds / 1000.0)


BACKGROUND_NICE = 19  # the lowest CPU priority: serving threads always come first
PROBE_SECONDS = 0.1  # of engine-like calls, to see which native threads serve
PROBE_MIN_NS = 1_000_000  # a thread that compiled less than this is left as it is
WATCH_SECONDS = 0.5  # how often a background compile looks for compiling threads


class CompilerThreads:
    """XLA's compiling threads, found and run at the lowest CPU priority.

    XLA compiles on native threads of its own, started at normal priority: lowering the
    priority of the thread that asks for a compile does not reach them, and a capacity step's
    compile beside live traffic took 1.5 of 2 cores from serving (measured per thread,
    /proc/self/task). They are found by what they do. `probe` (once the backend has started,
    before anything is served) compiles a small ranking program and calls it: threads that
    work in the calls *serve*; those that work only in the compile are demoted. Then,
    while a background compile runs (`watching`), any other native thread that works and has
    never served is demoted too (a large program engages more of XLA's threads than the
    probe's; its LLVM workers start later); work a thread does between compiles counts as
    serving. Python's own threads are never touched: the one that traces holds the
    interpreter lock, which every serving thread needs, so it must never wait for a core. A
    priority once lowered cannot be raised again without privileges. Linux only."""

    def __init__(self):
        self.serving: set[int] = set()
        self.demoted: set[int] = set()
        self.active = False
        self._between: dict[int, int] = {}  # CPU times when the last compile ended
        self._lock = threading.Lock()

    def probe(self) -> None:
        """Find the threads that serve and those that compile; demote the latter."""
        if not os.path.isdir("/proc/self/task"):
            return
        import jax
        import jax.numpy as jnp
        import numpy as np

        rng = np.random.default_rng(0)
        items = jax.device_put(rng.random((2048, 32), np.float32))
        queries = rng.random((16, 32), np.float32)

        def rank(queries, items):  # a ranking program's parts: a product, top-k, a sort
            scores = queries @ items.T
            return jax.lax.top_k(scores, 32), jnp.sort(scores[:, :128], axis=1)

        started = _native_cpu_ns()
        ranking = jax.jit(rank).lower(queries, items).compile()  # a fresh program: XLA's work
        compiled = _cpu_since(started)

        def engine_like() -> None:
            (values, rows), ordered = ranking(rng.random((16, 32), np.float32), items)
            np.asarray(values), np.asarray(rows), np.asarray(ordered)
            jax.device_put(rng.random((512, 512), np.float32)).block_until_ready()

        engine_like()  # a first call's one-off work, outside the window
        started = _native_cpu_ns()
        until = time.monotonic() + PROBE_SECONDS
        while time.monotonic() < until:
            engine_like()
        self.serving = set(_cpu_since(started))
        self.active = True
        self._demote(t for t, ns in compiled.items() if ns >= PROBE_MIN_NS)
        self._between = _native_cpu_ns()
        log.info("%d XLA compiler threads run at nice %d", len(self.demoted), BACKGROUND_NICE)

    @contextlib.contextmanager
    def watching(self):
        """While a compile runs beside serving: demote each native thread that works and has
        never served, every `WATCH_SECONDS`."""
        if not self.active:
            yield
            return
        with self._lock:
            # Work since the last compile ended was serving (one compile at a time: `warm_up`).
            self.serving |= set(_cpu_since(self._between)) - self.demoted
        stop = threading.Event()

        def watch() -> None:
            last = _native_cpu_ns()
            while not stop.wait(WATCH_SECONDS):
                self._demote(_cpu_since(last))
                last = _native_cpu_ns()

        watcher = threading.Thread(target=watch, name="sona-compiler-threads", daemon=True)
        watcher.start()
        try:
            yield
        finally:
            stop.set()
            watcher.join()
            with self._lock:
                self._between = _native_cpu_ns()

    def _demote(self, tasks) -> None:
        with self._lock:
            for task in set(tasks) - self.serving - self.demoted:
                with contextlib.suppress(OSError):  # ended meanwhile
                    os.setpriority(os.PRIO_PROCESS, task, BACKGROUND_NICE)
                    self.demoted.add(task)


COMPILER_THREADS = CompilerThreads()  # the process's


def _native_cpu_ns() -> dict[int, int]:
    """CPU time (ns) of each thread of this process that Python did not start."""
    python = {t.native_id for t in threading.enumerate()}
    spent = {}
    for task in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError, ValueError):  # ended meanwhile
            if int(task) not in python:
                with open(f"/proc/self/task/{task}/schedstat") as stat:
                    spent[int(task)] = int(stat.read().split()[0])
    return spent


def _cpu_since(before: dict[int, int]) -> dict[int, int]:
    """CPU time (ns) each native thread spent since ``before`` (threads started since count
    from zero)."""
    return {
        task: ns - before.get(task, 0)
        for task, ns in _native_cpu_ns().items()
        if ns > before.get(task, 0)
    }


def at_lowest_priority(fn, *args):
    """``fn(*args)`` on a new thread at the lowest CPU priority (nice 19), waited for.

    For work that mostly releases the interpreter lock (large numpy copies: a new capacity's
    arrays), so that serving threads come first for the cores; a priority once lowered cannot
    be raised again, so the thread ends with it."""

    def lowered():
        with contextlib.suppress(OSError, AttributeError):  # not Linux: normal priority
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)
        return fn(*args)

    return _on_own_thread(lowered, "sona-lowest")


def in_background(fn, *args):
    """``fn(*args)`` (a compile beside serving) on a thread of its own, waited for; its result.

    Compiling a model version's programs takes tens of seconds of CPU, nearly all of it on
    XLA's own threads, which `COMPILER_THREADS` keeps at the lowest priority meanwhile: the
    serving threads (the event loop, the engine calls) keep their cores. This thread traces
    and lowers, holding the interpreter lock as it does, at normal priority, with the cyclic
    collector paused (`collector_paused`: its full scans of tracing's objects held the lock
    for up to 410 ms)."""

    def watched():
        with COMPILER_THREADS.watching(), collector_paused():
            return fn(*args)

    return _on_own_thread(watched, "sona-background")


def _on_own_thread(call, name: str):
    """``call()`` on a new daemon thread, waited for; its result (or its exception)."""
    result: dict = {}

    def run():
        try:
            result["value"] = call()
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller
            result["error"] = error

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]
