"""Saved program sets load and run in the next process (a warm restart).

jaxlib 0.10's CPU executables lose their kernels when serialized a second time: one that JAX's
persistent compilation cache gave, or one loaded from a file, saved again, loaded fine and
failed at its first call in the next process (every new viewer's recommendations answered 500
after a warm restart). Each step below is a fresh process, as a restart is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.serving import program_store
from sona_jax.serve.programs import ProgramLibrary, Programs

ROOT = Path(__file__).resolve().parents[3]

STEP = """
import json, sys
from pathlib import Path
import jax, jax.numpy as jnp, numpy as np
from service.serving.program_store import ProgramStore
from service.serving.runtime import use_compilation_cache
from sona_jax.serve.programs import ProgramLibrary

cache, folder, extra = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "extra"
use_compilation_cache(cache, 64)
library = ProgramLibrary()
ProgramStore(folder, keep=4).attach(library)


@jax.jit
def gathered(x, rows, keep):  # a gather, a select and a copy: kernels of their own
    picked = x[rows]
    masked = jnp.where(keep[:, None], picked, -1.0).T.copy()
    return jax.lax.top_k(masked.reshape(-1), 5)[0], (masked * 2).astype(jnp.int32)


@jax.jit
def extra_program(x):
    return jnp.cumsum(jnp.tanh(x), axis=0)[::-1]


x = jnp.arange(800, dtype=jnp.float32).reshape(100, 8) / 100
rows = jnp.arange(10)
programs = library.programs("one shape")
top, ints = programs.run(gathered, (x, rows, rows % 2 == 0))
out = {"top": np.asarray(top).round(5).tolist(), "ints": int(np.asarray(ints).sum())}
if extra:
    out["extra"] = round(float(np.asarray(programs.run(extra_program, (x,))).sum()), 3)
library.planned(programs)
out |= {"compiled": programs.compiled, "loaded": programs.loaded,
        "from_cache": len(programs.from_cache)}
print(json.dumps(out))
"""


def _fresh_process(script: str, *args: str) -> str:
    """``script``'s standard output, run in a fresh process (as a restart is)."""
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _step(cache: Path, folder: Path, extra: bool = False) -> dict:
    out = _fresh_process(STEP, str(cache), str(folder), "extra" if extra else "-")
    return json.loads(out.splitlines()[-1])


@pytest.mark.timeout(300)
def test_a_set_saved_from_the_compilation_cache_or_from_a_file_runs_in_the_next_process(
    tmp_path,
):
    cache, first, second = tmp_path / "cache", tmp_path / "first", tmp_path / "second"
    compiled = _step(cache, first)  # XLA compiles; the set is saved; the cache filled
    assert (compiled["compiled"], compiled["from_cache"]) == (1, 0)

    from_cache = _step(cache, second)  # the cache gives it: not saved
    assert from_cache["from_cache"] == 1
    after = _step(cache, second)  # the next process: runs (compiled again, from the cache)
    assert after["loaded"] == 0 and after["top"] == compiled["top"]
    assert after["ints"] == compiled["ints"]

    mixed = _step(cache, first, extra=True)  # one loaded, one new: both saved
    assert (mixed["loaded"], mixed["compiled"]) == (1, 1)
    reloaded = _step(tmp_path / "empty cache", first, extra=True)
    assert (reloaded["loaded"], reloaded["compiled"]) == (2, 0)  # every program from the file
    assert reloaded["top"] == compiled["top"] and reloaded["ints"] == compiled["ints"]
    assert reloaded["extra"] == mixed["extra"]  # and each one runs


BESIDE_SERVING = """
import sys, threading
from pathlib import Path
import jax, jax.numpy as jnp, numpy as np
from service.serving.runtime import _no_cache_writes, use_compilation_cache

cache = Path(sys.argv[1])
use_compilation_cache(cache, 64)
entries = lambda: len(list(cache.glob("*-cache")))
with _no_cache_writes():  # a compile beside serving
    jax.jit(lambda x: jnp.sin(x) * 3).lower(np.ones(7, np.float32)).compile()
    other = threading.Thread(  # another thread's compile meanwhile writes as usual
        target=lambda: jax.jit(lambda x: jnp.cos(x) + 1).lower(np.ones(5, np.float32)).compile()
    )
    other.start()
    other.join()
beside = entries()
jax.jit(lambda x: jnp.tanh(x) - 2).lower(np.ones(3, np.float32)).compile()  # at start-up
print(beside, entries())
"""


@pytest.mark.timeout(120)
def test_compiles_beside_serving_write_nothing_to_the_compilation_cache(tmp_path):
    out = _fresh_process(BESIDE_SERVING, str(tmp_path / "cache"))
    beside, after = map(int, out.split()[-2:])
    assert beside == 1, "only the other thread's program was to be written"
    assert after == 2


def test_a_change_to_the_engines_code_names_another_file(tmp_path, monkeypatch):
    """Saved executables are the engine's code compiled: after an upgrade that changes it, the
    old file is not loaded (the set compiles again and is saved under its own name)."""
    library, programs = ProgramLibrary(), Programs(("shape",))
    before = program_store.ProgramStore(tmp_path, keep=4)
    assert before.code == program_store.engine_code_digest()  # the same code: the same name
    assert before.path(programs, library) == program_store.ProgramStore(tmp_path, 4).path(
        programs, library
    )
    monkeypatch.setattr(program_store, "engine_code_digest", lambda: "another engine")
    after = program_store.ProgramStore(tmp_path, keep=4)
    assert after.path(programs, library) != before.path(programs, library)
