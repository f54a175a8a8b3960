"""The cyclic collector in a serving process: paused around background compiles (its full scans
of tracing's objects held the interpreter lock for hundreds of milliseconds), as it was
afterwards, and never left off by overlapping compiles."""

from __future__ import annotations

import gc
import threading

import jax
import jax.numpy as jnp
import pytest

from service.serving.heap import collector_paused
from service.serving.threads import in_background


@pytest.fixture
def collections():
    """Collections that start while the test runs: [(generation, thread name)]."""
    seen: list[tuple[int, str]] = []

    def record(phase: str, info: dict) -> None:
        if phase == "start":
            seen.append((info["generation"], threading.current_thread().name))

    gc.callbacks.append(record)
    was = gc.isenabled()
    gc.enable()
    yield seen
    gc.callbacks.remove(record)
    (gc.enable if was else gc.disable)()


def _trace_a_program(width: int) -> None:
    """Trace, lower and compile a fresh program: many short-lived objects, as a capacity step's
    compile makes."""

    def layers(x):
        for i in range(40):
            x = jnp.tanh(x @ x.T[:, : x.shape[1]] + i)
        return x.sum()

    jax.jit(layers).lower(jnp.ones((width, 8))).compile()


def test_a_background_compile_runs_no_collection_and_the_collector_comes_back(collections):
    junk = [[[] for _ in range(50)] for _ in range(200)]  # enough to trigger collections
    del junk
    during: list[bool] = []
    inside: list[tuple[int, str]] = []

    def compile_and_look() -> None:
        during.append(gc.isenabled())
        before = len(collections)
        for width in (3, 5, 7):
            _trace_a_program(width)
            [{"cycle": None} for _ in range(20_000)]  # allocations that would trigger them
        inside.extend(collections[before:])

    in_background(compile_and_look)
    assert during == [False]
    assert inside == [], "a collection ran during the background compile"
    assert gc.isenabled()
    [[] for _ in range(5_000)]
    assert collections, "the collector did not come back after the compile"


def test_overlapping_pauses_keep_it_off_until_the_last_ends_and_leave_it_as_found():
    was = gc.isenabled()
    try:
        gc.enable()
        first, second = collector_paused(), collector_paused()
        first.__enter__()
        second.__enter__()
        first.__exit__(None, None, None)
        assert not gc.isenabled(), "the collector came back while a compile still ran"
        second.__exit__(None, None, None)
        assert gc.isenabled()

        gc.disable()  # a process that runs without the collector keeps running without it
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        (gc.enable if was else gc.disable)()


def test_the_collector_comes_back_when_the_compile_fails():
    was = gc.isenabled()
    gc.enable()
    try:

        def failing() -> None:
            raise ValueError("a program that does not compile")

        with pytest.raises(ValueError):
            in_background(failing)
        assert gc.isenabled()
    finally:
        (gc.enable if was else gc.disable)()
