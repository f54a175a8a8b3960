"""SPEC 4.2 in the engine: items added after a model version get deterministic rows, embeddings
from their metadata, a share of each fitting viewer's list; deletes are never served; capacity
grows in steps; popularity counts add up exactly."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from service.storage import CatalogueEntry, ContentRow
from sona_jax.config import SonaConfig
from sona_jax.data import generate_synthetic
from sona_jax.model import tables
from sona_jax.model.train import train_model
from sona_jax.serve import item_queries, viewers
from sona_jax.serve.batch import Query
from sona_jax.serve.catalogue import capacity_step, item_capacity
from sona_jax.serve.engine import ServingEngine
from sona_jax.serve.fusion import NEW_CONTENT

CFG = SonaConfig().with_overrides({"model": {"embedding_dim": 16}})


@pytest.fixture(scope="module")
def data():
    return generate_synthetic(n_users=80, n_items=120, events_per_user=15, seed=5)


@pytest.fixture(scope="module")
def engine(data):
    return ServingEngine.load(train_model(data, CFG), CFG).with_headroom()


def _copy_of(data, item: int, content_id: str, slot: int, revision: int) -> CatalogueEntry:
    """A new item with model item ``item``'s metadata."""
    cat = data.catalogue
    return CatalogueEntry(
        slot,
        ContentRow(
            content_id,
            f"{cat.titles[item]} (again)",
            [g for g, on in zip(cat.genre_names, cat.genres[item], strict=True) if on],
            float(cat.duration_minutes[item]),
            None,
            [m for m, on in zip(cat.mood_names, cat.moods[item], strict=True) if on],
        ),
        revision=revision,
    )


def _shapes(engine):
    return [x.shape for x in jax.tree_util.tree_leaves(engine.state)]


def test_new_items_get_the_same_rows_in_any_order_and_land_near_their_kind(data, engine):
    watermark = engine.slot_watermark
    entries = [_copy_of(data, i, f"new-{i}", watermark + 1 + i, 10 + i) for i in range(5)]
    forward, report = engine.with_catalogue(entries)
    backward, _ = engine.with_catalogue(entries[::-1])
    assert report.added == 5 and forward.items_added == 5
    n = engine.model.n_items
    assert [forward.item_index[f"new-{i}"] for i in range(5)] == list(range(n, n + 5))
    assert forward.item_index == backward.item_index and forward.revision == 14
    np.testing.assert_allclose(
        forward.state.base.item_embeddings, backward.state.base.item_embeddings, atol=1e-6
    )
    # The metadata map puts a copy near its original: closer than the typical item.
    e = np.asarray(forward.state.base.item_embeddings)
    near = [float(e[n + i] @ e[i]) for i in range(5)]
    typical = float(np.median(e[:n] @ e[:n].T))
    assert min(near) > typical + 0.2, (near, typical)
    h = np.asarray(forward.state.base.item_factors[n : n + 5])
    np.testing.assert_allclose(h, e[n : n + 5] @ np.asarray(forward.state.base.factor).T, atol=1e-5)
    assert _shapes(forward) == _shapes(engine)  # within the headroom: nothing recompiles


def test_capacity_grows_in_steps(data, engine):
    n = engine.model.n_items
    step = capacity_step(n, CFG.catalogue)
    assert engine.capacity % step == 0 and engine.capacity - n >= step  # room to spare
    inside, _ = engine.with_catalogue([_copy_of(data, 0, "in", engine.capacity - n, 1)])
    assert inside.capacity == engine.capacity  # the last free row: no new shape
    beyond = engine.capacity - n + 1 + engine.slot_watermark
    grown, _ = engine.with_catalogue([_copy_of(data, 0, "far", beyond, 1)])
    assert grown.item_index["far"] == engine.capacity
    assert grown.capacity % step == 0 and grown.capacity - (engine.capacity + 1) >= step
    assert bool(grown.item_valid[grown.item_index["far"]])
    assert int(grown.item_valid[n:].sum()) == 1
    # Two versions of nearly the same catalogue share a capacity: a swap compiles nothing.
    sizes = {item_capacity(m, m, m + 1, CFG.catalogue) for m in (1500, 1510, 1525)}
    assert len(sizes) == 1


