"""THE batch builder: per-user rows and per-request options in, padded `UserBatch` and
`RequestBatch` out, for `sona serve`, `sona eval` and `sona experiment` alike.

Users come either as viewer profiles (serving: one `ViewerProfile` per request, written straight
into the padded batch by `profile_batch`) or as rows of a model's user tables (evaluation: a host
`UserBatch` of n rows that `pad_users` pads). Both pad to a bucketed number of rows
(`buckets.USER_BUCKETS`) and bucketed list widths (`buckets.LIST_BUCKETS`, never below the
model's own widths, one rule: `_list_widths`), so the jitted calls see a handful of shapes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from sona_jax.buckets import LIST_BUCKETS, USER_BUCKETS, bucket, pad_rows
from sona_jax.model.version import TrainedModel
from sona_jax.serve.filters import ItemFilter
from sona_jax.serve.fusion import COLD_START_SETTINGS
from sona_jax.serve.retrieval import Candidates, KeptForScores
from sona_jax.serve.state import RequestBatch, UserBatch

MIN_LIST_WIDTH = 64  # narrowest seen / dismissed width a served batch compiles for


@dataclass
class ViewerProfile:
    """Everything needed to serve one viewer: 1-D rows of the engine's batches.

    preference (d,) float32; adapter (d, r) float16; recent_items / recent_weights (Lh,)
    engaged items newest first (-1 padded); seen (n,) and dismissed (m,) item indices;
    genre_affinity (G,); hourly (24,); qualifying: events that pull the preference vector;
    events: events of any kind; pool_index: the viewer's row in the model's kNN pool (-1 none);
    last_trained: when the adapter was last trained (seconds since the epoch, 0 never);
    model_version: the model version whose item indices these rows use.
    """

    preference: np.ndarray
    adapter: np.ndarray
    recent_items: np.ndarray
    recent_weights: np.ndarray
    seen: np.ndarray
    dismissed: np.ndarray
    genre_affinity: np.ndarray
    hourly: np.ndarray
    qualifying: float
    events: int
    pool_index: int
    last_trained: float = 0.0
    model_version: int = 0


def model_rows(model: TrainedModel, rows: np.ndarray) -> UserBatch:
    """Host `UserBatch` of model users ``rows`` (their own pool rows are masked in kNN)."""
    h, u = model.history, model.users
    return UserBatch(
        preference=u.preference[rows].astype(np.float32),
        adapter=u.adapter[rows],
        recent_items=h.recent_items[rows],
        recent_weights=h.recent_weights[rows],
        seen=h.seen[rows],
        dismissed=h.dismissed[rows],
        genre_affinity=u.genre_affinity[rows],
        hourly=u.hourly[rows],
        qualifying=h.qualifying[rows],
        pool_index=np.asarray(rows, np.int32),
    )


class ListWidths(NamedTuple):
    """Seen / dismissed widths a served batch is padded to: the model's own (narrowest), or
    ``wide`` for both when a viewer's list is longer (so a viewer who has watched much costs
    one known program per batch size, compiled at warm-up, never a new one)."""

    seen: int
    dismissed: int
    wide: int


def list_widths(model: TrainedModel, max_items: int) -> ListWidths:
    """The widths for ``model``'s users, ``max_items`` being the longest list a profile keeps
    (`candidates.max_seen_items`)."""
    seen, dismissed = (
        max(
            MIN_LIST_WIDTH,
            bucket(int((getattr(model.history, name) >= 0).sum(1).max(initial=1)), LIST_BUCKETS),
        )
        for name in ("seen", "dismissed")
    )
    return ListWidths(seen, dismissed, max(seen, dismissed, bucket(max_items, LIST_BUCKETS)))


def _list_widths(seen: int, dismissed: int, widths: ListWidths) -> tuple[int, int]:
    """The (seen, dismissed) widths lists of these longest lengths are padded to: the model's
    own, or ``widths.wide`` for both when either is longer."""
    if seen > widths.seen or dismissed > widths.dismissed:
        return widths.wide, widths.wide
    return widths.seen, widths.dismissed


def _fill_lists(lists: np.ndarray | Sequence[np.ndarray], size: int, width: int) -> np.ndarray:
    """(size, width) int32 of ``lists`` (one per row, cut at ``width``; a 2-D array or a
    sequence of 1-D ones), -1 padded."""
    out = np.full((size, width), -1, np.int32)
    if isinstance(lists, np.ndarray):
        out[: lists.shape[0], : min(width, lists.shape[1])] = lists[:, :width]
        return out
    for row, items in enumerate(lists):
        out[row, : min(width, len(items))] = items[:width]
    return out


# What a padding row of a `UserBatch` holds, by field (the rest are 0).
_PADDING_USER = {"recent_items": -1, "pool_index": -1}
_USER_DTYPES = {"qualifying": np.float32, "pool_index": np.int32}


def pad_users(users: UserBatch, size: int, widths: ListWidths) -> UserBatch:
    """``users`` (n rows) padded to ``size`` rows (`_PADDING_USER`) and its seen / dismissed
    lists to ``widths`` (both to ``widths.wide`` when either is longer)."""
    seen, dismissed = _list_widths(users.seen.shape[1], users.dismissed.shape[1], widths)
    rows = {
        name: pad_rows(
            np.asarray(getattr(users, name), _USER_DTYPES.get(name)),
            size,
            _PADDING_USER.get(name, 0),
        )
        for name in UserBatch._fields
        if name not in ("seen", "dismissed")
    }
    return UserBatch(
        **rows,
        seen=_fill_lists(users.seen, size, seen),
        dismissed=_fill_lists(users.dismissed, size, dismissed),
    )


def profile_batch(
    profiles: Sequence[ViewerProfile], size: int, widths: ListWidths, with_seen: bool = True
) -> UserBatch:
    """Host `UserBatch` of ``profiles`` padded to ``size`` rows and ``widths`` (as
    `pad_users`), each value copied once into its row: stacking the profiles first and padding
    after cost a quarter of a served batch's host time. ``with_seen`` False leaves every seen
    list empty (scores never exclude watched items)."""
    n, first = len(profiles), profiles[0]

    def column(name: str, dtype) -> np.ndarray:
        shape = np.shape(getattr(first, name))
        out = np.full((size, *shape), _PADDING_USER.get(name, 0), dtype)
        if shape:
            np.stack([getattr(p, name) for p in profiles], out=out[:n], casting="unsafe")
        else:
            out[:n] = [getattr(p, name) for p in profiles]
        return out

    seen = [p.seen for p in profiles] if with_seen else []
    dismissed = [p.dismissed for p in profiles]
    widths_now = _list_widths(
        max(map(len, seen), default=0), max(map(len, dismissed), default=0), widths
    )
    return UserBatch(
        preference=column("preference", np.float32),
        adapter=column("adapter", first.adapter.dtype),
        recent_items=column("recent_items", np.int32),
        recent_weights=column("recent_weights", np.float32),
        seen=_fill_lists(seen, size, widths_now[0]),
        dismissed=_fill_lists(dismissed, size, widths_now[1]),
        genre_affinity=column("genre_affinity", np.float32),
        hourly=column("hourly", np.float32),
        qualifying=column("qualifying", np.float32),
        pool_index=column("pool_index", np.int32),
    )


def request_rows(
    n: int,
    mmr_lambda,
    cold_start: np.ndarray,
    exclude_watched=True,
    device=None,
    time_of_day=None,
    mood=None,
    seed=0,
) -> RequestBatch:
    """Host `RequestBatch` of ``n`` requests; each option is one value for all or an (n,) array;
    context options None or -1 are absent; a scalar ``seed`` gives row i the seed + i;
    ``cold_start`` one row of settings for all (`fusion.cold_start_row`) or (n, settings)."""

    def column(value, dtype, absent=-1) -> np.ndarray:
        if value is None:
            return np.full(n, absent, dtype)
        return np.broadcast_to(np.asarray(value, dtype), (n,)).copy()

    seeds = seed + np.arange(n) if np.ndim(seed) == 0 else np.asarray(seed)
    return RequestBatch(
        device=column(device, np.int32),
        time_of_day=column(time_of_day, np.int32),
        mood=column(mood, np.int32),
        exclude_watched=column(exclude_watched, bool),
        mmr_lambda=column(mmr_lambda, np.float32),
        seed=np.asarray(seeds, np.int32),
        cold_start=np.broadcast_to(
            np.asarray(cold_start, np.float32), (n, len(COLD_START_SETTINGS))
        ).copy(),
    )


# What a padding request row holds: no context, nothing excluded beyond the default, λ = 1,
# cold-start settings of 1 (finite: a blend over one event).
_PADDING_REQUEST = {
    "device": -1,
    "time_of_day": -1,
    "mood": -1,
    "exclude_watched": True,
    "mmr_lambda": 1.0,
    "seed": 0,
    "cold_start": 1.0,
}


def pad_requests(requests: RequestBatch, size: int) -> RequestBatch:
    """``requests`` (n rows) padded to ``size`` rows of `_PADDING_REQUEST`."""
    return RequestBatch(
        **{
            name: pad_rows(np.asarray(getattr(requests, name)), size, _PADDING_REQUEST[name])
            for name in RequestBatch._fields
        }
    )


class ViewerCandidates(NamedTuple):
    """One viewer's retrieved candidates as host rows (`retrieval.Candidates` row): items
    (P,), raw (P, 3), floor (3,), neighbours (K,), content_span (2,)."""

    items: np.ndarray
    raw: np.ndarray
    floor: np.ndarray
    neighbours: np.ndarray
    content_span: np.ndarray


@dataclass(frozen=True)
class RequestFilter:
    """One request's filters on the host (`filters.ItemFilter` holds a batch of them):
    excluded item rows; genre indices into the model's genres; bounds (None: absent), in years
    and minutes; one_per_series."""

    excluded: tuple[int, ...] = ()
    genres_any: tuple[int, ...] = ()
    genres_none: tuple[int, ...] = ()
    year_min: float | None = None
    year_max: float | None = None
    duration_min: float | None = None
    duration_max: float | None = None
    one_per_series: bool = False


def filter_rows(
    filters: Sequence[RequestFilter | None], size: int, n_genres: int, max_excluded: int
) -> ItemFilter:
    """Host `filters.ItemFilter` of n requests' filters (None: no filter), padded to ``size``
    rows that filter nothing; ``max_excluded`` wide, whatever the requests carry, so filters
    never change a compiled shape."""
    out = ItemFilter(
        excluded=np.full((size, max_excluded), -1, np.int32),
        genres_any=np.zeros((size, n_genres), bool),
        genres_none=np.zeros((size, n_genres), bool),
        year_min=np.full(size, -np.inf, np.float32),
        year_max=np.full(size, np.inf, np.float32),
        duration_min=np.full(size, -np.inf, np.float32),
        duration_max=np.full(size, np.inf, np.float32),
        one_per_series=np.zeros(size, bool),
    )
    for row, f in enumerate(filters):
        if f is None:
            continue
        if len(f.excluded) > max_excluded:
            raise ValueError(f"at most {max_excluded} excluded items per request")
        out.excluded[row, : len(f.excluded)] = f.excluded
        out.genres_any[row, list(f.genres_any)] = True
        out.genres_none[row, list(f.genres_none)] = True
        for name in ("year_min", "year_max", "duration_min", "duration_max"):
            if getattr(f, name) is not None:
                getattr(out, name)[row] = getattr(f, name)
        out.one_per_series[row] = f.one_per_series
    return out


@dataclass(frozen=True)
class Query:
    """One request to rank or score for a viewer: context indices are -1 when absent; ``items``
    (C,) are the items to score (None when ranking); ``candidates`` the viewer's retrieved
    candidates for this profile and ``exclude_watched`` when the caller holds them (None:
    retrieve them in this call; a filtered query must bring none: its candidates are
    retrieved through its ``filters``); ``fusion`` a (3, N_SOURCES) fusion matrix of its own
    (an experiment variant; None: the engine's configured one); ``cold_start`` a row of
    cold-start settings of its own (`fusion.cold_start_row`; None: the configured ones)."""

    profile: ViewerProfile
    limit: int = 10
    exclude_watched: bool = True
    mmr_lambda: float = 1.0
    device: int = -1
    time_of_day: int = -1
    mood: int = -1
    seed: int = 0
    items: np.ndarray | None = None
    candidates: ViewerCandidates | None = None
    filters: RequestFilter | None = None
    fusion: np.ndarray | None = None
    cold_start: np.ndarray | None = None


def variant_rows(queries: Sequence[Query], name: str, size: int, default: np.ndarray) -> np.ndarray:
    """(size, *default.shape) float32 each query's own ``name`` setting (``fusion`` (3,
    N_SOURCES) or ``cold_start`` (len(COLD_START_SETTINGS),)), ``default`` where it brings
    none and on padding rows: one shape whatever the variants, so nothing compiles."""
    out = np.empty((size, *default.shape), np.float32)
    out[:] = default
    for row, query in enumerate(queries):
        own = getattr(query, name)
        if own is not None:
            out[row] = own
    return out


def stack_candidates(rows: Sequence[ViewerCandidates], size: int) -> Candidates:
    """Host `retrieval.Candidates` of ``rows`` padded to ``size`` rows (no items)."""
    return Candidates(
        *(
            _stacked(rows, name, size, fill)
            for name, fill in zip(Candidates._fields, _FILLS, strict=True)
        )
    )


def stack_kept_for_scores(rows: Sequence[ViewerCandidates], size: int) -> KeptForScores:
    """Host `retrieval.KeptForScores` of ``rows`` padded to ``size`` rows: only what scoring
    reads goes to the device."""
    return KeptForScores(
        _stacked(rows, "neighbours", size, -1), _stacked(rows, "content_span", size, 0)
    )


_FILLS = (-1, 0, 0, -1, 0)  # padding of each `Candidates` field: no items, no neighbours


def _stacked(rows: Sequence[ViewerCandidates], name: str, size: int, fill) -> np.ndarray:
    """(size, ...) field ``name`` of ``rows``, padding rows ``fill``."""
    first = getattr(rows[0], name)
    out = np.full((size, *first.shape), fill, first.dtype)
    np.stack([getattr(r, name) for r in rows], out=out[: len(rows)], casting="unsafe")
    return out


def split_candidates(candidates: Candidates, n: int) -> list[ViewerCandidates]:
    """The first ``n`` rows of ``candidates`` (host or device) as one host row per viewer."""
    columns = [np.asarray(x) for x in candidates]
    return [ViewerCandidates(*(x[i] for x in columns)) for i in range(n)]


def query_batch(
    queries: Sequence[Query],
    size: int,
    widths: ListWidths,
    cold_start: np.ndarray,
    with_seen: bool = True,
) -> tuple[UserBatch, RequestBatch, np.ndarray]:
    """Host `UserBatch` (`profile_batch`), `RequestBatch` (`pad_requests`) and limits (size,
    padding rows 1) of n queries, padded to ``size`` rows; ``cold_start`` the settings row of
    queries that bring none."""

    def column(name: str) -> np.ndarray:
        return np.array([getattr(q, name) for q in queries])

    requests = request_rows(
        len(queries),
        column("mmr_lambda"),
        variant_rows(queries, "cold_start", len(queries), cold_start),
        column("exclude_watched"),
        column("device"),
        column("time_of_day"),
        column("mood"),
        column("seed"),
    )
    users = profile_batch([q.profile for q in queries], size, widths, with_seen)
    return users, pad_requests(requests, size), pad_rows(column("limit").astype(np.int32), size, 1)


def batch_size(n: int) -> int:
    """Rows a batch of ``n`` users is padded to."""
    return bucket(n, USER_BUCKETS)
