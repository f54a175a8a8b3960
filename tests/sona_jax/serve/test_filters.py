"""Request filters and "not interested" (issue 15) against a plain per-user numpy reference."""

from __future__ import annotations

import jax
import numpy as np
from hypothesis import given, settings

from sona_jax.serve import filters, fusion, recommend
from sona_jax.serve.batch import RequestFilter, filter_rows
from tests.sona_jax.serve import reference
from tests.sona_jax.serve.fixtures import (
    SMALL_CFG,
    G,
    random_requests,
    random_state,
    random_users,
    seeds,
    sizes,
)

CFG = SMALL_CFG
passes = jax.jit(filters.passes)
penalty = jax.jit(filters.dismissal_penalty, static_argnames="cfg")


def random_filters(seed: int, n: int, n_items: int, series: bool = True) -> list[RequestFilter]:
    """One random filter per request; about one in four filters nothing."""
    rng = np.random.default_rng(seed + 3000)

    def bound(low, high):
        return float(rng.uniform(low, high)) if rng.random() < 0.4 else None

    out = []
    for _ in range(n):
        if rng.random() < 0.25:
            out.append(RequestFilter())
            continue
        genres = rng.permutation(G)
        n_any, n_none = rng.integers(0, 3), rng.integers(0, 2)
        out.append(
            RequestFilter(
                excluded=tuple(int(i) for i in rng.choice(n_items, rng.integers(0, 6), False)),
                genres_any=tuple(int(g) for g in genres[:n_any]),
                genres_none=tuple(int(g) for g in genres[n_any : n_any + n_none]),
                year_min=bound(1940, 1990),
                year_max=bound(1980, 2030),
                duration_min=bound(0, 60),
                duration_max=bound(60, 160),
                one_per_series=series and bool(rng.random() < 0.5),
            )
        )
    return out


def _batch(each: list[RequestFilter]) -> filters.ItemFilter:
    return filter_rows(each, len(each), G, CFG.filters.max_excluded_ids)


def _state_arrays(state) -> dict:
    return {
        "genres": np.asarray(state.item_genres),
        "release_year": np.asarray(state.release_year),
        "duration": np.asarray(state.duration),
    }


@settings(max_examples=12, deadline=None)
@given(seeds, sizes)
def test_passes_matches_reference_over_the_catalogue_and_at_items(seed, n):
    state = random_state(seed)
    n_items = state.item_valid.shape[0]
    each = random_filters(seed, n, n_items)
    items = np.random.default_rng(seed).integers(-1, n_items, (n, 9)).astype(np.int32)
    everywhere = np.asarray(passes(state, _batch(each)))
    at = np.asarray(passes(state, _batch(each), items))
    arrays = _state_arrays(state)
    for u, f in enumerate(each):
        want = [reference.passes_filter(i, f, **arrays) for i in range(n_items)]
        np.testing.assert_array_equal(everywhere[u], want)
        for j, item in enumerate(items[u]):
            if item >= 0:
                assert at[u, j] == want[item], (u, j)


def _recommend(state, users, request, each, n_out=6):
    limit = np.full(len(each), n_out, np.int32)
    weights = fusion.fusion_weights(CFG)
    out = recommend.recommend(
        state, users, request, limit, weights, CFG, n_out, item_filter=_batch(each)
    )
    return np.asarray(out.items)


@settings(max_examples=25, deadline=None)
@given(seeds, sizes)
def test_lists_hold_only_what_passes_and_stay_full_when_enough_qualifies(seed, n):
    state = random_state(seed)
    users = random_users(seed, state, n)
    request = random_requests(seed, n)
    n_items = state.item_valid.shape[0]
    each = random_filters(seed, n, n_items, series=False)
    items = _recommend(state, users, request, each)
    arrays = _state_arrays(state)
    for u, f in enumerate(each):
        listed = items[u][items[u] >= 0]
        assert all(reference.passes_filter(i, f, **arrays) for i in listed), (u, listed)
        refused = set(np.asarray(users.dismissed[u]).tolist())
        if request.exclude_watched[u]:
            refused |= set(np.asarray(users.seen[u]).tolist())
        qualifying = [
            i
            for i in range(n_items)
            if reference.passes_filter(i, f, **arrays) and i not in refused
        ]
        assert len(listed) == min(len(qualifying), items.shape[1]), (u, qualifying, listed)


@settings(max_examples=25, deadline=None)
@given(seeds, sizes)
def test_one_per_series_lists_each_series_once(seed, n):
    state = random_state(seed)
    users = random_users(seed, state, n)
    request = random_requests(seed, n)
    each = [RequestFilter(one_per_series=True)] * n
    items = _recommend(state, users, request, each)
    series = np.asarray(state.series)
    for u in range(n):
        listed = series[items[u][items[u] >= 0]]
        listed = listed[listed >= 0]
        assert len(listed) == len(set(listed.tolist())), (u, listed)


@settings(max_examples=25, deadline=None)
@given(seeds, sizes)
def test_dismissal_penalty_matches_reference(seed, n):
    state = random_state(seed)
    users = random_users(seed, state, n)
    n_items = state.item_valid.shape[0]
    items = np.random.default_rng(seed).integers(0, n_items, (n, 7)).astype(np.int32)
    got = np.asarray(penalty(state, users.dismissed, items, cfg=CFG.filters))
    vectors = np.asarray(state.item_diversity)
    for u in range(n):
        for j, item in enumerate(items[u]):
            want = reference.dismissal_penalty(
                vectors, item, np.asarray(users.dismissed[u]), CFG.filters
            )
            np.testing.assert_allclose(got[u, j], want, rtol=1e-4, atol=1e-5)


def test_a_dismissed_items_neighbours_fall_in_the_list():
    """Dismissing a listed item removes it and moves its close neighbour on the list down."""
    state = random_state(7)
    users = random_users(7, state, 1)._replace(dismissed=np.full((1, 2), -1, np.int32))
    request = random_requests(7, 1)._replace(mmr_lambda=np.ones(1, np.float32))
    before = _recommend(state, users, request, [RequestFilter()], n_out=8)[0]
    vectors = np.asarray(state.item_diversity)
    listed = before[before >= 0]
    cosine = vectors[listed] @ vectors[listed].T
    np.fill_diagonal(cosine, -1.0)
    dismissed_at, neighbour_at = np.unravel_index(np.argmax(cosine), cosine.shape)
    assert cosine[dismissed_at, neighbour_at] > CFG.filters.dismissal_min_similarity
    dismissed, neighbour = int(listed[dismissed_at]), int(listed[neighbour_at])
    after = _recommend(
        state,
        users._replace(dismissed=np.array([[dismissed, -1]], np.int32)),
        request,
        [RequestFilter()],
        n_out=8,
    )[0]
    assert dismissed not in after
    others = [int(i) for i in listed if i not in (dismissed, neighbour)]
    ahead_before = sum(others.index(i) < len(others) for i in others[: int(neighbour_at)])
    now = [int(i) for i in after if i >= 0]
    ahead_after = now.index(neighbour) if neighbour in now else len(now)
    assert ahead_after > ahead_before - (dismissed_at < neighbour_at), (before, after)
