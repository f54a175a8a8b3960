"""Personalisation scores of given items for batches of viewers' queries (re-ranking): grouped
into the served batch sizes as lists are, each query's items in rows of the served score
width, scored from the viewers' retrieved candidates (`recommend.score_items`; those not yet
retrieved are, first)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import NamedTuple

import numpy as np

from sona_jax.buckets import SCORE_BUCKETS, bucket
from sona_jax.serve import recommend
from sona_jax.serve.batch import (
    Query,
    ViewerCandidates,
    query_batch,
    stack_kept_for_scores,
    variant_rows,
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


class BatchedScores:
    """Score calls over batches of viewers (mixed into `ServingEngine` beside
    `query_batches.BatchedQueries`, whose grouping and retrieval they reuse)."""

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
