"""`sona serve`'s thread settings: XLA's pool size, affinity restored afterwards."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import os, sys
from service.threads import limit_xla_threads
before = os.sched_getaffinity(0)
size = limit_xla_threads(int(sys.argv[1]))
import jax.numpy as jnp
jnp.zeros(1).block_until_ready()
pool = sum(open(f"/proc/self/task/{t}/comm").read().startswith("tf_XLAEigen")
           for t in os.listdir("/proc/self/task"))
confined = [t for t in os.listdir("/proc/self/task") if os.sched_getaffinity(int(t)) != before]
print(size, pool, len(confined))
"""


def _probe(threads: int) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(threads)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    return out.stdout.split()


@pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs Linux CPU affinity and at least 2 CPUs",
)
def test_one_xla_thread_and_every_thread_free_again():
    size, pool, confined = _probe(1)
    assert size == "1" and pool == "1"  # XLA sized its pool from the confined starting thread
    assert confined == "0"  # and afterwards no thread is held to that one CPU


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux CPU affinity")
def test_zero_leaves_xla_its_default_pool():
    size, pool, confined = _probe(0)
    assert size == "None" and int(pool) == len(os.sched_getaffinity(0))
    assert confined == "0"
