"""SPEC 3.3-3.6: each batched source, fusion, MMR and cold start against per-user numpy."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sona_jax.config import SonaConfig
from sona_jax.model.sequence_model import network_shape, next_item_logits
from sona_jax.serve import fusion, mmr, recommend, retrieval, sources
from sona_jax.serve.state import has_context
from tests.sona_jax.model import reference as lora_reference
from tests.sona_jax.serve import reference
from tests.sona_jax.serve.fixtures import (
    SMALL_CFG,
    random_requests,
    random_state,
    random_users,
    seeds,
    sizes,
)

CFG = SMALL_CFG


def catalogue_scores(state, users, request, cfg=CFG) -> fusion.SourceScores:
    """Every source over the whole catalogue (the reference the two stages are checked by)."""
    raw = jnp.stack(
        [
            sources.collaborative_scores(state, users, cfg),
            sources.content_scores(state, users, cfg),
            sources.graph_scores(state, users, cfg),
            sources.sequential_scores(state, users, cfg),
            sources.transformer_scores(state, users, cfg),
            sources.context_scores(state, users, request, cfg),
        ],
        axis=1,
    )
    active = jnp.concatenate(
        [retrieval.active_retrieved(state, users), has_context(request)[:, None]], axis=1
    )
    return fusion.SourceScores(raw, sources.cold_start_scores(state, users, request, cfg), active)


@settings(max_examples=25, deadline=None)
@given(seeds, sizes)
def test_collaborative_matches_reference(seed, n):
    state = random_state(seed)
    users = random_users(seed, state, n)
    got = np.asarray(sources.collaborative_scores(state, users, CFG))
    for u in range(n):
        votes = CFG.collaborative.vote_items  # each neighbour's most recent items vote
        want = reference.collaborative(
            users.preference[u],
            state.pool_preferences,
            state.pool_items[:, :votes],
            state.pool_weights[:, :votes],
            users.pool_index[u],
            CFG.collaborative.neighbours,
            got.shape[1],
        )
        np.testing.assert_allclose(got[u], want, rtol=1e-4, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(seeds, sizes, st.integers(1, 3))
def test_graph_matches_reference(seed, n, hops):
    state = random_state(seed)
    users = random_users(seed, state, n)
    cfg = CFG.with_overrides({"graph": {"hops": hops}})
    got = np.asarray(sources.graph_scores(state, users, cfg))
    g = cfg.graph
    for u in range(n):
        want = reference.graph(
            users.recent_items[u, : g.recent_items],
            users.recent_weights[u, : g.recent_items],
            state.graph_neighbours,
            state.graph_weights,
            hops,
            g.decay,
            g.frontier,
            g.seed_position_decay,
        )
        np.testing.assert_allclose(got[u], want, rtol=1e-4, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(seeds, sizes)
def test_sequential_matches_reference(seed, n):
    state = random_state(seed)
    users = random_users(seed, state, n)
    got = np.asarray(sources.sequential_scores(state, users, CFG))
    s = CFG.sequential
    for u in range(n):
        want = reference.sequential(
            users.recent_items[u, : s.recent_items],
            state.sequence_neighbours,
            state.sequence_weights,
            s.position_decay,
            got.shape[1],
        )
        np.testing.assert_allclose(got[u], want, rtol=1e-4, atol=1e-5)


@settings(max_examples=15, deadline=None)
@given(seeds, sizes)
def test_transformer_matches_reference(seed, n):
    """Each viewer's window built by hand (latest max_len engaged items the network knows,
    oldest first, left-padded) and run through the network alone; items added after the
    network score the row's lowest logit."""
    state = random_state(seed)
    users = random_users(seed, state, n)
    got = np.asarray(sources.transformer_scores(state, users, CFG))
    known = state.transformer["params"]["items"]["embedding"].shape[0] - 1
    for u in range(n):
        want = reference.transformer(
            users.recent_items[u],
            known,
            got.shape[1],
            lambda window: np.asarray(
                next_item_logits(state.transformer, jnp.asarray(window)[None], network_shape(CFG))
            )[0],
            CFG.transformer.max_len,
        )
        np.testing.assert_allclose(got[u], want, rtol=1e-4, atol=1e-4)


