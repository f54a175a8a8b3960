"""The engine facade every caller serves through: one loaded model version under one served
config, its catalogue and tables, and the program set it runs on.

`sona serve` (through `service.serving.runtime`) answers viewers' queries with
`recommend_queries` and `score_queries` (`sona_jax.serve.query_batches`: grouped into the served
batch sizes, retrieval and ranking in one program); `sona eval` and `sona experiment` rank
batches of model viewers with `recommend_rows`, through the same batch builder
(`sona_jax.serve.batch`) and ranking code. Viewers' profiles and adapter training:
`sona_jax.serve.viewers`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property

import jax
import jax.numpy as jnp
import numpy as np

from sona_jax.buckets import size_step, stepped
from sona_jax.config import SonaConfig
from sona_jax.data.stored import StoredChange
from sona_jax.model.tables import Popularity
from sona_jax.model.version import TrainedModel
from sona_jax.serve import catalogue as live
from sona_jax.serve import fusion, retrieval
from sona_jax.serve.batch import (
    ListWidths,
    list_widths,
)
from sona_jax.serve.neighbours import ViewerIndex, viewer_index
from sona_jax.serve.programs import ProgramLibrary, Programs, ServedShapes, signature
from sona_jax.serve.query_batches import BatchedQueries
from sona_jax.serve.score_batches import BatchedScores
from sona_jax.serve.state import (
    ServingState,
    diversity_basis,
    diversity_vectors,
    pool_dtype,
    pool_preferences,
    pool_votes,
    serving_state,
)


def _search_settings(cfg: SonaConfig) -> tuple:
    c = cfg.collaborative
    return c.approximate_from, c.hnsw_links, c.hnsw_build_depth, c.hnsw_search_depth


NO_CONTEXT_ITEMS = np.zeros((0, 0), np.int32)
NO_CONTEXT_FIT = np.zeros((0, 0), np.float32)


def without_context(state: ServingState) -> ServingState:
    """``state`` without its context table and candidates (made from the rest of it)."""
    return state._replace(context_fit=NO_CONTEXT_FIT, context_items=NO_CONTEXT_ITEMS)


def with_context_items(
    state: ServingState, cfg: SonaConfig, programs: Programs | None = None
) -> ServingState:
    """``state`` with its context table and candidates made from its own tables (after any
    change), through ``programs`` when given."""
    # Without the old ones: they are not read, and their shapes would key a second program.
    tables = without_context(state)
    if programs is None:
        fit, items = retrieval.context_candidates(tables, cfg)
    else:
        fit, items = programs.run(retrieval.context_candidates, (tables,), static={"cfg": cfg})
    return state._replace(context_fit=fit, context_items=items)


def shape_key(state: ServingState, compiled: SonaConfig, widths: ListWidths) -> tuple:
    """What every program of a served engine is specialised to: its arrays' shapes (the
    context table aside: it follows from the rest), the compiled config and list widths."""
    return signature(without_context(state)), compiled, widths


@dataclass(frozen=True)
class ServingEngine(BatchedQueries, BatchedScores):
    """A model version on device under a served config (train-time part checked equal)."""

    model: TrainedModel
    cfg: SonaConfig
    state: ServingState
    weights: jnp.ndarray  # (3, N_SOURCES) fusion matrix (`fusion.fusion_matrix`)
    compiled: SonaConfig  # what the jitted calls see (`fusion.compiled_config`)
    widths: ListWidths
    item_index: dict[str, int] = field(repr=False)
    user_index: dict[str, int] = field(repr=False)
    item_ids: list[str] = field(repr=False)  # by item row, as Python strings for answers
    titles: list[str] = field(repr=False)
    model_item_index: dict[str, int] = field(repr=False)  # the model's own items
    basis: np.ndarray = field(repr=False)  # (k, d) diversity directions of the model's E
    slot_watermark: int = 0  # the store's last item slot the model was trained with
    revision: int = 0  # the newest catalogue write applied (part of list cache keys)
    tables: int = 0  # popularity tables taken in since load (cold viewers' candidates key on it)
    # nearest-viewer search over the kNN pool when it is large (`neighbours.viewer_index`)
    viewer_search: ViewerIndex | None = field(default=None, repr=False)
    # Served engines (`served`) run through explicitly held programs of their shape; without
    # (evaluation, experiments) every call is a plain jitted call.
    library: ProgramLibrary | None = field(default=None, repr=False)
    programs: Programs | None = field(default=None, repr=False)

    @classmethod
    def load(cls, model: TrainedModel, cfg: SonaConfig | None = None) -> ServingEngine:
        """``model`` served under ``cfg`` (default: its own); raises `ConfigError` when a
        train-time setting of ``cfg`` disagrees with the model's."""
        cfg = model.config if cfg is None else cfg
        cfg.check_trained_with(model.config, f"model version {model.version}")
        basis = diversity_basis(model.base.item_embeddings, cfg.diversity.dimensions)
        # One step of empty pool rows to spare, as for items: a rebuild with a few more viewers
        # keeps every shape (and compiles nothing).
        growth, min_step = cfg.catalogue.capacity_growth, cfg.catalogue.capacity_min_step
        pool_rows = stepped(
            model.n_users + size_step(model.n_users, growth, min_step), growth, min_step
        )
        compiled = fusion.compiled_config(cfg)
        search = viewer_index(model.users.preference, cfg.collaborative)
        state = serving_state(
            model, basis, pool_rows, cfg.collaborative.vote_items, pool_dtype(search is not None)
        )
        return cls(
            model,
            cfg,
            with_context_items(state, compiled),
            fusion.fusion_matrix(cfg),
            compiled,
            list_widths(model, cfg.candidates.max_seen_items),
            {content_id: i for i, content_id in enumerate(model.item_ids.tolist())},
            {user_id: i for i, user_id in enumerate(model.user_ids.tolist())},
            [str(content_id) for content_id in model.item_ids.tolist()],
            [str(title) for title in model.titles.tolist()],
            {content_id: i for i, content_id in enumerate(model.item_ids.tolist())},
            basis,
            int(model.report.get("store", {}).get("slot_watermark", 0)),
            viewer_search=search,
        )

    def with_config(self, cfg: SonaConfig) -> ServingEngine:
        """The same model and device arrays under other serve-time settings."""
        cfg.check_trained_with(self.model.config, f"model version {self.model.version}")
        state, basis = self.state, self.basis
        if cfg.diversity.dimensions != self.cfg.diversity.dimensions:
            basis = diversity_basis(self.model.base.item_embeddings, cfg.diversity.dimensions)
            state = state._replace(
                item_diversity=jax.device_put(
                    diversity_vectors(np.asarray(state.base.item_embeddings), basis)
                )
            )
        if cfg.collaborative.vote_items != self.cfg.collaborative.vote_items:
            items, weights = pool_votes(
                self.model, self.state.pool_preferences.shape[0], cfg.collaborative.vote_items
            )
            state = state._replace(pool_items=items, pool_weights=weights)
        compiled = fusion.compiled_config(cfg)
        search = self.viewer_search
        if _search_settings(cfg) != _search_settings(self.cfg):
            search = viewer_index(self.model.users.preference, cfg.collaborative)
            dtype = pool_dtype(search is not None)
            if state.pool_preferences.dtype != dtype:  # from the model: no float16 rounding
                pool = pool_preferences(self.model, state.pool_preferences.shape[0], dtype)
                state = state._replace(pool_preferences=pool)
        return replace(
            self,
            cfg=cfg,
            basis=basis,
            weights=fusion.fusion_matrix(cfg),
            compiled=compiled,
            viewer_search=search,
        )._restated(state)

    def served(self, library: ProgramLibrary) -> ServingEngine:
        """This engine running through the program sets of ``library`` (what the server
        serves): every call on a program of its shape's set, held until no engine of that
        shape is left."""
        return replace(self, library=library)._restated(self.state)

    def _restated(self, state: ServingState, **changes) -> ServingEngine:
        """This engine with ``state`` (its context table made anew from it) and ``changes``;
        a served engine takes the program set of its new shape."""
        engine = replace(self, state=state, **changes)
        programs = None
        if engine.library is not None:
            programs = engine.library.programs(shape_key(state, engine.compiled, engine.widths))
        return replace(
            engine, state=with_context_items(state, engine.compiled, programs), programs=programs
        )

    @property
    def shapes(self) -> ServedShapes | None:
        """The padded sizes a served engine runs at (None: evaluation's buckets)."""
        return None if self.library is None else self.library.shapes

    def run(self, fn, args: tuple, kwargs: dict | None = None, static: dict | None = None):
        """``fn(*args, **kwargs, **static)``: through the engine's program set when served,
        else as a plain jitted call."""
        if self.programs is None:
            return fn(*args, **(kwargs or {}), **(static or {}))
        return self.programs.run(fn, args, kwargs, static)

    @property
    def version(self) -> int:
        return self.model.version

    @cached_property
    def host_weights(self) -> np.ndarray:
        """(3, N_SOURCES) the configured fusion matrix on the host (what queries without one
        of their own are given), copied once per engine."""
        return np.asarray(self.weights)

    @cached_property
    def host_cold_start(self) -> np.ndarray:
        """(len(fusion.COLD_START_SETTINGS),) the configured cold-start settings (what queries
        without their own are given)."""
        return fusion.cold_start_row(self.cfg)

    @property
    def item_valid(self) -> np.ndarray:
        """(capacity,) bool rows that may be served."""
        return np.asarray(self.state.item_valid)

    # ---- the live catalogue --------------------------------------------------------------

    def with_catalogue(
        self, changes: Sequence[StoredChange], capacity: int | None = None
    ) -> tuple[ServingEngine, live.CatalogueReport]:
        """This engine with catalogue writes applied (SPEC 4.2; `catalogue.apply_changes`).

        A served engine keeps its shape: changes whose rows lie beyond its capacity are left
        waiting (`CatalogueReport.waiting`) until it has grown (`with_capacity`). ``capacity``:
        grow to that many rows first; an engine that is not served grows as needed."""
        if capacity is None and self.library is not None:
            capacity = self.capacity
        update = live.apply_changes(
            live.ServedCatalogue(self.state, self.item_index, self.item_ids, self.titles),
            changes,
            self.model,
            self.model_item_index,
            self.slot_watermark,
            self.basis,
            self.cfg.catalogue,
            capacity,
        )
        waiting = {id(c) for c in update.report.waiting}
        applied = [c for c in changes if id(c) not in waiting]
        engine = self._restated(
            update.catalogue.state,
            item_index=update.catalogue.item_index,
            item_ids=update.catalogue.item_ids,
            titles=update.catalogue.titles,
            revision=max([self.revision, *(c.revision for c in applied)]),
        )
        return engine, update.report

    def with_capacity(self, capacity: int) -> ServingEngine:
        """This engine with item arrays of ``capacity`` rows (at least its own)."""
        return self.with_catalogue([], max(capacity, self.capacity))[0]

    @cached_property
    def rows_in_use(self) -> int:
        """Item rows up to the last one any item has taken (rows are never reused; read at
        every catalogue write, so counted once per engine)."""
        taken = [row for row in self.item_index.values() if row >= self.model.n_items]
        return max(taken, default=self.model.n_items - 1) + 1

    @property
    def capacity(self) -> int:
        """Rows of the item arrays (the model's items, then room for new ones)."""
        return len(self.item_ids)

    @property
    def items_added(self) -> int:
        """Servable items added since the model was trained."""
        return int(self.item_valid[self.model.n_items :].sum())

    def with_headroom(self) -> ServingEngine:
        """This engine with one capacity step of rows free for new items, so the first writes
        after a model loads change no shape (what the server serves; evaluation does not)."""
        n_model = self.model.n_items
        if self.capacity > n_model:
            return self
        capacity = live.initial_capacity(n_model, self.cfg.catalogue)
        extra = capacity - self.capacity
        return self._restated(
            live.grow(self.state, capacity, n_model),
            item_ids=self.item_ids + [""] * extra,
            titles=self.titles + [""] * extra,
        )

    def with_popularity(self, popularity: Popularity, counted: bool = True) -> ServingEngine:
        """This engine with live popularity / trending / context tables (capacity-sized).
        ``counted`` False: the same counts, only resized or re-masked for catalogue writes
        (`tables`, which retires candidates made from the tables, stays)."""
        return self._restated(
            live.with_popularity(self.state, popularity), tables=self.tables + int(counted)
        )
