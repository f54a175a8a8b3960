"""RP3beta and SASRec against plain references, and the tie order every split reads."""

import dataclasses

import jax
import numpy as np
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from sona_jax.data.schema import Dataset, EventLog
from sona_jax.eval import baselines, splits
from sona_jax.eval.sasrec import SASRec, SASRecSettings
from sona_jax.model.sequence_model import training_windows, user_sequences


def rp3beta_reference(x: np.ndarray, alpha: float, beta: float, neighbours: int) -> np.ndarray:
    """(items, items) item-to-item weights: the three-step walk written out with loops over
    users (dense numpy)."""
    n_users, n_items = x.shape
    user_degree, item_degree = x.sum(1), x.sum(0)
    walk = np.zeros((n_items, n_items))
    for i in range(n_items):
        for u in range(n_users):
            if x[u, i] and item_degree[i]:
                to_user = (1.0 / item_degree[i]) ** alpha
                walk[i] += to_user * (x[u] / user_degree[u]) ** alpha
    walk /= np.where(item_degree > 0, item_degree, 1.0) ** beta
    np.fill_diagonal(walk, 0.0)
    for i in range(n_items):
        kept = np.argsort(-walk[i], kind="stable")[:neighbours]
        row = np.zeros(n_items)
        row[kept] = walk[i, kept]
        walk[i] = row / row.sum() if row.sum() > 0 else row
    return walk