def test_a_model_without_a_transformer_leaves_the_source_silent():
    state = random_state(3)._replace(transformer={})
    users = random_users(3, state, 4)
    assert not np.asarray(retrieval.active_retrieved(state, users))[:, fusion.TRANSFORMER].any()
    assert np.all(np.asarray(sources.transformer_scores(state, users, CFG)) == 0.0)
    with_network = np.asarray(retrieval.active_retrieved(random_state(3), users))
    np.testing.assert_array_equal(
        with_network[:, fusion.TRANSFORMER], np.asarray(users.recent_items)[:, 0] >= 0
    )


@settings(max_examples=25, deadline=None)
@given(seeds, sizes)
def test_sequence_origin_matches_reference(seed, n):
    """What a sequential recommendation cites: the recent item passing it the most mass."""
    state = random_state(seed)
    users = random_users(seed, state, n)
    n_items = state.sequence_neighbours.shape[0]
    items = np.random.default_rng(seed).integers(0, n_items, size=(n, 12)).astype(np.int32)
    got = np.asarray(sources.sequence_origin(state, users, jnp.asarray(items), CFG))
    s = CFG.sequential
    for u in range(n):
        for j, item in enumerate(items[u]):
            want = reference.sequence_origin(
                users.recent_items[u, : s.recent_items],
                np.asarray(state.sequence_neighbours),
                np.asarray(state.sequence_weights),
                s.position_decay,
                item,
            )
            assert got[u, j] == want, (u, j)


@settings(max_examples=15, deadline=None)
@given(seeds, sizes)
def test_dense_first_hop_walks_every_edge(seed, n):
    """A model that kept the full matrix (graph.first_hop = "dense" at training) walks hop 1
    over it (negative edges included): equal to the walk over adjacency lists that hold every
    item."""
    state = random_state(seed)
    n_items = state.graph_neighbours.shape[0]
    dense = np.random.default_rng(seed).normal(size=(n_items, n_items)).astype(np.float32)
    np.fill_diagonal(dense, 0.0)
    state = state._replace(graph_dense=dense)
    users = random_users(seed, state, n)
    cfg = CFG.with_overrides({"graph": {"hops": 1, "first_hop": "dense"}})
    got = np.asarray(sources.graph_scores(state, users, cfg))
    every = np.tile(np.arange(n_items, dtype=np.int32), (n_items, 1))
    g = cfg.graph
    for u in range(n):
        want = reference.graph(
            users.recent_items[u, : g.recent_items],
            users.recent_weights[u, : g.recent_items],
            every,
            dense,
            1,
            g.decay,
            g.frontier,
            g.seed_position_decay,
        )
        np.testing.assert_allclose(got[u], want, rtol=1e-4, atol=1e-4)
    without = state._replace(graph_dense=np.zeros((0, 0), np.float32))
    sparse = np.asarray(sources.graph_scores(without, users, cfg))
    assert not np.allclose(got, sparse)  # the walk follows what the model kept


def test_build_graph_keeps_the_dense_matrix_only_when_asked_and_small():
    from sona_jax.model.tables import build_graph
    from sona_lab.datasets import load_dataset

    data = load_dataset("synthetic", n_users=120, n_items=60, seed=3)
    weights = np.ones(len(data.events), np.float32)
    cfg = SonaConfig().with_overrides({"graph": {"neighbours": 5, "first_hop": "dense"}})
    graph = build_graph(data.events, weights, data.n_users, data.n_items, cfg)
    assert graph.dense.shape == (60, 60) and np.all(np.diag(graph.dense) == 0)
    for item in range(60):  # the lists are each row's strongest positive edges
        kept = graph.weights[item] > 0
        strongest = np.sort(graph.dense[item][graph.dense[item] > 0])[::-1][: kept.sum()]
        np.testing.assert_allclose(np.sort(graph.weights[item][kept])[::-1], strongest, rtol=1e-6)
    for other in ({"max_dense_items": 59}, {"first_hop": "sparse"}):
        graph = build_graph(
            data.events, weights, data.n_users, data.n_items, cfg.with_overrides({"graph": other})
        )
        assert graph.dense.shape == (0, 0)


@settings(max_examples=20, deadline=None)
@given(seeds, sizes)
def test_content_is_the_lora_score(seed, n):
    state = random_state(seed)
    users = random_users(seed, state, n)
    got = np.asarray(sources.content_scores(state, users, CFG))
    e, w, a = (
        np.asarray(x)
        for x in (state.base.item_embeddings, state.base.projection, state.base.factor)
    )
    for u in range(n):
        for i in (0, 5, 17):
            z = lora_reference.logit(
                users.preference[u],
                w,
                users.adapter[u],
                a,
                e[i],
                float(state.base.bias),
                CFG.lora.scale,
            )
            np.testing.assert_allclose(got[u, i], 1 / (1 + np.exp(-z)), rtol=1e-4)


