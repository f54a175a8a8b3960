"""Top-k by threshold search (`sona_jax.selection`) against numpy's sort."""

import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sona_jax.serve.selection import BISECTION_STEPS, running_count, top_k_mask, top_k_unordered


def reference_top_k(row: np.ndarray, k: int) -> set[int]:
    """Indices of the k largest finite entries (ties: lowest index first, like lax.top_k)."""
    finite = np.flatnonzero(np.isfinite(row))
    order = finite[np.lexsort((finite, -row[finite]))]
    return set(order[:k].tolist())


def assert_top_k(row: np.ndarray, chosen: set[int], k: int) -> None:
    """``chosen`` is the top-k set up to the documented band: exactly min(k, finite) items,
    none of them below the k-th value by more than the band, none left out above it by more."""
    want = reference_top_k(row, k)
    assert len(chosen) == len(want)
    if chosen == want or not want:
        return
    finite = row[np.isfinite(row)]
    band = (finite.max() - finite.min()) / 2**BISECTION_STEPS * 1.01
    kth = min(row[list(want)])
    assert all(np.isfinite(row[i]) and row[i] >= kth - band for i in chosen)
    assert all(i in chosen for i in np.flatnonzero(np.isfinite(row)) if row[i] > kth + band)


# A few shapes only: each new shape is a new compilation.
rows = st.sampled_from([1, 3])
widths = st.sampled_from([1, 7, 50, 300])
ks = st.sampled_from([1, 3, 10, 40])


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), rows, widths, ks, st.sampled_from(["distinct", "ties", "masked"]))
def test_mask_is_the_top_k_set(seed, n_rows, width, k, kind):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(n_rows, width)).astype(np.float32)
    if kind == "ties":  # few distinct values: whole tie groups straddle the k-th place
        scores = np.round(scores * 2) / 2
    if kind == "masked":
        scores[rng.random((n_rows, width)) < 0.6] = -np.inf
    got = np.asarray(top_k_mask(jnp.asarray(scores), k))
    for row in range(n_rows):
        assert_top_k(scores[row], set(np.flatnonzero(got[row]).tolist()), k)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), rows, widths, ks)
def test_unordered_values_and_indices(seed, n_rows, width, k):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(n_rows, width)).astype(np.float32)
    scores[rng.random((n_rows, width)) < 0.3] = -np.inf
    values, index = (np.asarray(x) for x in top_k_unordered(jnp.asarray(scores), k))
    assert values.shape == index.shape == (n_rows, min(k, width))
    for row in range(n_rows):
        kept = index[row][index[row] >= 0]
        assert_top_k(scores[row], set(kept.tolist()), k)
        assert list(kept) == sorted(kept)  # index order
        np.testing.assert_array_equal(values[row][: len(kept)], scores[row][kept])
        assert np.all(values[row][len(kept) :] == -np.inf)


def test_constant_rows_and_rows_of_nothing():
    scores = jnp.array([[0.0] * 10, [-jnp.inf] * 10, [1.0] * 3 + [-jnp.inf] * 7])
    got = np.asarray(top_k_mask(scores, 4))
    assert np.flatnonzero(got[0]).tolist() == [0, 1, 2, 3]
    assert not got[1].any()
    assert np.flatnonzero(got[2]).tolist() == [0, 1, 2]
    odd = jnp.array([[0.5, jnp.nan, 0.9, 0.8, jnp.inf, 0.1]])  # never picked, never in the way
    assert np.flatnonzero(np.asarray(top_k_mask(odd, 2))[0]).tolist() == [2, 3]


@settings(max_examples=30, deadline=None)
@given(
    st.integers(0, 10_000),
    st.sampled_from([(1,), (3,), (2, 3)]),
    st.sampled_from([1, 31, 32, 33, 300, 5000]),
    st.floats(0.0, 1.0),
)
def test_running_count_is_the_cumulative_sum(seed, lead, width, density):
    flags = np.random.default_rng(seed).random((*lead, width)) < density
    got = np.asarray(running_count(jnp.asarray(flags)))
    np.testing.assert_array_equal(got, np.cumsum(flags, axis=-1))
