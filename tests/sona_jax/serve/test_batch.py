"""The batch builder against a plain per-viewer reference: every profile lands in its own row,
padding rows are what a padding row holds, and list widths follow the one rule (the model's
widths, or the wide one for both lists when either is longer)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sona_jax.config import SonaConfig
from sona_jax.serve.batch import (
    ListWidths,
    Query,
    ViewerCandidates,
    ViewerProfile,
    batch_size,
    pad_users,
    profile_batch,
    query_batch,
    split_candidates,
    stack_candidates,
    stack_kept_for_scores,
)
from sona_jax.serve.fusion import cold_start_row
from sona_jax.serve.state import UserBatch

from .fixtures import D, G, R, seeds, sizes

CONFIGURED = cold_start_row(SonaConfig())  # the cold-start settings of queries without their own

WIDTHS = ListWidths(seen=4, dismissed=2, wide=8)


def random_profile(rng: np.random.Generator) -> ViewerProfile:
    history = 5
    return ViewerProfile(
        preference=rng.standard_normal(D).astype(np.float32),
        adapter=rng.standard_normal((D, R)).astype(np.float16),
        recent_items=rng.integers(-1, 30, history).astype(np.int32),
        recent_weights=rng.random(history).astype(np.float32),
        seen=rng.integers(0, 30, rng.integers(0, 7)).astype(np.int32),
        dismissed=rng.integers(0, 30, rng.integers(0, 4)).astype(np.int32),
        genre_affinity=rng.random(G).astype(np.float32),
        hourly=rng.random(24).astype(np.float32),
        qualifying=float(rng.integers(0, 9)),
        events=int(rng.integers(0, 9)),
        pool_index=int(rng.integers(-1, 12)),
    )


def reference_row(profile: ViewerProfile | None, seen_width: int, dismissed_width: int) -> dict:
    """What row of a batch ``profile`` (None: a padding row) should be, one value at a time."""

    def listed(items, width):
        out = np.full(width, -1, np.int32)
        items = [] if items is None else list(items)[:width]
        out[: len(items)] = items
        return out

    if profile is None:
        return {
            "preference": np.zeros(D),
            "adapter": np.zeros((D, R)),
            "recent_items": np.full(5, -1),
            "recent_weights": np.zeros(5),
            "seen": listed(None, seen_width),
            "dismissed": listed(None, dismissed_width),
            "genre_affinity": np.zeros(G),
            "hourly": np.zeros(24),
            "qualifying": 0.0,
            "pool_index": -1,
        }
    return {
        "preference": profile.preference,
        "adapter": profile.adapter,
        "recent_items": profile.recent_items,
        "recent_weights": profile.recent_weights,
        "seen": listed(profile.seen, seen_width),
        "dismissed": listed(profile.dismissed, dismissed_width),
        "genre_affinity": profile.genre_affinity,
        "hourly": profile.hourly,
        "qualifying": profile.qualifying,
        "pool_index": profile.pool_index,
    }


@settings(max_examples=40, deadline=None)
@given(seeds, sizes, st.booleans())
def test_profile_batch_rows_match_each_profile(seed, n, with_seen):
    rng = np.random.default_rng(seed)
    profiles = [random_profile(rng) for _ in range(n)]
    size = batch_size(n)
    batch = profile_batch(profiles, size, WIDTHS, with_seen)
    longest_seen = max(len(p.seen) for p in profiles) if with_seen else 0
    longest_dismissed = max(len(p.dismissed) for p in profiles)
    wide = longest_seen > WIDTHS.seen or longest_dismissed > WIDTHS.dismissed
    seen_width = WIDTHS.wide if wide else WIDTHS.seen
    dismissed_width = WIDTHS.wide if wide else WIDTHS.dismissed
    assert batch.preference.shape == (size, D)
    assert batch.seen.shape == (size, seen_width)
    assert batch.dismissed.shape == (size, dismissed_width)
    for row in range(size):
        profile = profiles[row] if row < n else None
        expected = reference_row(profile, seen_width, dismissed_width)
        if profile is not None and not with_seen:
            expected["seen"] = np.full(seen_width, -1)
        for name, value in expected.items():
            np.testing.assert_array_equal(np.asarray(getattr(batch, name))[row], value, name)


@settings(max_examples=25, deadline=None)
@given(seeds, sizes)
def test_profile_batch_is_pad_users_of_the_same_rows(seed, n):
    """The serving path (profiles) and the evaluation path (host rows) give the same batch."""
    rng = np.random.default_rng(seed)
    profiles = [random_profile(rng) for _ in range(n)]
    size = batch_size(n)

    def lists(name):
        width = max(1, max(len(getattr(p, name)) for p in profiles))
        out = np.full((n, width), -1, np.int32)
        for row, p in enumerate(profiles):
            out[row, : len(getattr(p, name))] = getattr(p, name)
        return out

    rows = UserBatch(
        **{
            name: np.stack([np.asarray(getattr(p, name)) for p in profiles])
            for name in UserBatch._fields
            if name not in ("seen", "dismissed")
        },
        seen=lists("seen"),
        dismissed=lists("dismissed"),
    )
    padded = pad_users(rows, size, WIDTHS)
    built = profile_batch(profiles, size, WIDTHS)
    for name in UserBatch._fields:
        np.testing.assert_array_equal(getattr(built, name), getattr(padded, name), name)


@settings(max_examples=25, deadline=None)
@given(seeds, sizes)
def test_query_batch_pads_requests_and_candidates(seed, n):
    rng = np.random.default_rng(seed)
    queries = [
        Query(
            random_profile(rng),
            limit=int(rng.integers(1, 30)),
            exclude_watched=bool(rng.integers(2)),
            mmr_lambda=float(rng.random()),
            device=int(rng.integers(-1, 4)),
            seed=int(rng.integers(0, 100)),
            # every other query an experiment variant's cold-start settings
            cold_start=CONFIGURED * 0.5 if i % 2 else None,
        )
        for i in range(n)
    ]
    size = batch_size(n)
    _, requests, limits = query_batch(queries, size, WIDTHS, CONFIGURED)
    for row in range(size):
        q = queries[row] if row < n else None
        assert limits[row] == (q.limit if q else 1)
        assert requests.device[row] == (q.device if q else -1)
        assert requests.exclude_watched[row] == (q.exclude_watched if q else True)
        assert requests.mmr_lambda[row] == np.float32(q.mmr_lambda if q else 1.0)
        assert requests.seed[row] == (q.seed if q else 0)
        assert requests.time_of_day[row] == -1
        if q is not None:
            want = CONFIGURED if q.cold_start is None else q.cold_start
            np.testing.assert_array_equal(requests.cold_start[row], want)
        else:
            assert np.isfinite(requests.cold_start[row]).all()
    found = [
        ViewerCandidates(
            rng.integers(-1, 30, 6).astype(np.int32),
            rng.random((6, 3)).astype(np.float32),
            rng.random(3).astype(np.float32),
            rng.integers(-1, 30, 5).astype(np.int32),
            rng.random(2).astype(np.float32),
        )
        for _ in range(n)
    ]
    candidates = stack_candidates(found, size)
    for row in range(size):
        expected = found[row] if row < n else None
        np.testing.assert_array_equal(
            candidates.items[row], expected.items if expected else np.full(6, -1)
        )
        np.testing.assert_array_equal(
            candidates.raw[row], expected.raw if expected else np.zeros((6, 3))
        )
        np.testing.assert_array_equal(
            candidates.floor[row], expected.floor if expected else np.zeros(3)
        )
        np.testing.assert_array_equal(
            candidates.neighbours[row], expected.neighbours if expected else np.full(5, -1)
        )
        np.testing.assert_array_equal(
            candidates.content_span[row], expected.content_span if expected else np.zeros(2)
        )
    kept = stack_kept_for_scores(found, size)  # what scoring reads: the same rows
    np.testing.assert_array_equal(kept.neighbours, candidates.neighbours)
    np.testing.assert_array_equal(kept.content_span, candidates.content_span)
    assert [
        [np.array_equal(a, b) for a, b in zip(row, want, strict=True)]
        for row, want in zip(split_candidates(candidates, n), found, strict=True)
    ] == [[True] * 5] * n