def _context_reference(state, users, request, u, cfg):
    tod, device, mood = request.time_of_day[u], request.device[u], request.mood[u]
    if tod < 0 and device < 0 and mood < 0:
        return np.zeros(len(state.global_share))
    share = state.global_share
    genre_share = state.item_genres / np.maximum(state.item_genres.sum(1, keepdims=True), 1)
    score = np.log(users.hourly[u] @ state.hour_share.T * 24.0)
    if tod >= 0:
        score = score + np.log(state.by_time_of_day[tod]) - np.log(share)
    if device >= 0:
        fit = np.full(len(share), 0.5)
        known = state.duration >= 0
        if device == 0:
            fit = np.where(known, (state.duration >= cfg.context.tv_min_minutes) * 1.0, 0.5)
        elif device == 1:
            fit = np.where(known, (state.duration <= cfg.context.mobile_max_minutes) * 1.0, 0.5)
        score = score + np.log(state.by_device[device]) - np.log(share) + fit
    if mood >= 0:
        score = score + genre_share @ state.mood_prior[mood] + state.item_moods[:, mood]
    return score


@settings(max_examples=25, deadline=None)
@given(seeds, sizes)
def test_context_matches_reference(seed, n):
    state = random_state(seed)
    users = random_users(seed, state, n)
    request = random_requests(seed, n)
    got = np.asarray(sources.context_scores(state, users, request, CFG))
    for u in range(n):
        np.testing.assert_allclose(
            got[u], _context_reference(state, users, request, u, CFG), rtol=1e-4, atol=1e-4
        )


@settings(max_examples=25, deadline=None)
@given(seeds, sizes)
def test_fusion_matches_reference(seed, n):
    state = random_state(seed)
    users = random_users(seed, state, n)
    request = random_requests(seed, n)
    rng = np.random.default_rng(seed)
    weights = rng.random(fusion.N_SOURCES).astype(np.float32) + 0.01
    # the learned fusion's per-viewer gates (history, context); closed on odd seeds
    gates = rng.uniform(-1, 1, (2, fusion.N_SOURCES)).astype(np.float32) * (seed % 2 == 0)
    scores = catalogue_scores(state, users, request)
    mask = jnp.asarray(np.random.default_rng(seed + 1).random((n, 30)) < 0.6)
    matrix = jnp.asarray(np.concatenate([weights[None], gates]))
    blend = fusion.fit_blend(scores, mask, matrix, users.qualifying, request.cold_start)
    blended, _ = fusion.blended(blend, scores.raw, scores.cold, mask)
    mask = np.asarray(mask)
    blended = np.asarray(blended)
    raw, cold, active = (np.asarray(x) for x in scores)
    for u in range(n):
        q = users.qualifying[u]
        # this request's own cold-start settings (an experiment variant's)
        settings = dict(zip(fusion.COLD_START_SETTINGS, request.cold_start[u], strict=True))
        history = np.log1p(q) / np.log1p(settings["blend_events"])
        context = fusion.CONTEXT
        viewer = weights * np.exp(gates[0] * history + gates[1] * active[u, context])
        w = viewer * active[u]
        normed = [reference.minmax(raw[u, s], mask[u]) for s in range(fusion.N_SOURCES)]
        beta = (
            0.0
            if q < settings["min_events"] or w.sum() == 0
            else min(1.0, q / settings["blend_events"])
        )
        fused = sum(w[s] * normed[s] for s in range(fusion.N_SOURCES)) / max(w.sum(), 1e-30)
        cw = viewer[context] * active[u, context]
        cold_mix = (reference.minmax(cold[u], mask[u]) + cw * normed[context]) / (1 + cw)
        want = beta * fused + (1 - beta) * cold_mix
        np.testing.assert_allclose(blended[u][mask[u]], want[mask[u]], rtol=1e-4, atol=1e-5)
        assert np.all(np.isneginf(blended[u][~mask[u]]))


