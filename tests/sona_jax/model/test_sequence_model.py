"""The transformer source's network: trained by `train_model`, stored with the version, and
served from the viewer's recent engaged items."""

import numpy as np

from sona_jax.data.schema import EventLog
from sona_jax.eval.ranking import ranked_lists
from sona_jax.model import sequence_model
from sona_jax.model.train import fit_transformer, train_model
from sona_jax.serve.engine import ServingEngine
from sona_jax.serve.fusion import KIND_NAMES, TRANSFORMER
from sona_lab.model_store import load_model, save_model

NETWORK = {"epochs": 2, "dim": 16, "blocks": 1, "max_len": 8}


def test_no_epochs_trains_no_network(synthetic_small, small_config):
    assert fit_transformer(synthetic_small, small_config) == {}


def test_the_network_is_saved_and_served_from_a_loaded_version(
    tmp_path, synthetic_small, small_config
):
    cfg = small_config.with_overrides({"transformer": NETWORK, "fusion": {"transformer": 1.0}})
    model = train_model(synthetic_small, cfg)
    embedding = model.transformer["params.items.embedding"]
    assert embedding.shape == (synthetic_small.n_items + 1, NETWORK["dim"])
    save_model(model, tmp_path)
    loaded = load_model(tmp_path)
    assert set(loaded.transformer) == set(model.transformer)
    for name, value in model.transformer.items():
        np.testing.assert_array_equal(loaded.transformer[name], value)
    # the transformer alone: every list item with a history is the transformer's
    alone = cfg.with_overrides(
        {
            "fusion": {
                "collaborative": 0.0,
                "content_based": 0.0,
                "graph_based": 0.0,
                "context": 0.0,
                "transformer": 1.0,
            }
        }
    )
    lists = ranked_lists(ServingEngine.load(loaded, alone), np.arange(20), k=6)
    kinds = lists.kinds[lists.items >= 0]
    assert np.mean(kinds == TRANSFORMER) > 0.5, [KIND_NAMES[k] for k in kinds]


def test_a_sequence_that_always_moves_on_by_one_is_learned(small_config):
    """Every viewer watches items in a cycle; after training, the next item of each viewer's
    latest window is the network's top item."""
    n_items, n_users, length = 12, 40, 20
    rng = np.random.default_rng(0)
    starts = rng.integers(0, n_items, n_users)
    user = np.repeat(np.arange(n_users), length)
    item = (starts[:, None] + np.arange(length)[None, :]).ravel() % n_items
    timestamp = np.tile(np.arange(length, dtype=np.float64), n_users) * 60.0
    sequences = sequence_model.user_sequences(
        EventLog.build(user, item, timestamp, np.ones(len(user))),
        np.ones(len(user), bool),
        n_users,
    )
    shape = sequence_model.NetworkShape(dim=32, blocks=1, heads=1, max_len=8, dropout=0.0)
    params = sequence_model.fit(
        sequences, n_items, shape, sequence_model.TrainingSettings(1e-2, 64, 0), 30
    )
    recent = np.stack([s[::-1][:10] - 1 for s in sequences])  # newest first, item indices
    windows = sequence_model.recent_windows(recent, n_items, shape.max_len)
    logits = np.asarray(
        sequence_model.next_item_logits(
            sequence_model.nested_params(sequence_model.flat_params(params)), windows, shape
        )
    )
    want = (recent[:, 0] + 1) % n_items
    assert (logits.argmax(axis=1) == want).mean() > 0.9


def test_windows_skip_items_the_network_does_not_know():
    """Items added after training (index >= the network's items) are left out of the window,
    so the latest known items still end it; -1 is padding."""
    n_items = 10
    recent = np.array(
        [
            [12, 3, 11, 4, 5, -1],  # newest first; 12 and 11 unknown
            [11, 12, -1, -1, -1, -1],  # nothing known: all padding
            [1, 2, 3, 4, 5, 6],  # more than the window holds: the latest 4
        ]
    )
    windows = np.asarray(sequence_model.recent_windows(recent, n_items, 4))
    padding = sequence_model.PADDING
    # network ids are item index + 1, oldest first, left-padded
    np.testing.assert_array_equal(windows[0], [padding, 6, 5, 4])
    np.testing.assert_array_equal(windows[1], [padding] * 4)
    np.testing.assert_array_equal(windows[2], [5, 4, 3, 2])
