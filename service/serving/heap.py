"""When Python's cyclic garbage collector may run in a serving process.

A full collection holds the interpreter lock for as long as it scans, and every serving thread
(the event loop, the engine calls) needs that lock. Two things made those scans long enough to
refuse requests, each measured on this 2-core machine:

- the start-up heap (model tables, compiled programs, tracing caches): scanned at every full
  collection, it paused serving for 100-250 ms every few seconds, hence `freeze_heap`;
- tracing a capacity step's or a new version's programs beside live traffic: the jaxprs and
  lowered modules alive while a program is traced made each full collection 150-410 ms (four
  or five per compile, each collecting nothing), enough for queued requests to pass
  ``serving.max_wait_ms`` and be answered 503. Hence `collector_paused` around every
  background compile: what the compile allocates is freed by reference counting as each
  program is done; the few cycles left wait for the next collection after it.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

_pauses = 0  # compiles running with the collector paused
_was_enabled = False
_lock = threading.Lock()


def freeze_heap(collect: bool = True) -> None:
    """Move everything alive now (model tables, compiled programs, tracing caches) out of the
    collector's reach: full collections then scan only what requests allocate.

    ``collect=False`` (a swap while serving) skips the full collection first: it held the
    event loop for about 300 ms here. The old version's arrays go by reference counting; only
    reference cycles it left in the frozen heap stay until the next restart."""
    if collect:
        gc.unfreeze()  # what a previous model version left behind may be collected now
        gc.collect()
    gc.freeze()


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No automatic collection while the block runs (nested and concurrent blocks: until the
    last one ends); the collector is left as it was found (disabled stays disabled)."""
    global _pauses, _was_enabled
    with _lock:
        if _pauses == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _lock:
            _pauses -= 1
            if _pauses == 0 and _was_enabled:
                gc.enable()