@settings(max_examples=40, deadline=None)
@given(seeds, st.integers(2, 12), st.floats(0, 1), st.integers(1, 12))
def test_mmr_matches_greedy_reference(seed, n, lam, n_select):
    rng = np.random.default_rng(seed)
    relevance = np.sort(rng.random(n))[::-1].astype(np.float32)
    vectors = rng.standard_normal((n, 4)).astype(np.float32)
    valid = rng.random(n) < 0.85
    got = np.asarray(
        mmr.mmr_select(
            relevance[None], vectors[None], valid[None], jnp.array([lam], jnp.float32), n_select
        )
    )[0]
    assert list(got) == reference.mmr(relevance, vectors, valid, lam, n_select)


def test_mmr_extremes_and_ties():
    rng = np.random.default_rng(0)
    relevance = np.linspace(1, 0.1, 8).astype(np.float32)
    vectors = rng.standard_normal((8, 5)).astype(np.float32)
    valid = np.ones(8, bool)

    def pick(lam, rel=relevance, vec=vectors):
        return list(
            np.asarray(mmr.mmr_select(rel[None], vec[None], valid[None], jnp.array([lam]), 8))[0]
        )

    assert pick(1.0) == list(range(8))  # λ = 1: the plain ranking
    spread = pick(0.0)  # λ = 0: each next pick is the least similar to those picked
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    for step in range(1, 8):
        picked = spread[:step]
        rest = [i for i in range(8) if i not in picked]
        worst = {i: max(unit[i] @ unit[j] for j in picked) for i in rest}
        assert worst[spread[step]] == pytest.approx(min(worst.values()), abs=1e-5)
    same = np.ones(8, np.float32)
    assert pick(0.5, rel=same, vec=np.ones((8, 5), np.float32)) == list(range(8))  # ties: order


def _recommend(state, users, request, n_out=6, weights=None, cfg=CFG):
    weights = fusion.fusion_weights(cfg) if weights is None else weights
    limit = np.full(len(users.qualifying), n_out, np.int32)
    return recommend.recommend(state, users, request, limit, weights, cfg, n_out)


@settings(max_examples=20, deadline=None)
@given(seeds, sizes)
def test_excluded_items_never_recommended_and_explanations_are_real(seed, n):
    state = random_state(seed)
    users = random_users(seed, state, n)
    request = random_requests(seed, n)
    result = _recommend(state, users, request)
    items, kind, based_on = (np.asarray(x) for x in (result.items, result.kind, result.based_on))
    for u in range(n):
        shown = set(items[u][items[u] >= 0])
        assert not shown & set(users.dismissed[u][users.dismissed[u] >= 0])
        if request.exclude_watched[u]:
            assert not shown & set(users.seen[u][users.seen[u] >= 0])
        assert len(shown) == (items[u] >= 0).sum()  # no duplicates
        history = set(users.recent_items[u][users.recent_items[u] >= 0])
        for item, k, b in zip(items[u], kind[u], based_on[u], strict=True):
            if item < 0:
                continue
            assert 0 <= k < len(fusion.KIND_NAMES)
            assert b == -1 or b in history


@settings(max_examples=10, deadline=None)
@given(seeds, sizes)
def test_full_diversity_still_starts_with_the_most_relevant_item(seed, n):
    """λ = 0 makes every first choice a tie; the pool is ordered by relevance, so the list
    starts where the plain ranking (λ = 1) does."""
    state = random_state(seed)
    users = random_users(seed, state, n)
    request = random_requests(seed, n)
    plain = _recommend(state, users, request._replace(mmr_lambda=np.ones(n, np.float32)))
    spread = _recommend(state, users, request._replace(mmr_lambda=np.zeros(n, np.float32)))
    np.testing.assert_array_equal(np.asarray(plain.items)[:, 0], np.asarray(spread.items)[:, 0])


def test_cold_start_blending_and_exploration():
    q = jnp.array([0.0, 2.0, 3.0, 10.0, 20.0, 40.0])
    row = jnp.asarray(fusion.cold_start_row(CFG))
    np.testing.assert_allclose(np.asarray(fusion.blend_weight(q, row)), [0, 0, 0.15, 0.5, 1, 1])
    eps = np.asarray(fusion.exploration_share(q, row))
    np.testing.assert_allclose(
        eps[:4], np.maximum(0.05, 0.2 * 0.995 ** np.asarray(q[:4])), rtol=1e-5
    )
    assert eps[4] == eps[5] == 0.0


