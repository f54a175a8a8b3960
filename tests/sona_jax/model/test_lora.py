"""SPEC 3.2: folding, zero adapters, gradients, training, bucketing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sona_jax.buckets import USER_BUCKETS, bucket, pad_rows
from sona_jax.config import LoraConfig, SonaConfig
from sona_jax.model import lora
from sona_jax.model.train import train_model
from sona_jax.model.training_data import event_targets, recent_events, with_negatives
from tests.sona_jax.model import reference

DIM, RANK, ITEMS = 16, 4, 30
SCALE = 16.0 / RANK


def _base(seed=0) -> lora.BaseTier:
    rng = np.random.default_rng(seed)
    embeddings = rng.standard_normal((ITEMS, DIM)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    projection = (3.0 * np.eye(DIM) + 0.1 * rng.standard_normal((DIM, DIM))).astype(np.float32)
    factor = np.linalg.qr(rng.standard_normal((DIM, RANK)))[0].T.astype(np.float32)
    return lora.make_base_tier(embeddings, projection, -1.0, factor)


def _users(n, seed=1):
    rng = np.random.default_rng(seed)
    p = rng.standard_normal((n, DIM)).astype(np.float32)
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    b = 0.3 * rng.standard_normal((n, DIM, RANK)).astype(np.float32)
    return p, b


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.integers(1, 10), st.integers(0, 1000))
def test_batched_scores_match_per_user_numpy(n_users, n_candidates, seed):
    base = _base()
    p, b = _users(n_users, seed)
    candidates = np.random.default_rng(seed).integers(0, ITEMS, (n_users, n_candidates))
    got = np.asarray(
        lora.personalised_scores(
            base, jnp.asarray(p), jnp.asarray(b), jnp.asarray(candidates), SCALE
        )
    )
    E, W, A = (np.asarray(x) for x in (base.item_embeddings, base.projection, base.factor))
    for u in range(n_users):
        for c, item in enumerate(candidates[u]):
            z = reference.logit(p[u], W, b[u], A, E[item], float(base.bias), SCALE)
            np.testing.assert_allclose(got[u, c], 1 / (1 + np.exp(-z)), rtol=1e-4, atol=1e-5)


def test_zero_adapter_leaves_scores_unchanged():
    base = _base()
    p, _ = _users(5)
    zero = lora.zero_adapters(5, DIM, RANK)
    queries = lora.fold_queries(base, jnp.asarray(p), zero, SCALE)
    np.testing.assert_allclose(np.asarray(queries), p @ np.asarray(base.projection), atol=1e-5)
    with_zero = lora.catalogue_logits(base, queries)
    plain = jnp.asarray(p) @ base.projection @ base.item_embeddings.T + base.bias
    np.testing.assert_allclose(np.asarray(with_zero), np.asarray(plain), atol=1e-4)


def test_folded_scoring_equals_unfolded_formula():
    base = _base()
    p, b = _users(3)
    queries = lora.fold_queries(base, jnp.asarray(p), jnp.asarray(b), SCALE)
    logits = np.asarray(lora.catalogue_logits(base, queries))
    for u in range(3):
        for item in (0, 7, ITEMS - 1):
            want = float(
                lora.unfolded_logit(base, jnp.asarray(p[u]), jnp.asarray(b[u]), item, SCALE)
            )
            np.testing.assert_allclose(logits[u, item], want, rtol=1e-4, atol=1e-4)


def _training_rows(n_users, length, seed=3):
    rng = np.random.default_rng(seed)
    items = rng.integers(0, ITEMS, (n_users, length))
    targets = rng.random((n_users, length)).round(1).astype(np.float32)
    mask = (rng.random((n_users, length)) < 0.8).astype(np.float32)
    return items, targets, mask


def test_rank_one_gradient_matches_jax_grad_of_reference_loss():
    base = _base()
    p, b = _users(4)
    items, targets, mask = _training_rows(4, 9)
    batch = lora.prepare_training_batch(base, *map(jnp.asarray, (p, b, items, targets, mask)))
    E, W, A = base.item_embeddings, base.projection, base.factor

    def reference_loss(adapter, u):
        z = jnp.asarray(p[u]) @ (W + SCALE * adapter @ A) @ E[items[u]].T + base.bias
        losses = jnp.maximum(z, 0) - z * targets[u] + jnp.log1p(jnp.exp(-jnp.abs(z)))
        return jnp.sum(losses * mask[u]) / jnp.maximum(mask[u].sum(), 1.0)

    for u in range(4):
        want = jax.grad(reference_loss)(jnp.asarray(b[u]), u)
        got = lora.adapter_gradient(
            batch.preference[u],
            jnp.asarray(b[u]),
            batch.item_factors[u],
            batch.base_logits[u],
            batch.targets[u],
            batch.mask[u],
            SCALE,
        )
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-6)
        # and the loss itself equals the per-event numpy loss
        numpy_loss = reference.bce_loss(
            b[u],
            p[u],
            np.asarray(W),
            np.asarray(A),
            np.asarray(E),
            float(base.bias),
            items[u],
            targets[u],
            mask[u],
            SCALE,
        )
        np.testing.assert_allclose(
            float(reference_loss(jnp.asarray(b[u]), u)), numpy_loss, rtol=1e-4
        )


@pytest.mark.parametrize("users_per_step", [64, 2, 1])  # one vmap; 3 steps of 2; 6 of 1
def test_vmapped_training_equals_per_user_training_and_lowers_loss(users_per_step):
    base = _base()
    p, b = _users(6)
    items, targets, mask = _training_rows(6, 12)
    cfg = LoraConfig(rank=RANK, users_per_step=users_per_step)
    assert lora.training_steps(6, users_per_step) == {64: 1, 2: 3, 1: 6}[users_per_step]
    batch = lora.prepare_training_batch(base, *map(jnp.asarray, (p, b, items, targets, mask)))
    np.testing.assert_allclose(
        np.asarray(batch.user_factor), np.einsum("udr,ud->ur", b, p), atol=1e-5
    )
    result = lora.train_adapters(batch, cfg)
    train_user = jax.jit(lora.make_adapter_trainer(cfg))
    for u in range(6):
        single = train_user(*(x[u] for x in batch))
        np.testing.assert_allclose(
            np.asarray(result.delta[u]), np.asarray(single[0]), rtol=1e-4, atol=1e-6
        )
    assert np.all(np.asarray(result.loss_after) < np.asarray(result.loss_before))
    # Only B_u moves, along p_u: B_uᵀp_u moves by exactly delta and the loss of the new B_u,
    # computed from full embeddings, is the trained loss.
    new_b = np.asarray(lora.apply_adapter_updates(jnp.asarray(b), jnp.asarray(p), result.delta))
    moved = np.einsum("udr,ud->ur", new_b - b, p)
    np.testing.assert_allclose(moved, np.asarray(result.delta), atol=1e-5)
    E, W, A = (np.asarray(x) for x in (base.item_embeddings, base.projection, base.factor))
    for u in range(6):
        full = reference.bce_loss(
            new_b[u], p[u], W, A, E, float(base.bias), items[u], targets[u], mask[u], SCALE
        )
        np.testing.assert_allclose(full, float(result.loss_after[u]), rtol=1e-4)


def test_training_lowers_held_out_bce_for_most_synthetic_users(synthetic_small, small_config):
    """Train adapters on each user's older events; score the newest 5 events plus negatives."""
    data = synthetic_small
    log = data.events
    cfg = small_config
    newest_first = np.lexsort((-log.timestamp, log.user))
    counts = np.bincount(log.user, minlength=data.n_users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank_in_user = np.empty(len(log), np.int64)
    rank_in_user[newest_first] = np.arange(len(log)) - starts[log.user[newest_first]]
    held_out = rank_in_user < 5
    train_data = type(data)(data.name, data.catalogue, data.user_ids, log.take(~held_out))
    model = train_model(train_data, cfg)

    test_log = log.take(held_out)
    users = np.arange(data.n_users)
    targets = event_targets(
        test_log.completion, test_log.rating, test_log.dismissed, cfg.preference
    )
    recent = recent_events(test_log.user, test_log.item, test_log.timestamp, targets, users, 5)
    items, y, mask = with_negatives(
        jax.random.PRNGKey(7),
        recent,
        data.n_items,
        cfg.lora.model_copy(update={"negatives_per_user": 5}),
    )
    base = lora.BaseTier(*(jnp.asarray(x) for x in model.base))

    def held_out_loss(adapters):
        batch = lora.prepare_training_batch(
            base,
            jnp.asarray(model.users.preference),
            jnp.asarray(adapters, jnp.float32),
            items,
            y,
            mask,
        )
        logits = jax.vmap(lora.adapter_logits, in_axes=(0, 0, 0, None))(
            batch.user_factor, batch.item_factors, batch.base_logits, cfg.lora.scale
        )
        return np.asarray(jax.vmap(lora.masked_bce)(logits, batch.targets, batch.mask))

    before = held_out_loss(np.zeros_like(model.users.adapter))
    after = held_out_loss(model.users.adapter)
    trained = model.users.interaction_count >= cfg.lora.min_events
    fraction = float((after[trained] < before[trained]).mean())
    print(
        f"held-out BCE lowered for {fraction:.2%} of {trained.sum()} trained users; "
        f"mean {before[trained].mean():.4f} -> {after[trained].mean():.4f}"
    )
    assert fraction >= 0.6
    assert after[trained].mean() < before[trained].mean()


def test_stream_of_batch_sizes_compiles_once_per_bucket():
    base = _base()
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda name, *_, **__: (
            compiles.append(name) if name == "/jax/core/compile/backend_compile_duration" else None
        )
    )
    sizes = [1, 3, 2, 5, 7, 8, 1, 17, 33, 100, 128, 64, 9, 3, 120]
    rng = np.random.default_rng(0)
    # Inputs built and padded with numpy, so the only JAX compiles are the scoring program's.
    prepared = []
    for n in sizes:
        p, b = _users(n, seed=n)
        size = bucket(n, USER_BUCKETS)
        prepared.append(
            (
                n,
                pad_rows(p, size),
                pad_rows(b, size),
                pad_rows(rng.integers(0, ITEMS, (n, 10)).astype(np.int32), size),
            )
        )
    jax.block_until_ready(base)
    cached_before = lora.personalised_scores._cache_size()
    compiles.clear()
    for n, p, b, c in prepared:
        out = lora.personalised_scores(base, p, b, c, SCALE)
        assert out.shape == (bucket(n, USER_BUCKETS), 10)
    buckets_used = {bucket(n, USER_BUCKETS) for n in sizes}
    assert len(compiles) <= len(buckets_used)
    assert lora.personalised_scores._cache_size() - cached_before <= len(buckets_used)
    assert len(compiles) >= 1  # the counter does see compilations


def test_pipeline_report_and_storage_bar(synthetic_small):
    model = train_model(synthetic_small, SonaConfig())
    assert model.users.stored_bytes_per_user() <= 10 * 1024
    assert model.report["users_trained"] == int((model.users.interaction_count >= 10).sum())
    assert np.all(np.isfinite(model.users.preference))
    assert model.users.adapter.dtype == np.float16
