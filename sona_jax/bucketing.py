"""Shape bucketing: pad batches to a few fixed sizes so jit compiles a handful of programs."""

from __future__ import annotations

import numpy as np

USER_BUCKETS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128)


def bucket_size(n: int, buckets: tuple[int, ...] = USER_BUCKETS) -> int:
    """The smallest bucket holding ``n`` rows; raises when ``n`` exceeds the largest."""
    for size in buckets:
        if n <= size:
            return size
    raise ValueError(f"batch of {n} exceeds the largest bucket {buckets[-1]}; split it")


def pad_rows(array: np.ndarray, size: int, fill=0) -> np.ndarray:
    """``array`` (n, ...) padded along axis 0 to ``size`` rows of ``fill``."""
    array = np.asarray(array)
    if array.shape[0] == size:
        return array
    pad = np.full((size - array.shape[0], *array.shape[1:]), fill, array.dtype)
    return np.concatenate([array, pad], axis=0)