def test_deleted_items_are_never_served_and_new_ones_get_their_share(data, engine):
    n = engine.model.n_items
    users = np.arange(40)
    before = engine.recommend_rows(users, _requests(engine, len(users)), 20)
    gone = np.unique(before.items[:, :3])
    deleted = [
        CatalogueEntry(0, ContentRow(engine.item_ids[i], ""), deleted=True, revision=1)
        for i in gone
    ]
    new = [_copy_of(data, i, f"new-{i}", engine.slot_watermark + 1 + i, 2) for i in range(10)]
    served, report = engine.with_catalogue(deleted + new)
    assert report.deleted == len(gone)
    after = served.recommend_rows(users, _requests(served, len(users)), 20)
    assert not np.isin(after.items, gone).any()
    offered = after.kinds == NEW_CONTENT
    assert offered.any() and (after.items[offered] >= n).all()
    # At most the configured share of each list, to viewers the item fits.
    share = round(CFG.catalogue.new_item_share * 20)
    assert (offered.sum(axis=1) <= share).all()
    prefs = engine.model.users.preference[users]
    rows, slots = np.nonzero(offered)
    fit = np.einsum(
        "nd,nd->n",
        prefs[rows],
        np.asarray(served.state.base.item_embeddings)[after.items[rows, slots]],
    )
    assert (fit >= CFG.catalogue.new_item_min_fit - 1e-5).all()
    for i in gone[:3]:
        similar, _ = item_queries.similar(
            served, int(served.item_index[engine.item_ids[n - 1]]), 200
        )
        assert i not in similar
    restored, _ = served.with_catalogue(
        [CatalogueEntry(0, ContentRow(engine.item_ids[gone[0]], ""), revision=3)]
    )
    assert bool(restored.item_valid[gone[0]]) and engine.item_ids[gone[0]] in restored.item_index


def test_a_cold_viewer_gets_no_new_content_slots(engine):
    fresh, _ = engine.with_catalogue(
        [
            CatalogueEntry(
                engine.slot_watermark + 1, ContentRow("lonely", "Lonely", ["Drama"]), revision=1
            )
        ]
    )
    empty = viewers.empty_profile(fresh)
    lists, _ = fresh.recommend_queries([Query(empty, 20, True, 0.7)])
    assert not (lists.kinds == NEW_CONTENT).any()


def _requests(engine, n):
    from sona_jax.serve.batch import request_rows

    return request_rows(n, engine.cfg.diversity.mmr_lambda, engine.host_cold_start)


def test_popularity_counts_add_up(data):
    log = data.events
    now = float(log.timestamp.max())
    then = float(np.median(log.timestamp))  # the model's time: later events arrived since
    earlier = log.timestamp <= then
    whole = tables.popularity_counts(log, data.n_items, now, CFG)
    first = tables.popularity_counts(log.take(earlier), data.n_items, then, CFG)
    both = tables.add_events(first, log.take(~earlier), now, CFG)
    for name, a, b in zip(whole._fields, whole, both, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9, err_msg=name)
    expected = tables.build_popularity(log, data.n_items, now, CFG)
    for a, b in zip(expected, tables.popularity_tables(both, CFG), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5)
    # Deleted items get no share; the rest still sum to one.
    valid = np.ones(data.n_items, bool)
    valid[:10] = False
    masked = tables.popularity_tables(both, CFG, valid)
    assert masked.global_share[:10].sum() == 0 and masked.trending[:10].sum() == 0
    assert masked.global_share.sum() == pytest.approx(1.0, abs=1e-5)


def test_model_format_round_trips_the_new_parts(tmp_path, engine):
    from sona_lab.model_store import load_model, save_model

    save_model(engine.model, tmp_path)
    loaded = load_model(tmp_path)
    np.testing.assert_array_equal(loaded.metadata_map, engine.model.metadata_map)
    for a, b in zip(loaded.popularity, engine.model.popularity, strict=True):
        np.testing.assert_array_equal(a, b)
    assert dataclasses.is_dataclass(loaded)
