"""A capacity step's programs compiled in a child process at the lowest CPU priority, saved to the
program store, and loaded by the serving process (`ProgramStore.load_into`).

Compiling beside live traffic in the serving process cost serving in three ways, each measured
at a capacity step of the growth benchmark on this 2-core machine: tracing holds the interpreter
lock that every serving thread needs (batches that take 2-4 ms alone took 80-200 ms while a
compile traced, and requests waited past ``serving.max_wait_ms``: 503); the plan's one call of
each program ran on the single XLA thread that serves; and the cyclic collector's scans of
tracing's objects (`service.serving.heap`). A child has its own interpreter, collector and XLA threads,
all at nice 19: the serving process only reads a file and deserializes (no tracing).

The child builds the same shape as the serving process would (`shape_key`: the model version's
arrays at ``capacity`` rows under the served config and shapes), so the file it writes is the
one the serving process's new program set looks for. It never reads or writes JAX's persistent
compilation cache: an executable that came from that cache loses its kernels when serialized
again (`Programs.from_cache`), and would not be saved. Whatever the file lacks (a program that
cannot be serialized, a child that failed) the serving process compiles itself, as before.
"""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from service.serving.runtime import CompileStopped
from sona_jax.config import SonaConfig
from sona_jax.serve.programs import ServedShapes

log = logging.getLogger("sona.compile")

POLL_SECONDS = 0.5  # how often the parent looks whether the child ended or it must stop
CHILD_NICE = 19  # the lowest CPU priority: serving always comes first


@dataclass(frozen=True)
class ChildCompiler:
    """Where a child finds the model versions and writes program sets (the program store's
    folder and how many sets it keeps), and how long it may take."""

    model_dir: Path
    programs_dir: Path
    keep: int
    timeout: float

    def compile(
        self,
        version: int,
        cfg: SonaConfig,
        shapes: ServedShapes,
        capacity: int,
        stop: threading.Event | None = None,
    ) -> bool:
        """Compile model ``version``'s programs at ``capacity`` item rows in a child and save
        them to the program store; True once it succeeded. Raises `CompileStopped` when
        ``stop`` is set meanwhile (the child is ended). The child's log goes to a file, not a
        pipe: a pipe nobody reads while waiting would stall a child that logs 64 KB."""
        with tempfile.NamedTemporaryFile(suffix=".job", delete=False) as job:
            pickle.dump(
                (self.model_dir, version, cfg, shapes, capacity, self.programs_dir, self.keep),
                job,
            )
        started = time.monotonic()
        output = tempfile.TemporaryFile()  # noqa: SIM115 - closed below, after the child
        child = subprocess.Popen(
            [sys.executable, "-m", "service.serving.compile_child", job.name],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, "JAX_ENABLE_COMPILATION_CACHE": "false"},
        )
        try:
            while True:
                try:
                    child.wait(POLL_SECONDS)
                    break
                except subprocess.TimeoutExpired:
                    if stop is not None and stop.is_set():
                        raise CompileStopped from None
                    if time.monotonic() - started > self.timeout:
                        log.error(
                            "compile child for %d rows ran past %.0fs", capacity, self.timeout
                        )
                        return False
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            output.seek(0)
            errors = output.read().decode(errors="replace")
            output.close()
            Path(job.name).unlink(missing_ok=True)
        if child.returncode != 0:
            log.error("compile child for %d rows failed: %s", capacity, errors[-2000:])
            return False
        return True


def main(job: str) -> None:
    """The child: compile the plan of one shape and save it (see the module's docstring)."""
    os.setpriority(os.PRIO_PROCESS, 0, CHILD_NICE)
    with open(job, "rb") as file:
        model_dir, version, cfg, shapes, capacity, programs_dir, keep = pickle.load(file)

    from service.serving.program_store import ProgramStore
    from service.serving.runtime import warm_up
    from sona_jax.serve.engine import ServingEngine
    from sona_jax.serve.programs import ProgramLibrary
    from sona_lab.model_store import load_model

    library = ProgramLibrary(shapes)
    ProgramStore(programs_dir, keep).attach(library)
    model = load_model(model_dir, version)
    engine = ServingEngine.load(model, cfg).with_headroom().with_capacity(capacity)
    warm_up(engine.served(library), threads=os.cpu_count() or 1)


if __name__ == "__main__":
    main(sys.argv[1])
