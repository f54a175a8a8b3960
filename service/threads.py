"""Process-wide thread settings for `sona serve`: how many threads XLA computes on, and how long
the event loop may keep the GIL from the engine thread.

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


def in_background(fn, *args):
    """``fn(*args)`` on a new thread of the lowest CPU priority, waited for; its result.

    Compiling a model version's programs takes tens of seconds of CPU; on a thread at nice 19
    the serving threads (the event loop, the engine calls) keep their cores meanwhile."""
    result: dict = {}

    def run():
        with contextlib.suppress(OSError, AttributeError):  # not Linux: normal priority
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)
        try:
            result["value"] = fn(*args)
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller
            result["error"] = error

    thread = threading.Thread(target=run, name="sona-background", daemon=True)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]
