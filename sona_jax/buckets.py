"""Shape bucketing: the one rule that pads a size to a few fixed sizes, so jit compiles a
handful of programs rather than one per request.

Every padded axis of the engine (users in a batch, events of a user, per-user list widths,
items in a score request, history tables, adapter-training chunks) goes through `bucket`
(recommendation lists are not padded: their length is a traced value within `OUTPUT_WIDTH`):
the smallest listed size that holds ``n``, and past the largest listed size the next power of
two (so an unusually large input costs one more program per doubling, never one per size).
"""

from __future__ import annotations

import numpy as np

USER_BUCKETS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128)
EVENT_BUCKETS: tuple[int, ...] = (16, 64, 256, 1024, 4096, 16384, 65536)
LIST_BUCKETS: tuple[int, ...] = (64, 256, 1024, 4096)
OUTPUT_WIDTH = 100  # list columns every recommend call computes (lengths are traced, not shapes)
SCORE_BUCKETS: tuple[int, ...] = (1, 32, 1024)


def next_power_of_two(n: int) -> int:
    """The smallest power of two >= ``n`` (1 for n <= 1)."""
    return 1 << max(int(n) - 1, 0).bit_length()


def bucket(n: int, sizes: tuple[int, ...] = ()) -> int:
    """The smallest of ``sizes`` (ascending) holding ``n``; past the largest, the next power of
    two >= ``n`` (with no sizes, always the next power of two)."""
    for size in sizes:
        if n <= size:
            return size
    return next_power_of_two(n)


def pad_rows(array: np.ndarray, size: int, fill=0) -> np.ndarray:
    """``array`` (n, ...) padded along axis 0 to ``size`` rows of ``fill``."""
    array = np.asarray(array)
    if array.shape[0] == size:
        return array
    pad = np.full((size - array.shape[0], *array.shape[1:]), fill, array.dtype)
    return np.concatenate([array, pad], axis=0)


def stepped(n: int, growth: float, min_step: int) -> int:
    """``n`` rounded up to a whole number of steps, a step being ``growth`` of ``n`` rounded up to
    a power of two (at least ``min_step``): sizes that grow with a table (catalogue capacity,
    the kNN pool) without changing for every row added, and that two tables of nearly the same
    size share (so a rebuilt model version usually compiles nothing new)."""
    step = size_step(n, growth, min_step)
    return -(-int(n) // step) * step


def size_step(n: int, growth: float, min_step: int) -> int:
    """The step of `stepped` for a table of ``n`` rows."""
    return max(int(min_step), next_power_of_two(int(np.ceil(max(n, 1) * growth))))
