"""The two recommendation stages: retrieval (per-viewer candidates) and the request-time
candidates, against per-user numpy references; and the served split (retrieve once, rank
each request) answering exactly what one call does."""

import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings

from sona_jax.serve import fusion, rank, recommend, request_candidates, retrieval, sources
from sona_jax.serve.selection import BISECTION_STEPS
from tests.sona_jax.serve.fixtures import (
    SMALL_CFG,
    random_requests,
    random_state,
    random_users,
    seeds,
    sizes,
)

CFG = SMALL_CFG


def _top(values: np.ndarray, allowed: np.ndarray, k: int) -> set[int]:
    order = [i for i in np.argsort(-values, kind="stable") if allowed[i]]
    return set(order[:k])


@settings(max_examples=12, deadline=None)
@given(seeds, sizes)
def test_retrieve_is_the_union_of_each_sources_top_items(seed, n):
    state = random_state(seed)
    users = random_users(seed, state, n)
    exclude = np.random.default_rng(seed).random(n) < 0.5
    got = retrieval.retrieve(state, users, jnp.asarray(exclude), CFG)
    items, raw, floor, neighbours, content_span = (np.asarray(x) for x in got)
    absent = retrieval.no_context(n, CFG)
    full = np.stack(
        [
            np.asarray(sources.collaborative_scores(state, users, CFG)),
            np.asarray(sources.content_scores(state, users, CFG)),
            np.asarray(sources.graph_scores(state, users, CFG)),
            np.asarray(sources.sequential_scores(state, users, CFG)),
            np.asarray(sources.transformer_scores(state, users, CFG)),
        ],
        axis=1,
    )
    cold = np.asarray(sources.cold_start_scores(state, users, absent, CFG))
    trending = np.asarray(state.trending)
    k = CFG.candidates.per_source
    known = state.transformer["params"]["items"]["embedding"].shape[0] - 1
    for u in range(n):
        banned = set(users.dismissed[u][users.dismissed[u] >= 0].tolist())
        if exclude[u]:
            banned |= set(users.seen[u][users.seen[u] >= 0].tolist())
        allowed = np.array([i not in banned for i in range(full.shape[2])])
        has_profile = np.sum(users.preference[u] ** 2) > 0
        has_seeds = users.recent_items[u, 0] >= 0
        # the transformer reads only items its network was trained on
        reads = any(0 <= i < known for i in users.recent_items[u])
        active = [has_profile, has_profile, has_seeds, has_seeds, reads]
        want = _top(cold[u], allowed, k) | _top(trending, allowed, CFG.candidates.trending)
        for s in range(retrieval.RETRIEVED_SOURCES):
            if active[s]:
                want |= _top(full[u, s], allowed, k)
        kept = items[u][items[u] >= 0]
        assert set(kept.tolist()) == want
        assert list(kept) == sorted(kept)  # index order
        np.testing.assert_allclose(raw[u, : len(kept)], full[u][:, kept].T, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(floor[u], full[u][:, kept].min(axis=1), rtol=1e-5, atol=1e-6)
        # what scoring given items reads instead of the pool and the catalogue's product
        scorable = np.asarray(state.item_valid) & np.array(
            [i not in set(users.dismissed[u].tolist()) for i in range(full.shape[2])]
        )
        content = full[u, 1][scorable]
        np.testing.assert_allclose(content_span[u], [content.min(), content.max()], rtol=1e-6)
        similarity = np.asarray(state.pool_preferences) @ users.preference[u]
        rows = neighbours[u][neighbours[u] >= 0]
        assert users.pool_index[u] not in rows.tolist()
        assert len(rows) == min(
            CFG.collaborative.neighbours, (np.arange(len(similarity)) != users.pool_index[u]).sum()
        )
        others = np.delete(similarity, [users.pool_index[u]] if users.pool_index[u] >= 0 else [])
        np.testing.assert_allclose(
            np.sort(similarity[rows])[::-1],
            np.sort(others)[::-1][: len(rows)],
            rtol=1e-5,
            atol=1e-6,
        )


@settings(max_examples=8, deadline=None)
@given(seeds)
def test_context_candidates_are_each_combinations_best(seed):
    state = random_state(seed)
    state = state._replace(item_valid=np.random.default_rng(seed).random(30) < 0.8)
    fit, table = (np.asarray(x) for x in retrieval.context_candidates(state, CFG))
    combos = sources.context_combinations(state, CFG)
    scores = np.asarray(sources.global_context_scores(state, combos, CFG))
    np.testing.assert_allclose(fit, scores, rtol=1e-5, atol=1e-5)
    # with the table in the state, the scores are read from it, for the catalogue or at items
    with_table = state._replace(context_fit=fit)
    np.testing.assert_array_equal(
        np.asarray(sources.global_context_scores(with_table, combos, CFG)), fit
    )
    some = np.random.default_rng(seed).integers(-1, 30, (len(fit), 7)).astype(np.int32)
    at = np.asarray(sources.global_context_scores(with_table, combos, CFG, jnp.asarray(some)))
    np.testing.assert_array_equal(
        at[some >= 0], np.take_along_axis(fit, np.maximum(some, 0), axis=1)[some >= 0]
    )
    rows = np.asarray(sources.context_row(state, combos))
    assert list(rows) == list(range(len(rows)))  # `context_row` numbers them in this order
    valid = np.asarray(state.item_valid)
    for row in range(len(rows)):
        want = _top(scores[row], valid, CFG.candidates.per_source)
        got = set(table[row][table[row] >= 0].tolist())
        assert len(got) == len(want)
        # the threshold search is exact up to a band of (max - min) / 2**BISECTION_STEPS
        finite = scores[row][valid & np.isfinite(scores[row])]
        band = 2 * (finite.max() - finite.min()) / 2**BISECTION_STEPS if len(finite) else 0.0
        kth = min(scores[row][sorted(want)]) if want else 0.0
        for item in got ^ want:
            assert abs(scores[row][item] - kth) <= band + 1e-6, (item, scores[row][item], kth)


@settings(max_examples=12, deadline=None)
@given(seeds, sizes)
def test_scores_at_items_equal_the_catalogue_scores_there(seed, n):
    state = random_state(seed)
    users = random_users(seed, state, n)
    request = random_requests(seed, n)
    items = np.random.default_rng(seed).integers(0, 30, (n, 7)).astype(np.int32)
    for fn in (sources.context_scores, sources.cold_start_scores):
        everywhere = np.asarray(fn(state, users, request, CFG))
        at = np.asarray(fn(state, users, request, CFG, jnp.asarray(items)))
        np.testing.assert_allclose(
            at, np.take_along_axis(everywhere, items, 1), rtol=1e-5, atol=1e-6
        )


@settings(max_examples=10, deadline=None)
@given(seeds, sizes)
def test_served_split_answers_what_one_call_does(seed, n):
    """Retrieve once and rank with the kept candidates (the service) == one `recommend` call."""
    state = random_state(seed)
    users = random_users(seed, state, n)
    request = random_requests(seed, n)
    limit = np.full(n, 6, np.int32)
    weights = fusion.fusion_weights(CFG)
    one = recommend.recommend(state, users, request, limit, weights, CFG, 6)
    kept = retrieval.retrieve(state, users, request.exclude_watched, CFG)
    split = rank.rank(state, users, request, kept, limit, weights, CFG, 6)
    for a, b in zip(one, split, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@settings(max_examples=10, deadline=None)
@given(seeds, sizes)
def test_request_candidates_join_the_contexts_without_duplicates(seed, n):
    state = random_state(seed)
    users = random_users(seed, state, n)
    request = random_requests(seed, n)
    kept = retrieval.retrieve(state, users, request.exclude_watched, CFG)
    joined = request_candidates.request_candidates(state, users, request, kept, CFG)
    items, mask = np.asarray(joined.items), np.asarray(joined.mask)
    table = np.asarray(state.context_items)
    rows = np.asarray(sources.context_row(state, request))
    for u in range(n):
        chosen = items[u][mask[u]]
        assert len(set(chosen.tolist())) == len(chosen)
        has_context = request.device[u] >= 0 or request.time_of_day[u] >= 0 or request.mood[u] >= 0
        banned = set(users.dismissed[u][users.dismissed[u] >= 0].tolist())
        if request.exclude_watched[u]:
            banned |= set(users.seen[u][users.seen[u] >= 0].tolist())
        retrieved = set(np.asarray(kept.items)[u][np.asarray(kept.items)[u] >= 0].tolist())
        context = set(table[rows[u]][table[rows[u]] >= 0].tolist()) if has_context else set()
        assert set(chosen.tolist()) == retrieved | (context - banned)