def test_third_event_changes_the_list_and_cold_users_get_cold_start():
    state = random_state(3, n_items=60)
    users = random_users(3, state, 2)
    request = random_requests(3, 2, with_context=False)._replace(
        mmr_lambda=np.ones(2, np.float32),
        cold_start=np.tile(fusion.cold_start_row(CFG), (2, 1)),  # 3 events, ε 0.2: CFG's
    )
    two = users._replace(qualifying=np.array([2.0, 2.0], np.float32))
    three = users._replace(qualifying=np.array([3.0, 3.0], np.float32))
    a, b = _recommend(state, two, request, 10), _recommend(state, three, request, 10)
    assert not np.array_equal(np.asarray(a.items), np.asarray(b.items))
    assert set(np.asarray(a.kind)[np.asarray(a.items) >= 0]) <= {
        fusion.COLD_START,
        fusion.EXPLORATION,
    }
    cold = random_users(4, state, 2, cold=True)
    wide = CFG.with_overrides({"candidates": {"per_source": 30}, "diversity": {"pool_size": 30}})
    result = _recommend(state, cold, request, 10, cfg=wide)
    kinds = np.asarray(result.kind)[np.asarray(result.items) >= 0]
    assert set(kinds.ravel()) <= {fusion.COLD_START, fusion.EXPLORATION}
    assert (kinds == fusion.EXPLORATION).sum() == 2 * round(0.2 * 10)
    assert np.all(np.asarray(result.based_on) == -1)


def _score(state, users, request, items, cfg=CFG):
    """`recommend.score_items` from the viewers' retrieved candidates, as the engine serves it."""
    candidates = retrieval.retrieve(state, users, np.ones(len(items), bool), cfg)
    kept = retrieval.KeptForScores(candidates.neighbours, candidates.content_span)
    return recommend.score_items(
        state, users, request, kept, items, fusion.fusion_weights(cfg), cfg
    )


def test_score_items_components():
    state = random_state(5)
    users = random_users(5, state, 3)
    users = users._replace(qualifying=np.full(3, 30.0, np.float32))
    request = random_requests(5, 3)
    items = np.array([[0, 1, 2], [3, 4, 5], [6, 7, -1]], np.int32)
    out = _score(state, users, request, items)
    score, comps = np.asarray(out.score), np.asarray(out.components)
    sources_, boost = fusion.N_SOURCES, fusion.N_SOURCES  # the boost follows the sources
    assert comps.shape == (3, 3, sources_ + 1)
    assert np.all((score >= 0) & (score <= 1)) and score[2, 2] == 0
    assert np.all((comps[..., :sources_] >= 0) & (comps[..., :sources_] <= 1))
    # The LoRA boost is the adapter's effect on the content score.
    no_adapter = users._replace(adapter=np.zeros_like(users.adapter))
    base_only = _score(state, no_adapter, request, items)
    np.testing.assert_allclose(np.asarray(base_only.components)[..., boost], 0.0, atol=1e-6)
    assert np.abs(comps[..., boost]).max() > 0


# Two batch sizes: every other size compiled both programs again (86 s of CI for 10 examples);
# the values vary with the seed, the shapes are other tests' subject.
@settings(max_examples=10, deadline=None)
@given(seeds, st.sampled_from((1, 4)))
def test_scores_from_candidates_equal_the_catalogue_wide_scores(seed, n):
    """What the kept candidates stand in for (nearest viewers, the content score's catalogue
    span) gives the scores of normalising every source over the whole catalogue."""
    state = random_state(seed)
    users = random_users(seed, state, n)
    request = random_requests(seed, n)
    n_items = state.item_valid.shape[0]
    items = np.random.default_rng(seed).integers(-1, n_items, (n, 7)).astype(np.int32)
    got = _score(state, users, request, items)
    scores = catalogue_scores(state, users, request)
    scorable = ~retrieval.unscorable_items(state, users)
    weights = fusion.fusion_weights(CFG)
    blend = fusion.fit_blend(scores, scorable, weights, users.qualifying, request.cold_start)
    relevance, _ = fusion.blended(blend, scores.raw, scores.cold, scorable)
    normalised = np.asarray(
        blend.sources(scores.raw, scorable[:, None, :]) * scores.active[..., None]
    )
    relevance, scorable = np.asarray(relevance), np.asarray(scorable)
    for u in range(n):
        for c, item in enumerate(items[u]):
            if item < 0 or not scorable[u, item]:
                assert got.score[u, c] == 0
                continue
            assert got.score[u, c] == pytest.approx(relevance[u, item], abs=1e-5)
            np.testing.assert_allclose(
                got.components[u, c, : fusion.N_SOURCES], normalised[u, :, item], atol=1e-5
            )
