"""Each named stage of `rank.rank` on random viewers, against a plain per-user numpy check:
fusion masks what is not a candidate, the pool is the most relevant candidates (the best
first), selection picks distinct pool slots up to the limit, new-item slots leave a list alone
while nothing was added, and explanations cite the viewer's own recent items."""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sona_jax.serve import rank, retrieval
from sona_jax.serve.fusion import SEQUENTIAL, fusion_matrix
from sona_jax.serve.new_items import new_item_slots
from sona_jax.serve.request_candidates import request_candidates
from tests.sona_jax.serve.fixtures import (
    SMALL_CFG,
    random_requests,
    random_state,
    random_users,
    seeds,
)

CFG = SMALL_CFG
N_OUT = 6
sizes = st.sampled_from((1, 4))  # two batch shapes: each stage compiles twice
STATIC = ("cfg", "n_out")
fused = jax.jit(rank.fused)
candidate_pool = jax.jit(rank.candidate_pool, static_argnames=STATIC)
selected = jax.jit(rank.selected, static_argnames=STATIC)
explained_by = jax.jit(rank.explained_by, static_argnames=("cfg",))
slots_of = jax.jit(new_item_slots, static_argnames=("n_columns", "cfg"))
joined_of = jax.jit(request_candidates, static_argnames=("cfg",))


def _stages(seed: int, n: int):
    state = random_state(seed)
    users = jax.tree.map(jnp.asarray, random_users(seed, state, n))
    request = random_requests(seed, n)
    kept = retrieval.retrieve(state, users, request.exclude_watched, CFG)
    joined = joined_of(state, users, request, kept, CFG)
    weights = jnp.asarray(fusion_matrix(CFG))
    blend, everywhere = fused(state, users, request, joined, weights, None)
    return state, users, request, kept, joined, blend, everywhere


@settings(max_examples=8, deadline=None)
@given(seeds, sizes)
def test_fusion_scores_exactly_the_candidates(seed, n):
    *_, joined, _, everywhere = _stages(seed, n)
    everywhere, mask = np.asarray(everywhere), np.asarray(joined.mask)
    assert np.all(np.isfinite(everywhere) == mask)


@settings(max_examples=8, deadline=None)
@given(seeds, sizes)
def test_the_pool_is_the_most_relevant_candidates_best_first(seed, n):
    state, users, _, _, joined, _, everywhere = _stages(seed, n)
    pool = candidate_pool(state, users, joined, everywhere, CFG, N_OUT)
    relevance, positions = np.asarray(pool.relevance), np.asarray(pool.positions)
    valid, everywhere = np.asarray(pool.valid), np.asarray(everywhere)
    size = positions.shape[1]
    for u in range(n):
        finite = np.flatnonzero(np.isfinite(everywhere[u]))
        assert valid[u].sum() == min(size, len(finite))
        inside = positions[u][valid[u]]
        outside = np.setdiff1d(finite, inside)
        if len(outside) and len(inside):  # top-k whatever the ties: nothing left out beats it
            assert everywhere[u][inside].min() >= everywhere[u][outside].max()
        assert np.all((relevance[u] >= 0) & (relevance[u] <= everywhere[u][inside].max() + 1e-6))
        assert relevance[u][0] == relevance[u].max()
        items = np.asarray(joined.items)[u][inside]
        np.testing.assert_array_equal(np.asarray(pool.items)[u][valid[u]], items)


@settings(max_examples=8, deadline=None)
@given(seeds, sizes)
def test_selection_picks_distinct_pool_slots_up_to_each_limit(seed, n):
    state, users, request, _, joined, _, everywhere = _stages(seed, n)
    pool = candidate_pool(state, users, joined, everywhere, CFG, N_OUT)
    limit = jnp.asarray(np.random.default_rng(seed).integers(1, N_OUT + 1, n), jnp.int32)
    chosen, explored, n_explore = (
        np.asarray(x) for x in selected(state, users, request, pool, limit, CFG, N_OUT)
    )
    valid = np.asarray(pool.valid)
    for u in range(n):
        picked = chosen[u][chosen[u] >= 0]
        assert len(set(picked.tolist())) == len(picked)
        assert len(picked) == min(int(limit[u]), int(valid[u].sum()))
        assert np.all(valid[u][picked])
        assert np.all(chosen[u][int(limit[u]) :] == -1)
        assert explored[u].sum() <= n_explore[u]


@settings(max_examples=6, deadline=None)
@given(seeds, sizes)
def test_new_item_slots_leave_a_list_alone_while_nothing_was_added(seed, n):
    state, users, request, kept, joined, *_ = _stages(seed, n)
    assert state.new_items.shape[0] == 0  # a state as the model made it
    positions = jnp.tile(jnp.arange(N_OUT, dtype=jnp.int32), (n, 1))
    stop = jnp.full(n, N_OUT, jnp.int32)
    slots = slots_of(state, users, request, kept, positions, positions, stop - 2, stop, 10, CFG)
    np.testing.assert_array_equal(np.asarray(slots.positions), np.asarray(positions))
    assert not np.asarray(slots.offered).any()


@settings(max_examples=6, deadline=None)
@given(seeds, sizes)
def test_explanations_cite_the_viewers_own_recent_items(seed, n):
    state, users, *_ = _stages(seed, n)
    items = jnp.asarray(np.random.default_rng(seed).integers(-1, 30, (n, N_OUT)), jnp.int32)
    ok = items >= 0
    kind = jnp.zeros(items.shape, jnp.int32)  # no sequential item: the most similar seed
    assert int(SEQUENTIAL) != 0
    cited = np.asarray(explained_by(state, users, items, ok, kind, CFG))
    seeds_ = np.asarray(users.recent_items)[:, : CFG.candidates.explain_from]
    for u in range(n):
        assert np.all(cited[u][~np.asarray(ok)[u]] == -1)
        own = set(seeds_[u][seeds_[u] >= 0].tolist())
        for c in cited[u][np.asarray(ok)[u]]:
            assert (c == -1 and not own) or c in own
