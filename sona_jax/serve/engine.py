"""The engine facade every caller serves through: one loaded model version under one served
config, with batched recommend / score / similar calls (viewers' profiles and their adapter
training: `sona_jax.serve.viewers`).

`sona serve` (through `service.serving.runtime`), `sona eval` and `sona experiment` all rank with
`ServingEngine.recommend`, which goes through the one batch builder (`sona_jax.serve.batch`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sona_jax.buckets import OUTPUT_WIDTH, SCORE_BUCKETS, bucket, pad_rows, size_step, stepped
from sona_jax.config import SonaConfig
from sona_jax.data.stored import StoredChange
from sona_jax.model.tables import Popularity
from sona_jax.model.version import TrainedModel
from sona_jax.serve import catalogue as live
from sona_jax.serve import fusion, rank, recommend, retrieval
from sona_jax.serve.batch import (
    ListWidths,
    Query,
    RequestFilter,
    ViewerCandidates,
    batch_size,
    filter_rows,
    list_widths,
    model_rows,
    pad_requests,
    pad_users,
    query_batch,
    split_candidates,
    stack_candidates,
    stack_kept_for_scores,
    variant_rows,
)
from sona_jax.serve.filters import ItemFilter
from sona_jax.serve.neighbours import ViewerIndex, viewer_index
from sona_jax.serve.programs import ProgramLibrary, Programs, ServedShapes, signature
from sona_jax.serve.state import (
    RequestBatch,
    ServingState,
    UserBatch,
    diversity_basis,
    diversity_vectors,
    pool_dtype,
    pool_preferences,
    pool_votes,
    serving_state,
)


class Lists(NamedTuple):
    """Host arrays (users, n_out): items (-1 past the end), scores, kinds (index into
    `fusion.KIND_NAMES`), based_on (history item or -1); contributions (users, n_out, N_SOURCES + 1)."""

    items: np.ndarray
    scores: np.ndarray
    kinds: np.ndarray
    based_on: np.ndarray
    contributions: np.ndarray


class Scores(NamedTuple):
    """Host arrays: score (users, C) and components (users, C, N_SOURCES + 1)."""

    score: np.ndarray
    components: np.ndarray


def output_width(longest: int) -> int:
    """Columns a recommend call computes: `OUTPUT_WIDTH` for every served length (one program
    for all of them), more only for longer lists (evaluation at k > 100)."""
    return OUTPUT_WIDTH if longest <= OUTPUT_WIDTH else bucket(longest)


def _search_settings(cfg: SonaConfig) -> tuple:
    c = cfg.collaborative
    return c.approximate_from, c.hnsw_links, c.hnsw_build_depth, c.hnsw_search_depth


def _rows_of(users: UserBatch, rows: np.ndarray) -> UserBatch:
    """Rows ``rows`` of a host `UserBatch`."""
    return UserBatch(*(np.asarray(x)[rows] for x in users))


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
class ServingEngine:
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

    # ---- batched calls -------------------------------------------------------------------

    def _size(self, n: int) -> int:
        """Rows a batch of ``n`` viewers is padded to: a served size, or evaluation's buckets."""
        return batch_size(n) if self.shapes is None else self.shapes.padded(n)

    def _widths(self, size: int) -> ListWidths:
        """The seen / dismissed widths a batch of ``size`` rows is padded to: a served engine
        pads its smallest batches to the wide widths (a viewer with long lists is served
        alone, `_groups`), the others to the model's; evaluation picks them by the data."""
        if self.shapes is not None and size == self.shapes.alone:
            wide = self.widths.wide
            return ListWidths(wide, wide, wide)
        return self.widths

    def _users(self, users: UserBatch) -> tuple[UserBatch, int]:
        size = self._size(users.preference.shape[0])
        return pad_users(users, size, self._widths(size)), size

    def recommend(
        self,
        users: UserBatch,
        requests: RequestBatch,
        limits: np.ndarray,
        weights: np.ndarray | None = None,
    ) -> Lists:
        """Top lists of n users (host `UserBatch` of n rows, `RequestBatch` of n rows, limits
        (n,)): one jitted call over a bucketed batch; ``weights`` override the configured
        fusion: a (3, N_SOURCES) matrix or weights (N_SOURCES,) (gates zero)."""
        n = users.preference.shape[0]
        padded, size = self._users(users)
        limits = np.asarray(limits, np.int32)
        out = self.run(
            recommend.recommend,
            (
                self.state,
                padded,
                pad_requests(requests, size),
                np.concatenate([limits, np.ones(size - n, np.int32)]),
                self.weights if weights is None else fusion.as_fusion(weights),
            ),
            {"neighbours": self._neighbours(users.preference, size)},
            {"cfg": self.compiled, "n_out": output_width(int(limits.max()))},
        )
        return self._lists(out, n, int(limits.max()))

    def _neighbours(self, preference: np.ndarray, size: int) -> np.ndarray | None:
        """(size, K + 1) pool rows an approximate search finds for the host ``preference``
        (n, d) rows of a batch (one more than the source keeps: a model viewer finds themself),
        padding rows -1 (not searched); or None: every pool viewer is read."""
        if self.viewer_search is None:
            return None
        found = self.viewer_search.search(
            np.asarray(preference), self.cfg.collaborative.neighbours + 1
        )
        return pad_rows(found, size, -1)

    def recommend_rows(
        self, rows: np.ndarray, requests: RequestBatch, k: int, weights=None
    ) -> Lists:
        """`recommend` for model users ``rows`` (evaluation)."""
        limits = np.full(len(rows), k, np.int32)
        return self.recommend(model_rows(self.model, rows), requests, limits, weights)

    def candidate_rows(
        self, rows: np.ndarray, requests: RequestBatch
    ) -> tuple[rank.RequestCandidates, np.ndarray]:
        """`recommend.candidate_table` of model users ``rows`` (n,) and their qualifying
        event counts (n,); the table keeps its bucketed batch's padding rows past n."""
        users = model_rows(self.model, rows)
        padded, size = self._users(users)
        table = self.run(
            recommend.candidate_table,
            (self.state, padded, pad_requests(requests, size)),
            {"neighbours": self._neighbours(users.preference, size)},
            {"cfg": self.compiled},
        )
        return table, np.asarray(users.qualifying)

    def _groups(self, queries: Sequence[Query], alone: Callable[[Query], bool]) -> list[list[int]]:
        """Which queries go into one engine call together (indices): all of them unless
        served; served, the queries ``alone`` picks (or whose seen or dismissed lists are
        longer than the model's widths) a few at a time at the smallest size, the others in
        batches of at most the largest size."""
        if self.shapes is None:
            return [list(range(len(queries)))]
        widths = self.widths

        def apart(q: Query) -> bool:
            p = q.profile
            return len(p.seen) > widths.seen or len(p.dismissed) > widths.dismissed or alone(q)

        solo = [i for i, q in enumerate(queries) if apart(q)]
        rest = [i for i, q in enumerate(queries) if not apart(q)]
        step = self.shapes.alone
        groups = [solo[s : s + step] for s in range(0, len(solo), step)]
        return groups + [[rest[i] for i in chunk] for chunk in self.shapes.chunks(len(rest))]

    def recommend_queries(
        self, queries: Sequence[Query]
    ) -> tuple[Lists, list[ViewerCandidates | None]]:
        """Top lists for viewers' queries (serving) and the candidates retrieved in this call
        (None for queries that brought their own). Not served (evaluation): the queries
        without candidates are retrieved first (one jitted call over them), then every query
        is ranked (one call). Served: in batches of the served sizes (`_groups`), the queries
        to retrieve for and the others each in one program that does both
        (`recommend.serve_lists`)."""
        if self.shapes is None:
            return self._recommend_group(queries)
        found: list[ViewerCandidates | None] = [None] * len(queries)
        parts, order = [], []
        for group in self._groups(queries, lambda q: False):
            for retrieve in (True, False):
                rows = [i for i in group if (queries[i].candidates is None) == retrieve]
                if not rows:
                    continue
                lists, retrieved = self._serve_lists([queries[i] for i in rows], retrieve)
                parts.append(lists)
                order += rows
                for i, row in zip(rows, retrieved, strict=True):
                    found[i] = row
        if len(parts) == 1:
            return parts[0], found
        width = max(part.items.shape[1] for part in parts)
        back = np.argsort(np.array(order), kind="stable")
        return Lists(
            *(
                np.concatenate([_widened(x, width, fill) for x in column])[back]
                for column, fill in zip(zip(*parts, strict=True), _LIST_FILLS, strict=True)
            )
        ), found

    def _recommend_group(
        self, queries: Sequence[Query]
    ) -> tuple[Lists, list[ViewerCandidates | None]]:
        n = len(queries)
        size = self._size(n)
        padded, requests, limits = query_batch(
            queries, size, self._widths(size), self.host_cold_start
        )
        found = self._retrieve_missing(queries, padded, requests.exclude_watched)
        item_filter = self.filter_batch([q.filters for q in queries], size)
        candidates = stack_candidates(
            [q.candidates if q.candidates is not None else found[i] for i, q in enumerate(queries)],
            size,
        )
        longest = int(limits[:n].max())
        out = self.run(
            rank.rank,
            (
                self.state,
                padded,
                requests,
                candidates,
                limits,
                variant_rows(queries, "fusion", size, self.host_weights),
            ),
            {"item_filter": item_filter},
            {"cfg": self.compiled, "n_out": output_width(longest)},
        )
        return self._lists(out, n, longest), found

    def _serve_lists(
        self, queries: Sequence[Query], retrieve: bool
    ) -> tuple[Lists, list[ViewerCandidates | None]]:
        """`recommend.serve_lists` for queries that all bring candidates (``retrieve`` False)
        or none (True: the candidates retrieved are returned too)."""
        n = len(queries)
        size = self._size(n)
        padded, requests, limits = query_batch(
            queries, size, self._widths(size), self.host_cold_start
        )
        if retrieve:
            kept = retrieval.placeholder(size, self.cfg, self.state.pool_preferences.shape[0])
        else:
            kept = stack_candidates([q.candidates for q in queries], size)
        longest = int(limits[:n].max())
        lists, candidates = self.run(
            recommend.serve_lists,
            (
                self.state,
                padded,
                requests,
                kept,
                np.bool_(retrieve),
                limits,
                variant_rows(queries, "fusion", size, self.host_weights),
            ),
            {
                "neighbours": self._searched(padded.preference[:n], size, retrieve),
                "item_filter": self.filter_batch([q.filters for q in queries], size),
            },
            {"cfg": self.compiled, "n_out": output_width(longest)},
        )
        found = split_candidates(candidates, n) if retrieve else [None] * n
        return self._lists(lists, n, longest), found

    def _searched(self, preference: np.ndarray, size: int, retrieve: bool) -> np.ndarray | None:
        """`_neighbours` of rows that retrieve; rows that do not get none searched (-1), in
        the same shape, so both share one program."""
        if self.viewer_search is None or retrieve:
            return self._neighbours(preference, size)
        return np.full((size, self.cfg.collaborative.neighbours + 1), -1, np.int32)

    def filter_batch(self, each: Sequence[RequestFilter | None], size: int) -> ItemFilter:
        """Requests' filters as a batch of ``size`` rows (`batch.filter_rows`)."""
        return filter_rows(
            each,
            size,
            self.state.item_genres.shape[1],
            self.cfg.filters.max_excluded_ids,
        )

    def _retrieve_missing(
        self, queries: Sequence[Query], padded: UserBatch, exclude_watched: np.ndarray
    ) -> list[ViewerCandidates | None]:
        """The candidates of the queries that bring none, retrieved in one jitted call over
        their rows of the host batch ``padded`` (all of it when none brings any); None for the
        others."""
        n = len(queries)
        missing = [i for i, q in enumerate(queries) if q.candidates is None]
        found: list[ViewerCandidates | None] = [None] * n
        if not missing:
            return found
        rows = np.array(missing)
        viewers = _rows_of(padded, rows)
        if len(missing) == n:  # all first-seen: the batch is the retrieved one
            sub, sub_size, exclude = padded, padded.preference.shape[0], exclude_watched
        else:
            sub, sub_size = self._users(viewers)
            exclude = pad_rows(np.asarray(exclude_watched)[rows], sub_size, True)
        retrieved = split_candidates(
            self.run(
                retrieval.retrieve,
                (self.state, sub, exclude),
                {
                    "neighbours": self._neighbours(viewers.preference, sub_size),
                    "item_filter": self.filter_batch(
                        [queries[i].filters for i in missing], sub_size
                    ),
                },
                {"cfg": self.compiled},
            ),
            len(missing),
        )
        for i, row in zip(missing, retrieved, strict=True):
            found[i] = row
        return found

    @staticmethod
    def _lists(out: rank.Recommendations, n: int, longest: int) -> Lists:
        """Host copies of what the callers read, no more."""
        return Lists(
            *(
                np.asarray(x)[:n, :longest]
                for x in (out.items, out.scores, out.kind, out.based_on, out.contributions)
            )
        )

    def score_queries(
        self, queries: Sequence[Query]
    ) -> tuple[list[Scores], list[ViewerCandidates | None]]:
        """Scores and components of each query's ``items`` (indices), one jitted call, from the
        viewers' candidates (retrieved first for queries that bring none, excluding watched
        items as a default recommendation does, so both share them), fused with each query's
        own fusion matrix and cold-start settings where it brings them (an experiment arm's,
        as its list is); and the candidates retrieved in this call (None for queries that
        brought their own)."""
        if self.shapes is None:
            widest = max(len(q.items) for q in queries)
            return self._score_group(queries, bucket(widest, SCORE_BUCKETS))
        # Served: the candidates of queries that bring none retrieved first (in the lists'
        # program: it keeps them), then rows of at most score_width items (a longer request
        # spans several rows of its viewer) scored in batches of the served sizes.
        found: list[ViewerCandidates | None] = [None] * len(queries)
        missing = [i for i, q in enumerate(queries) if q.candidates is None]
        if missing:
            _, retrieved = self.recommend_queries([queries[i] for i in missing])
            for i, row in zip(missing, retrieved, strict=True):
                found[i] = row
        width = self.shapes.score_width
        rows, owners = [], []
        for i, q in enumerate(queries):
            kept = q if found[i] is None else replace(q, candidates=found[i])
            for start in range(0, max(len(q.items), 1), width):
                rows.append(
                    kept
                    if len(q.items) <= width
                    else replace(kept, items=q.items[start : start + width])
                )
                owners.append(i)
        got: list[Scores | None] = [None] * len(rows)
        for group in self._groups(rows, lambda q: False):
            scores, _ = self._score_group([rows[j] for j in group], width)
            for j, row in zip(group, scores, strict=True):
                got[j] = row
        if len(rows) == len(queries):  # every query in one row (the common case)
            return got, found
        by_query: list[list[Scores]] = [[] for _ in queries]
        for j, i in enumerate(owners):
            by_query[i].append(got[j])
        return [Scores(*(np.concatenate(c) for c in zip(*p, strict=True))) for p in by_query], found

    def _score_group(
        self, queries: Sequence[Query], width: int
    ) -> tuple[list[Scores], list[ViewerCandidates | None]]:
        n = len(queries)
        size = self._size(n)
        # Seen lists shape only retrieval (scores never exclude watched items): the scoring
        # call gets none.
        retrieving = any(q.candidates is None for q in queries)
        padded, requests, _ = query_batch(
            queries, size, self._widths(size), self.host_cold_start, with_seen=retrieving
        )
        found = self._retrieve_missing(queries, padded, np.ones(size, bool))
        kept = stack_kept_for_scores(
            [q.candidates if q.candidates is not None else found[i] for i, q in enumerate(queries)],
            size,
        )
        items = [q.items for q in queries]
        if max(len(i) for i in items) > width:
            raise ValueError(f"at most {width} items per scored viewer")
        table = np.full((size, width), -1, np.int32)
        for row, values in enumerate(items):
            table[row, : len(values)] = values
        out = self.run(
            recommend.score_items,
            (
                self.state,
                padded._replace(seen=np.zeros((size, 0), np.int32)),
                requests,
                kept,
                table,
                variant_rows(queries, "fusion", size, self.host_weights),
            ),
            static={"cfg": self.compiled},
        )
        score, components = np.asarray(out.score), np.asarray(out.components)
        scores = [
            Scores(score[row, : len(items[row])], components[row, : len(items[row])])
            for row in range(n)
        ]
        return scores, found


_LIST_FILLS = (-1, 0.0, 0, -1, 0.0)  # past a list's end, by `Lists` field


def _widened(x: np.ndarray, width: int, fill) -> np.ndarray:
    """(n, width, ...) ``x`` (n, w, ...) padded with ``fill`` columns."""
    if x.shape[1] == width:
        return x
    pad = np.full((x.shape[0], width - x.shape[1], *x.shape[2:]), fill, x.dtype)
    return np.concatenate([x, pad], axis=1)
