"""Thread settings for host programs that call BLAS-backed libraries (implicit, scipy)."""

from __future__ import annotations

import os


def single_threaded_blas() -> None:
    """Ask OpenBLAS for one thread (implicit's advice: no nested BLAS thread pools); takes
    effect for libraries loaded after this call, so the CLI calls it first."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
