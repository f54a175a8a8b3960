"""SPEC 4.2: catalogue writes served at once — items added after a model version get rows of
the served arrays, deleted items stop being servable.

The item arrays of a `ServingState` have a *capacity*: the model's items, then rows for items
added since, grown in steps (`item_capacity`) so that adding items changes a shape (and
compiles new programs) once per step, not once per item. ``item_valid`` says which rows may be
served. A new item's row holds its embedding (supplied, or mapped from its metadata through the
model's map, `sona_jax.model.metadata`), its adapter projection ``h = A e`` and its diversity
vector; it has no graph edges and counts no events until some arrive.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sona_jax.buckets import size_step, stepped
from sona_jax.config import CatalogueConfig
from sona_jax.data.schema import Catalogue
from sona_jax.data.stored import StoredChange, catalogue
from sona_jax.model import metadata
from sona_jax.model.tables import Popularity
from sona_jax.model.version import TrainedModel
from sona_jax.serve.state import ServingState, diversity_vectors

HOURS = 24


class NewItemRows(NamedTuple):
    """What is written for n new items: rows (n,) int; embeddings (n, d) unit; genres (n, G);
    moods (n, 6); duration (n,) minutes, release_year (n,) (both -1 unknown); series (n,) keys
    (-1 none)."""

    rows: np.ndarray
    embeddings: np.ndarray
    genres: np.ndarray
    moods: np.ndarray
    duration: np.ndarray
    release_year: np.ndarray
    series: np.ndarray


def capacity_step(n_model: int, cfg: CatalogueConfig) -> int:
    """Rows capacities are rounded to (`buckets.size_step` of the model's catalogue)."""
    return size_step(n_model, cfg.capacity_growth, cfg.capacity_min_step)


def initial_capacity(n_model: int, cfg: CatalogueConfig) -> int:
    """Rows a freshly loaded model's item arrays get: its items and at least one step to
    spare, in whole steps, so the first writes change no shape and two versions of nearly the
    same catalogue get the same capacity (a swap compiles nothing)."""
    step = capacity_step(n_model, cfg)
    return stepped(n_model + 1 + step, cfg.capacity_growth, cfg.capacity_min_step)


def grown_capacity(rows_needed: int, n_model: int, cfg: CatalogueConfig) -> int:
    """Rows full item arrays grow to so that they hold ``rows_needed``: that many and
    ``capacity_headroom`` more, in whole steps. Geometric, so a catalogue that grows tenfold
    changes shape a handful of times (about six at the default 0.5), never once per step."""
    wanted = int(np.ceil(rows_needed * (1.0 + cfg.capacity_headroom)))
    at_least = rows_needed + capacity_step(n_model, cfg)
    return stepped(max(wanted, at_least), cfg.capacity_growth, cfg.capacity_min_step)


def item_capacity(current: int, n_model: int, rows_needed: int, cfg: CatalogueConfig) -> int:
    """Rows the item arrays need to hold ``rows_needed``: ``current`` when that is enough, else
    `grown_capacity`."""
    if rows_needed <= current:
        return current
    return grown_capacity(rows_needed, n_model, cfg)


def new_item_rows(
    rows: np.ndarray, items: Catalogue, metadata_map: np.ndarray, cfg: CatalogueConfig
) -> NewItemRows:
    """Rows for ``items`` (a catalogue in the model's genre names and `MOODS` order): supplied
    embeddings where given, else mapped from the metadata."""
    meta = metadata.catalogue_metadata(items)
    embeddings = metadata.mapped_embeddings(metadata.metadata_features(meta, cfg), metadata_map)
    if items.embeddings is not None:
        given = items.embeddings / np.maximum(
            np.linalg.norm(items.embeddings, axis=1, keepdims=True), 1e-12
        )
        embeddings = np.where(items.has_embedding[:, None], given, embeddings)
    return NewItemRows(
        np.asarray(rows, np.int64),
        embeddings.astype(np.float32),
        meta.genres,
        meta.moods,
        metadata.known_or_unknown(meta.duration),
        metadata.known_or_unknown(meta.release_year),
        metadata.series_keys(meta.series),
    )


def _pad_last(x, extra: int, fill) -> np.ndarray:
    x = np.asarray(x)
    return np.concatenate([x, np.full((*x.shape[:-1], extra), fill, x.dtype)], axis=-1)


def _pad_first(x, extra: int, fill) -> np.ndarray:
    x = np.asarray(x)
    return np.concatenate([x, np.full((extra, *x.shape[1:]), fill, x.dtype)], axis=0)


def _on_device(**arrays: np.ndarray) -> dict[str, jnp.ndarray]:
    return {name: jax.device_put(np.asarray(x)) for name, x in arrays.items()}


# The updates below work on host copies and put each array on the device once (a transfer):
# jnp updates, and jnp.asarray itself, would compile a small program per new shape on the
# serving process's cores.


def grow(state: ServingState, capacity: int, n_model: int) -> ServingState:
    """``state`` with item arrays of ``capacity`` rows (the new ones invalid and empty)."""
    have = state.item_valid.shape[0]
    extra = capacity - have
    if extra <= 0:
        return state
    base = state.base
    dense = state.graph_dense
    if dense.shape[0] == have and have > 0:
        dense = _pad_first(_pad_last(dense, extra, 0.0), extra, 0.0)
    own_rows = np.arange(have, capacity, dtype=np.int32)

    def without_edges(lists) -> np.ndarray:
        """Adjacency lists grown by rows that point at themselves with weight 0, as the
        model's padding does."""
        lists = np.asarray(lists)
        return np.concatenate([lists, np.repeat(own_rows[:, None], lists.shape[1], axis=1)])

    return state._replace(
        base=base._replace(
            **_on_device(
                item_embeddings=_pad_first(base.item_embeddings, extra, 0.0),
                item_factors=_pad_first(base.item_factors, extra, 0.0),
            )
        ),
        **_on_device(
            graph_neighbours=without_edges(state.graph_neighbours),
            graph_weights=_pad_first(state.graph_weights, extra, 0.0),
            sequence_neighbours=without_edges(state.sequence_neighbours),
            sequence_weights=_pad_first(state.sequence_weights, extra, 0.0),
            graph_dense=np.asarray(dense),
            global_share=_pad_last(state.global_share, extra, 0.0),
            trending=_pad_last(state.trending, extra, 0.0),
            by_time_of_day=_pad_last(state.by_time_of_day, extra, 0.0),
            by_device=_pad_last(state.by_device, extra, 0.0),
            hour_share=_pad_first(state.hour_share, extra, 1.0 / HOURS),
            item_genres=_pad_first(state.item_genres, extra, 0.0),
            item_moods=_pad_first(state.item_moods, extra, 0.0),
            duration=_pad_last(state.duration, extra, metadata.UNKNOWN),
            release_year=_pad_last(state.release_year, extra, metadata.UNKNOWN),
            series=_pad_last(state.series, extra, metadata.NO_SERIES),
            item_diversity=_pad_first(state.item_diversity, extra, 0.0),
            item_valid=_pad_last(state.item_valid, extra, False),
            new_items=np.arange(n_model, capacity, dtype=np.int32),
        ),
    )


def _with_rows(x, rows: np.ndarray, values) -> np.ndarray:
    out = np.array(x)  # a copy: the served arrays are never written in place
    out[rows] = values
    return out


def write_new_items(state: ServingState, new: NewItemRows, basis: np.ndarray) -> ServingState:
    """``state`` with ``new``'s rows written and servable (rows must fit the capacity)."""
    if len(new.rows) == 0:
        return state
    rows, base = new.rows, state.base
    factor = np.asarray(base.factor)
    return state._replace(
        base=base._replace(
            **_on_device(
                item_embeddings=_with_rows(base.item_embeddings, rows, new.embeddings),
                item_factors=_with_rows(base.item_factors, rows, new.embeddings @ factor.T),
            )
        ),
        **_on_device(
            item_genres=_with_rows(state.item_genres, rows, new.genres),
            item_moods=_with_rows(state.item_moods, rows, new.moods),
            duration=_with_rows(state.duration, rows, new.duration),
            release_year=_with_rows(state.release_year, rows, new.release_year),
            series=_with_rows(state.series, rows, new.series),
            item_diversity=_with_rows(
                state.item_diversity, rows, diversity_vectors(new.embeddings, basis)
            ),
            item_valid=_with_rows(state.item_valid, rows, True),
        ),
    )


def set_valid(state: ServingState, rows: np.ndarray, valid: bool) -> ServingState:
    """``state`` with ``rows`` servable (True) or not (False: deleted)."""
    if len(rows) == 0:
        return state
    return state._replace(item_valid=jax.device_put(_with_rows(state.item_valid, rows, valid)))


def with_popularity(state: ServingState, popularity: Popularity) -> ServingState:
    """``state`` with new popularity / trending / context tables (sized to its capacity)."""
    return state._replace(**_on_device(**popularity._asdict()))


class CatalogueReport(NamedTuple):
    """What `apply_changes` did: items added (new rows), restored, deleted, and left for the
    next model version (their slot precedes the model's watermark); ``waiting``: the changes
    whose rows lie beyond a capacity the call was held to (in order), and ``rows_needed``: the
    rows the catalogue needs with them."""

    added: int
    restored: int
    deleted: int
    unplaced: int
    waiting: tuple[StoredChange, ...] = ()
    rows_needed: int = 0


class ServedCatalogue(NamedTuple):
    """The catalogue as served: device arrays, content id -> row, and by row the ids and
    titles answers name ("" for unused capacity)."""

    state: ServingState
    item_index: dict[str, int]
    item_ids: list[str]
    titles: list[str]


class CatalogueUpdate(NamedTuple):
    catalogue: ServedCatalogue
    report: CatalogueReport


def apply_changes(
    served: ServedCatalogue,
    changes: Sequence[StoredChange],
    model: TrainedModel,
    model_rows: dict[str, int],
    slot_watermark: int,
    basis: np.ndarray,
    cfg: CatalogueConfig,
    capacity: int | None = None,
) -> CatalogueUpdate:
    """``served`` with catalogue writes applied, in one copy of the arrays.

    A model item deleted stops being served; upserted again it is served again (with what the
    model learned of it). An item the model has not seen gets row ``n_model + slot −
    slot_watermark − 1`` — the same in every process, whatever order they see writes in — and
    an embedding, ``h`` row and diversity vector from its metadata. Held to ``capacity`` rows
    (a served engine: no new shape), the changes of rows beyond it are left waiting, in
    order; without, the arrays grow to hold every row (`item_capacity`).
    """
    n_model = model.n_items
    index, ids, titles = dict(served.item_index), list(served.item_ids), list(served.titles)
    deleted, restored, written, waiting = [], [], {}, []
    unplaced, rows_needed = 0, len(ids)
    for change in changes:
        content_id = change.item.content_id
        model_row = model_rows.get(content_id)
        row = model_row if model_row is not None else n_model + change.slot - slot_watermark - 1
        if row < n_model and model_row is None:
            unplaced += 1  # arrived while the model was reading the store: next version
            continue
        rows_needed = max(rows_needed, row + 1)
        if capacity is not None and row >= capacity:
            waiting.append(change)
            continue
        if change.deleted:
            index.pop(content_id, None)
            written.pop(row, None)
            deleted.append(row)
            continue
        index[content_id] = row
        if model_row is not None:
            restored.append(row)
        else:
            written[row] = change.item
    if capacity is None:
        capacity = item_capacity(len(ids), n_model, rows_needed, cfg)
    state = grow(served.state, capacity, n_model)
    ids += [""] * (capacity - len(ids))
    titles += [""] * (capacity - len(titles))
    if written:
        rows = np.array(sorted(written))
        items = catalogue(
            [written[r] for r in rows], model.base.item_embeddings.shape[1], model.genre_names
        )
        state = write_new_items(state, new_item_rows(rows, items, model.metadata_map, cfg), basis)
        for r in rows.tolist():
            ids[r], titles[r] = written[r].content_id, written[r].title
    state = set_valid(state, np.array(restored, np.int64), True)
    state = set_valid(state, np.array(deleted, np.int64), False)
    return CatalogueUpdate(
        ServedCatalogue(state, index, ids, titles),
        CatalogueReport(
            len(written), len(restored), len(deleted), unplaced, tuple(waiting), rows_needed
        ),
    )
