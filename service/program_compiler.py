"""Program sets compiled in a child process, so that a live server never waits on a compile.

Compiling a program set is tens of seconds of tracing, lowering and XLA; in the serving process
even a thread at the lowest CPU priority holds the interpreter lock for much of it, and requests
queued behind it were shed (9 of 17,867 answered 503 while the catalogue grew, `bench/growth.py`).
When a live server needs a new shape (the catalogue's next capacity, a model version with other
shapes), it writes a *shadow* of the engine to disk: the same structure, shapes and dtypes, with
every large array replaced by zeros (compiling depends on shapes, not values), and runs
``python -m service.program_compiler`` at nice 19. The child serves the shadow through a
`ProgramLibrary` of the same `ServedShapes`, compiles its plan (`runtime.warm_up`) and saves the
set where `ProgramStore` keeps sets; the parent loads it from there, as a restart does. When the
child fails (or no store is configured) the parent compiles in-process, as before.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np

from service.program_store import ProgramStore
from sona_jax.serve.engine import ServingEngine
from sona_jax.serve.neighbours import ViewerIndex
from sona_jax.serve.programs import ProgramLibrary

log = logging.getLogger("sona.programs")
KEEP_BYTES = 1 << 16  # arrays up to this size travel as they are; larger ones as zeros
SUFFIX = ".shadow"
BACKGROUND_NICE = 19
_shadows = itertools.count()


class ProgramCompiler:
    """Compiles program sets for ``library`` in child processes, handing them over through
    ``store``; ``cache_dir`` / ``cache_mb``: the persistent compilation cache the child uses
    too (None: none)."""

    def __init__(
        self,
        store: ProgramStore,
        timeout_seconds: float,
        cache_dir: Path | None = None,
        cache_mb: int = 0,
    ):
        self.store, self.timeout = store, timeout_seconds
        self.cache_dir, self.cache_mb = cache_dir, cache_mb
        self.compiled_sets = self.failed_sets = 0

    def attach(self, library: ProgramLibrary) -> None:
        library.compile_elsewhere = self.compile

    def compile(self, engine: ServingEngine) -> bool:
        """Compile the plan of ``engine``'s program set in a child process and load it into
        the set; False when that failed (the caller compiles in-process)."""
        programs, library = engine.programs, engine.library
        if programs is None or library is None:
            return False
        if programs.planned:
            return True
        if self.store.keep <= 0:
            return False  # nowhere to hand the programs over
        started = time.perf_counter()
        self.store.folder.mkdir(parents=True, exist_ok=True)
        shadow = self.store.folder / f"{os.getpid()}-{next(_shadows)}{SUFFIX}"
        try:
            with shadow.open("wb") as f:
                _ShadowPickler(f, pickle.HIGHEST_PROTOCOL).dump((shadow_of(engine), library.shapes))
            options = {
                "shadow": str(shadow),
                "programs": str(self.store.folder),
                "keep": self.store.keep,
                "cache_dir": str(self.cache_dir) if self.cache_dir else None,
                "cache_mb": self.cache_mb,
            }
            done = subprocess.run(
                [sys.executable, "-m", "service.program_compiler", json.dumps(options)],
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
            )
        except (OSError, subprocess.SubprocessError, pickle.PicklingError) as error:
            return self._failed(f"{type(error).__name__}: {error}")
        finally:
            shadow.unlink(missing_ok=True)
        if done.returncode != 0:
            return self._failed(f"exit {done.returncode}: {done.stderr[-2000:]}")
        self.store.load_into(programs, library)
        if not programs.planned:
            return self._failed("the child's programs did not load")
        self.compiled_sets += 1
        log.info(
            "%d programs compiled in a child process in %.1fs",
            len(programs),
            time.perf_counter() - started,
        )
        return True

    def _failed(self, why: str) -> bool:
        self.failed_sets += 1
        log.warning("compiling in a child process failed (compiling here instead): %s", why)
        return False


def shadow_of(engine: ServingEngine) -> ServingEngine:
    """``engine`` without its process's program sets (what is pickled; its large arrays go as
    zeros, `_ShadowPickler`)."""
    from dataclasses import replace

    return replace(engine, library=None, programs=None)


class _NoNeighbours:
    """Stands in for a `ViewerIndex` in a shadow: the same answer shapes, no neighbours."""

    def __init__(self, n: int):
        self.n = n

    def search(self, queries: np.ndarray, k: int) -> np.ndarray:
        return np.full((len(queries), min(k, self.n)), -1, np.int32)


def _device_zeros(shape: tuple, dtype: np.dtype) -> jax.Array:
    return jax.device_put(np.zeros(shape, dtype))


class _ShadowPickler(pickle.Pickler):
    """Pickles an engine with its large numeric arrays as zeros of their shape and dtype."""

    def reducer_override(self, obj):
        if isinstance(obj, jax.Array):
            if obj.nbytes <= KEEP_BYTES:
                return jax.device_put, (np.asarray(obj),)
            return _device_zeros, (obj.shape, obj.dtype)
        if isinstance(obj, np.ndarray) and obj.dtype.kind in "biuf" and obj.nbytes > KEEP_BYTES:
            return np.zeros, (obj.shape, obj.dtype)
        if isinstance(obj, ViewerIndex):
            return _NoNeighbours, (obj.n,)
        return NotImplemented


def main(argv: list[str] | None = None) -> int:
    """The child: compile a shadow's program set and save it (exit 0 once saved)."""
    from service.runtime import use_compilation_cache, warm_up
    from service.threads import limit_xla_threads

    parser = argparse.ArgumentParser(description="compile a shadow engine's programs")
    parser.add_argument("options", help="JSON: shadow, programs, keep, cache_dir, cache_mb")
    options = json.loads(parser.parse_args(argv).options)
    os.nice(BACKGROUND_NICE)
    limit_xla_threads(1)  # the plan's calls run once each; the cores belong to the server
    if options["cache_dir"]:
        use_compilation_cache(Path(options["cache_dir"]), options["cache_mb"])
    with open(options["shadow"], "rb") as f:
        engine, shapes = pickle.load(f)  # noqa: S301 - written by our parent a moment ago
    library = ProgramLibrary(shapes)
    store = ProgramStore(Path(options["programs"]), options["keep"])
    store.attach(library)
    served = engine.served(library)
    warm_up(served)
    if not served.programs.planned or store.saved_sets + store.loaded_sets == 0:
        print("the program set was not saved", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
