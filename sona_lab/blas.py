"""Thread settings for host programs that call BLAS-backed libraries (implicit, scipy)."""

from __future__ import annotations

import os


def single_threaded_blas() -> None:
    """One BLAS thread for this process: implicit advises against nested thread pools, and a
    threaded BLAS sums in an order that depends on the pool, so results drift between runs
    (implicit-ALS's NDCG@10 moved in the fourth decimal). The environment variable reaches
    libraries loaded later; threadpoolctl limits the ones already loaded (numpy's)."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