@settings(max_examples=25, deadline=None)
@given(
    st.integers(0, 2**31 - 1),
    st.sampled_from([0.5, 1.0]),
    st.sampled_from([0.0, 0.5]),
    st.integers(2, 12),
)
def test_rp3beta_matches_the_walk_written_out(seed, alpha, beta, neighbours):
    rng = np.random.default_rng(seed)
    x = (rng.random((9, 12)) < 0.3).astype(np.float32)
    model = baselines.RP3beta(alpha, beta, neighbours).fit(sp.csr_matrix(x))
    expected = rp3beta_reference(x.astype(np.float64), alpha, beta, neighbours)
    if neighbours >= 11:  # nothing cut: the same weights and the same scores
        np.testing.assert_allclose(model.weights, expected, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(model.scores(np.arange(9)), x @ expected, rtol=1e-4, atol=1e-5)
    else:  # equal weights at the cut may keep other items, never other values
        np.testing.assert_allclose(
            np.sort(model.weights, 1), np.sort(expected, 1), rtol=1e-4, atol=1e-6
        )


def test_training_windows_make_every_later_item_a_target_once():
    sequences = [np.arange(1, 8, dtype=np.int32), np.array([5], np.int32), np.array([3, 9])]
    inputs, targets = training_windows(sequences, max_len=3)
    flat_targets = sorted(targets[targets > 0].tolist())
    assert flat_targets == sorted([2, 3, 4, 5, 6, 7, 9])
    for row_in, row_out in zip(inputs, targets, strict=True):
        kept = row_out > 0
        assert (row_in[kept] > 0).all()
        # each input is the item just before its target in the same sequence
        for a, b in zip(row_in[kept], row_out[kept], strict=True):
            assert any(
                (s[:-1] == a).any() and s[list(s).index(a) + 1] == b
                for s in sequences
                if a in s[:-1]
            )


def test_sasrec_learns_a_sequence_that_always_moves_on_by_one():
    n_items, rng = 30, np.random.default_rng(0)
    sequences = []
    for _ in range(120):
        start = rng.integers(0, n_items)
        sequences.append(((start + np.arange(12)) % n_items + 1).astype(np.int32))
    config = SASRecSettings(dim=32, max_len=8, max_epochs=25, batch=64, dropout=0.0)
    model = SASRec(config, epochs=25).fit(sequences, n_items)
    top = np.argmax(model.scores(np.arange(len(sequences))), axis=1)
    expected = np.array([s[-1] % n_items for s in sequences])  # next item (0-based)
    assert (top == expected).mean() > 0.9


def test_user_sequences_follow_the_log_order():
    log = EventLog.build(
        user=[1, 0, 1, 0], item=[4, 2, 3, 1], timestamp=[5.0, 2.0, 1.0, 2.0], completion=[1.0] * 4
    )
    sequences = user_sequences(log, np.ones(4, bool), 3)
    assert [s.tolist() for s in sequences] == [[3, 2], [4, 5], []]


def _dataset_with_ties(seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    n_users, n_items = 40, 60
    user = np.repeat(np.arange(n_users), 6)
    item = np.concatenate([rng.choice(n_items, 6, replace=False) for _ in range(n_users)])
    timestamp = (user * 100 + np.tile([1, 2, 3, 7, 7, 7], n_users)).astype(float)
    log = EventLog.build(user=user, item=item, timestamp=timestamp, completion=np.ones(len(user)))
    from sona_jax.data.synthetic import generate_synthetic

    base = generate_synthetic(n_users=n_users, n_items=n_items, events_per_user=2, seed=seed)
    return dataclasses.replace(base, events=log)


def test_hashed_ties_do_not_depend_on_the_files_line_order():
    dataset = _dataset_with_ties(0)
    shuffled = dataclasses.replace(
        dataset,
        events=dataset.events.take(np.random.default_rng(1).permutation(len(dataset.events))),
    )

    def test_items(ds, rule, seed=0):
        ordered = splits.order_ties(ds, rule, seed)
        log = ordered.events
        split = splits.make_split("p1", log, np.ones(len(log), bool), ds.n_users, ds.n_items, 0)
        return split.test.toarray()

    np.testing.assert_array_equal(test_items(dataset, "hashed"), test_items(shuffled, "hashed"))
    assert (test_items(dataset, "file") != test_items(shuffled, "file")).any()
    # seeded random ties: the same seed gives the same test items, another seed others
    np.testing.assert_array_equal(
        test_items(dataset, "random", 3), test_items(dataset, "random", 3)
    )
    assert (test_items(dataset, "random", 3) != test_items(dataset, "random", 4)).any()
    # the test item is always one of the viewer's last-second events
    test = splits.order_ties(dataset, "hashed", 0)
    chosen = test_items(dataset, "hashed")
    for user in range(dataset.n_users):
        last_second = test.events.item[
            (test.events.user == user) & (test.events.timestamp % 100 == 7)
        ]
        assert chosen[user].nonzero()[0].tolist()[0] in last_second.tolist()


def test_sasrec_keeps_the_epochs_and_parameters_of_its_best_validation_check():
    sequences = [np.arange(1, 9, dtype=np.int32) for _ in range(10)]
    checks = iter([0.1, 0.3, 0.2, 0.15, 0.1, 0.05])  # best at the second check
    seen = []

    def validate(model):
        seen.append(jax.tree_util.tree_map(np.array, model.params))
        return next(checks)

    config = SASRecSettings(dim=8, max_len=4, max_epochs=12, eval_every=2, patience=3)
    model = SASRec(config).fit(sequences, 10, validate=validate)
    assert model.epochs == 4 and model.validation_ndcg == 0.3
    assert len(seen) == 5  # stopped after three checks without a better one
    for kept, best in zip(
        jax.tree_util.tree_leaves(model.params), jax.tree_util.tree_leaves(seen[1]), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(kept), best)


def test_sasrec_and_the_transformer_source_share_one_set_of_hyper_parameters():
    """The baseline's defaults are the source's (`TransformerConfig`), written once."""
    from sona_jax.config import TransformerConfig
    from sona_jax.eval.sasrec import SHARED_WITH_SOURCE

    source, baseline = TransformerConfig(), SASRecSettings()
    assert {n: getattr(baseline, n) for n in SHARED_WITH_SOURCE} == {
        n: getattr(source, n) for n in SHARED_WITH_SOURCE
    }
    assert set(SHARED_WITH_SOURCE) <= set(TransformerConfig.model_fields)
