"""Catalogue writes into the served engine (SPEC 4.2): this process's own writes before they are
acknowledged, other processes' within ``serving.catalogue_poll_seconds``, through the store's
change feed (`Store.content_changes`), so every process serves the same catalogue.

The served item arrays have a capacity, and a new capacity is a new shape: new programs. A write
never waits for them. While rows remain, a new item is servable when its write is acknowledged;
the programs of the next capacity (`catalogue.grown_capacity`, geometric) are compiled in the
background ahead of need (`serving.prepare_next_capacity`) and the arrays grow to it as soon as
a write needs the rows. Items beyond every prepared capacity wait (stored, counted in
`waiting`, shown by ``/ready`` and ``/metrics``) until the background compile is done, then are
served.

A compile takes tens of seconds, so the next capacity is planned from how fast the catalogue
grows (`GrowthRate`) and how long the last compile took: it starts once the free rows would
last less than two compiles (or half of them are taken), and holds what arrives during two
compiles besides the usual headroom. When the rate outgrows a compile in its first half, that
compile stops and a larger one starts: items already waiting would otherwise wait for two.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Executor

from service.serving.compile_child import ChildCompiler
from service.serving.periodic import every
from service.serving.runtime import CompileStopped, Runtime, warm_up
from service.serving.threads import at_lowest_priority, in_background
from service.storage import CatalogueEntry, Store
from sona_jax.serve.catalogue import CatalogueReport, grown_capacity, item_capacity
from sona_jax.serve.engine import ServingEngine
from sona_jax.serve.programs import Programs

log = logging.getLogger("sona.catalogue")


LEAD_COMPILES = 2  # the next capacity holds what arrives during its compile and the one after
MIN_RATE_SPAN = 12  # the rate's span is at least this fraction of its window
MAX_LEAD = 1.0  # rows planned for growth, at most this share of the rows in use


class GrowthRate:
    """Item rows taken per second over the last ``window`` seconds (0 until two looks apart).

    The span divided by is at least ``window / MIN_RATE_SPAN``: one large write followed by
    another a second later is not read as a catalogue that grows by that much every second."""

    def __init__(self, window: float):
        self.window = window
        self.looks: deque[tuple[float, int]] = deque()

    def saw(self, rows: int, now: float) -> None:
        self.looks.append((now, rows))
        while self.looks and now - self.looks[0][0] > self.window:
            self.looks.popleft()

    def per_second(self, now: float) -> float:
        if len(self.looks) < 2:
            return 0.0
        (first, rows_then), (_, rows_now) = self.looks[0], self.looks[-1]
        return max(rows_now - rows_then, 0) / max(now - first, self.window / MIN_RATE_SPAN)


class CatalogueSync:
    def __init__(
        self,
        store: Store,
        runtime: Runtime,
        executor: Executor,
        poll_seconds: float,
        prepare_next: bool = False,
        compile_first: bool = True,
        rate_window: float = 60.0,
        compile_guess: float = 60.0,
        child: ChildCompiler | None = None,
    ):
        """``prepare_next``: keep the next capacity's programs compiled ahead of need (the
        default version's catalogue; model arms only grow when a write needs it).
        ``compile_first`` False (`serving.warm_up` off): grow at once and compile on first use.
        ``rate_window``: seconds the growth rate is measured over; ``compile_guess``: seconds a
        background compile takes until one has been timed. ``child``: compile next capacities
        in a child process (`service.serving.compile_child`; None: in this one)."""
        self.store, self.runtime, self.executor = store, runtime, executor
        self.child = child
        self.poll_seconds, self.prepare_next = poll_seconds, prepare_next and compile_first
        self.compile_first = compile_first
        self.watermark = 0  # of the change feed, as applied to the served engine
        self.task: asyncio.Task | None = None
        # Stored, beyond the served capacity: the newest change of each item, in order.
        self.waiting: list[CatalogueEntry] = []
        self.rows_needed = 0  # rows the catalogue needs, waiting items included
        # The next capacity and its compiled programs, held so they outlive their compile.
        self.next_capacity = 0
        self.next_programs: Programs | None = None
        self.growing: asyncio.Task | None = None
        self.rate = GrowthRate(rate_window)
        self.compile_seconds = compile_guess  # the last background compile's, once timed
        # The compile under way: its capacity, when it began, and how to stop it.
        self.compiling: tuple[int, float, threading.Event] | None = None
        self.failed_capacity = 0  # a capacity whose programs failed to compile (not retried)
        self.sized = (0, 0)  # the served capacity and the rows in use when it was first seen
        self.steps = 0  # capacity steps taken while serving
        self.closed = False
        # (content id, revision) of changes applied by this process's own writes since the
        # last look at the feed.
        self.applied: set[tuple[str, int]] = set()

    async def _in_engine(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def prepared(self, engine: ServingEngine) -> tuple[ServingEngine, int]:
        """``engine`` (a model version not yet served) with the whole catalogue applied (its
        arrays sized to hold it: it is compiled before it serves), and the feed's watermark it
        is current to."""
        entries, watermark = await self.store.content_changes(0)

        engine, report = await self._in_engine(_sized_to_hold, engine, entries)
        _log_report(report)
        if self.growing is not None:  # programs for the previous version's shapes
            self.growing.cancel()
        self.waiting, self.rows_needed = [], report.rows_needed
        self.next_capacity, self.next_programs, self.sized = 0, None, (0, 0)
        return engine, watermark

    async def apply(self, entries: Sequence[CatalogueEntry]) -> CatalogueReport:
        """Serve ``entries`` now where the capacity (or a prepared next one) holds them; the
        rest wait for the next capacity's programs."""
        async with self.runtime.writer:
            return await self._apply_locked(entries)

    async def _apply_locked(self, entries: Sequence[CatalogueEntry]) -> CatalogueReport:
        changes = _newest_of_each(self.waiting + list(entries))
        prepared = self.next_capacity if self._next_ready() else 0

        def change() -> CatalogueReport:
            current = self.runtime.engine
            if not self.compile_first:
                engine, report = _sized_to_hold(current, changes)
            else:
                engine, report = current.with_catalogue(changes)
                if report.waiting and prepared > current.capacity:
                    # The next capacity's programs are compiled: grow now. (Unless the
                    # engine's other shapes changed since, which would compile here.)
                    grown, grown_report = current.with_catalogue(changes, prepared)
                    if grown.programs.planned:
                        engine, report = grown, grown_report
            self.runtime.publish(engine)
            return report

        capacity, began = self.runtime.engine.capacity, time.perf_counter()
        report = await self._in_engine(change)
        if self.runtime.engine.capacity > capacity:
            self.steps += 1
            log.info(
                "item arrays grew from %d to %d rows (%d changes applied in %.2fs)",
                capacity,
                self.runtime.engine.capacity,
                len(changes),
                time.perf_counter() - began,
            )
        before = len(self.waiting)
        self.waiting, self.rows_needed = list(report.waiting), report.rows_needed
        # Rows taken: up to the last waiting item's when some wait (a report's rows_needed is
        # at least the capacity), else up to the last served one's.
        taken = self.rows_needed if self.waiting else self.runtime.engine.rows_in_use
        self.rate.saw(taken, time.monotonic())
        self._replan_if_outgrown()
        if len(self.waiting) != before:
            log.info(
                "%d catalogue changes wait for the next capacity's programs", len(self.waiting)
            )
        _log_report(report)
        self.grow_soon()
        return report

    def waits_for(self, content_id: str) -> bool:
        """Whether ``content_id`` is stored but waits for the next capacity."""
        return any(e.item.content_id == content_id and not e.deleted for e in self.waiting)

    def _lead_rows(self, in_use: int) -> int:
        """Rows the catalogue will take during the next `LEAD_COMPILES` compiles, at its
        current rate (at most `MAX_LEAD` of the rows in use)."""
        rate = self.rate.per_second(time.monotonic())
        return int(min(rate * self.compile_seconds * LEAD_COMPILES, MAX_LEAD * in_use))

    def _replan_if_outgrown(self) -> None:
        """Stop a compile in its first half whose capacity will be full when it is done, at
        the current rate, when a larger one would be planned now: `grow_soon` then plans it."""
        if self.compiling is None:
            return
        capacity, began, stop = self.compiling
        elapsed = time.monotonic() - began
        if stop.is_set() or elapsed > self.compile_seconds / 2:
            return
        rate = self.rate.per_second(time.monotonic())
        due = self.rows_needed + rate * (self.compile_seconds - elapsed)
        if due > capacity and self._target(self.runtime.engine) > capacity:
            log.info(
                "the catalogue grows %.0f rows/s: %d rows will be full before their programs "
                "compile; compiling for more",
                rate,
                capacity,
            )
            stop.set()

    def _target(self, engine: ServingEngine) -> int:
        """The capacity to compile for next: geometric in the rows needed, plus what arrives
        during two compiles at the current rate."""
        in_use = engine.rows_in_use
        needed = max(self.rows_needed, in_use, engine.capacity) + 1 + self._lead_rows(in_use)
        return grown_capacity(needed, engine.model.n_items, engine.cfg.catalogue)

    def _next_ready(self) -> bool:
        return self.next_programs is not None and self.next_programs.planned

    def grow_soon(self) -> None:
        """Start compiling the next capacity's programs in the background when items wait for
        them, or ahead of need (`prepare_next`), unless that is under way or done."""
        if self.closed or (self.growing is not None and not self.growing.done()):
            return
        engine = self.runtime.engine
        in_use = engine.rows_in_use
        needed = max(self.rows_needed, in_use) + 1
        if engine.capacity != self.sized[0]:  # the first look at this capacity
            self.sized = (engine.capacity, in_use)
        lead = self._lead_rows(in_use)
        if not self.waiting:
            # Ahead of need: once half the rows this capacity had free are taken, or sooner
            # when they would be full within two compiles (compiling competes with serving
            # for the cores and the interpreter, so not at every start).
            room, free = engine.capacity - self.sized[1], engine.capacity - in_use
            if not self.prepare_next or (free > room / 2 and free > lead):
                return
        ready = self._next_ready() and self.next_capacity > engine.capacity
        if ready and self.next_capacity >= needed + (0 if self.waiting else lead):
            if not self.waiting:
                return
            work = self.catch_up()  # prepared while these arrived: serve them now
        else:
            target = self._target(engine)
            if target == self.failed_capacity:
                return
            work = self._grow(target)
        self.growing = asyncio.get_running_loop().create_task(work, name="catalogue capacity")
        # Then the capacity after it is prepared (or what still waits is grown for).
        self.growing.add_done_callback(lambda _: self.grow_soon())

    async def _grow(self, capacity: int) -> None:
        """Compile the programs of ``capacity`` rows (a low-priority thread, the served engine
        serving meanwhile), hold them, and serve what waits."""
        engine = self.runtime.engine
        stop = threading.Event()

        def compile_next() -> Programs:
            if self.child is not None:  # saved there, loaded by `with_capacity`'s new set
                self.child.compile(engine.model.version, engine.cfg, engine.shapes, capacity, stop)
            grown = at_lowest_priority(engine.with_capacity, capacity)
            # What no child compiled: one thread (a second would contend for the interpreter
            # lock with serving); XLA's own compiling threads at the lowest priority.
            warm_up(grown, stop=stop, beside_serving=True)
            return grown.programs

        log.info("compiling the programs of %d item rows in the background", capacity)
        began = time.monotonic()
        self.compiling = (capacity, began, stop)
        try:
            programs = await asyncio.get_running_loop().run_in_executor(
                None, in_background, compile_next
            )
        except CompileStopped:  # the catalogue outgrew it: `grow_soon` plans a larger one
            return
        except Exception:  # noqa: BLE001 - serving goes on at the current capacity
            log.exception("compiling the programs of %d item rows failed", capacity)
            self.failed_capacity = capacity
            return
        finally:
            self.compiling = None
        self.compile_seconds = time.monotonic() - began
        self.next_capacity, self.next_programs = capacity, programs
        log.info(
            "programs for %d item rows compiled in %.1fs (%d loaded from a child's file, %d "
            "compiled in this process)",
            capacity,
            self.compile_seconds,
            programs.loaded,
            programs.compiled,
        )
        if self.waiting:
            await self.catch_up()

    async def write(self, content_ids: list[str]) -> CatalogueReport:
        """After this process wrote ``content_ids`` to the store: serve them before the write
        is acknowledged (those beyond every compiled capacity wait, stored)."""
        entries = await self.store.content_entries(content_ids)
        report = await self.apply(entries)
        waiting = {id(e) for e in report.waiting}
        # The change feed brings them back: applying them again would copy every item array.
        self.applied.update(
            (e.item.content_id, e.revision) for e in entries if id(e) not in waiting
        )
        return report

    async def catch_up(self) -> None:
        """Apply what every process wrote since the last look (and what waits), but for the
        changes this process applied when it wrote them."""
        async with self.runtime.writer:
            entries, watermark = await self.store.content_changes(self.watermark)
            fresh = [e for e in entries if (e.item.content_id, e.revision) not in self.applied]
            self.applied.clear()  # the feed is past them
            if fresh or self.waiting:
                await self._apply_locked(fresh)
            self.watermark = watermark

    def start(self) -> None:
        self.task = every(self.poll_seconds, self.catch_up, "catalogue catch-up", log)
        self.grow_soon()

    async def stop(self) -> None:
        self.closed = True
        for task in (self.task, self.growing):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


def _newest_of_each(entries: Sequence[CatalogueEntry]) -> list[CatalogueEntry]:
    """``entries`` without the older changes of an item listed again (a write of this process
    comes back through the change feed), in revision order."""
    newest: dict[str, CatalogueEntry] = {}
    for entry in entries:
        seen = newest.get(entry.item.content_id)
        if seen is None or entry.revision >= seen.revision:
            newest[entry.item.content_id] = entry
    return sorted(newest.values(), key=lambda e: e.revision)


def _sized_to_hold(
    engine: ServingEngine, entries: Sequence[CatalogueEntry]
) -> tuple[ServingEngine, CatalogueReport]:
    """``engine`` with ``entries`` applied, its arrays grown to hold them all when needed (a
    shape whose programs compile before it serves, or on first use)."""
    sized, report = engine.with_catalogue(entries)
    if not report.waiting:
        return sized, report
    cfg = engine.cfg.catalogue
    rows = item_capacity(engine.capacity, engine.model.n_items, report.rows_needed, cfg)
    return engine.with_catalogue(entries, rows)


def _log_report(report: CatalogueReport) -> None:
    if report.unplaced:
        log.warning(
            "%d items arrived while the served model was reading the store: "
            "they are served from its next version",
            report.unplaced,
        )
