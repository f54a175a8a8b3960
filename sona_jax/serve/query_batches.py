"""Batched calls of a served or evaluated engine: viewers' queries grouped into the served batch
sizes (those with long lists alone), padded, and run through one program per group, lists
(`recommend.serve_lists`: retrieval and ranking in one program) and scores of given items; for
evaluation, whole batches of model viewers (`recommend.recommend`).

`BatchedQueries` is the part of `ServingEngine` that does this; the engine supplies its state,
config, program set and widths."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from sona_jax.buckets import OUTPUT_WIDTH, bucket, pad_rows
from sona_jax.serve import fusion, rank, recommend, retrieval
from sona_jax.serve.batch import (
    ListWidths,
    Query,
    RequestFilter,
    ViewerCandidates,
    batch_size,
    filter_rows,
    model_rows,
    pad_requests,
    pad_users,
    query_batch,
    split_candidates,
    stack_candidates,
    variant_rows,
)
from sona_jax.serve.filters import ItemFilter
from sona_jax.serve.request_candidates import RequestCandidates
from sona_jax.serve.state import RequestBatch, UserBatch


class Lists(NamedTuple):
    """Host arrays (users, n_out): items (-1 past the end), scores, kinds (index into
    `fusion.KIND_NAMES`), based_on (history item or -1); contributions (users, n_out, N_SOURCES + 1)."""

    items: np.ndarray
    scores: np.ndarray
    kinds: np.ndarray
    based_on: np.ndarray
    contributions: np.ndarray


def output_width(longest: int) -> int:
    """Columns a recommend call computes: `OUTPUT_WIDTH` for every served length (one program
    for all of them), more only for longer lists (evaluation at k > 100)."""
    return OUTPUT_WIDTH if longest <= OUTPUT_WIDTH else bucket(longest)


def _rows_of(users: UserBatch, rows: np.ndarray) -> UserBatch:
    """Rows ``rows`` of a host `UserBatch`."""
    return UserBatch(*(np.asarray(x)[rows] for x in users))


class BatchedQueries:
    """Recommend and score calls over batches of viewers (mixed into `ServingEngine`, whose
    ``state``, ``cfg``, ``compiled``, ``model``, ``shapes``, ``widths``, ``weights``,
    ``viewer_search`` and ``run`` they use)."""

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
    ) -> tuple[RequestCandidates, np.ndarray]:
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


_LIST_FILLS = (-1, 0.0, 0, -1, 0.0)  # past a list's end, by `Lists` field


def _widened(x: np.ndarray, width: int, fill) -> np.ndarray:
    """(n, width, ...) ``x`` (n, w, ...) padded with ``fill`` columns."""
    if x.shape[1] == width:
        return x
    pad = np.full((x.shape[0], width - x.shape[1], *x.shape[2:]), fill, x.dtype)
    return np.concatenate([x, pad], axis=1)
