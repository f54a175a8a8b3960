"""What the operator console shows, read from the running service: the same
profiles, engine calls and store queries the API answers from, so a page never disagrees with
the API. Plain dicts and lists for the templates and the charts."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import numpy as np
import orjson
from prometheus_client import Metric

from service import VERSION, schemas
from service.answers import policy
from service.answers.context import resolve
from service.answers.experiments import results_of
from service.answers.recommendations import (
    keep_candidates,
    list_query,
    list_request,
    recommendations_body,
)
from service.answers.scores import COMPONENT_NAMES, score_query
from service.serving.admission import mark_started
from service.state import AppState
from service.storage.item_rows import SECONDS_PER_DAY
from sona_jax.serve import item_queries
from sona_jax.serve.batch import Query
from sona_jax.serve.score_batches import Scores

HOURS = 24
LIST_LENGTH = 10  # items per list a viewer page shows
HISTORY_DAYS = 90  # days of an item's views its page charts, up to its latest view
TREND_DAYS = 7  # the trailing mean behind an item's trend line
RECENT_EVENTS = 20  # history rows a viewer page lists
SIMILAR_ITEMS = 10


def _samples(state: AppState) -> dict[str, Metric]:
    return {m.name: m for m in state.metrics.registry.collect()}


def _quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """The upper bound of the first bucket holding quantile ``q`` of cumulative ``buckets``
    (le, count), in the bucket's unit; None without observations."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return None
    for bound, count in buckets:
        if count >= q * total:
            return bound
    return buckets[-1][0]


def live_metrics(state: AppState) -> dict[str, Any]:
    """Cumulative counters the overview charts read every few seconds (rates come from
    differences): requests per endpoint, latency p50 / p99 per endpoint (ms, since start),
    mean batch size and engine time per batch (ms) per batcher, cache and candidate counts."""
    metrics = _samples(state)
    requests: dict[str, float] = {}
    for sample in metrics["sona_requests"].samples:
        if sample.name.endswith("_total"):
            endpoint = sample.labels["endpoint"]
            requests[endpoint] = requests.get(endpoint, 0.0) + sample.value
    latency: dict[str, list[tuple[float, float]]] = {}
    for sample in metrics["sona_request_seconds"].samples:
        if sample.name.endswith("_bucket"):
            bound = float(sample.labels["le"])
            latency.setdefault(sample.labels["endpoint"], []).append((bound, sample.value))
    batches: dict[str, dict[str, float]] = {}
    for name, field in (("sona_batch_size", "size"), ("sona_batch_seconds", "seconds")):
        for sample in metrics[name].samples:
            kind = sample.name.rsplit("_", 1)[-1]
            if kind in ("sum", "count"):
                entry = batches.setdefault(sample.labels["batcher"], {})
                entry[f"{field}_{kind}"] = sample.value
    kept, hits, misses = state.metrics.candidate_counts()
    return {
        "at": time.time(),
        "requests": requests,
        "latency_ms": {
            endpoint: {
                "p50": _ms(_quantile(sorted(b), 0.5)),
                "p99": _ms(_quantile(sorted(b), 0.99)),
            }
            for endpoint, b in latency.items()
        },
        "batches": {
            name: {
                "mean_size": b.get("size_sum", 0.0) / b["size_count"] if b.get("size_count") else 0,
                "mean_engine_ms": 1000 * b.get("seconds_sum", 0.0) / b["size_count"]
                if b.get("size_count")
                else 0,
                "calls": b.get("size_count", 0.0),
            }
            for name, b in batches.items()
        },
        "queue_depth": {
            name: batcher.pending.qsize()
            for name, batcher in (("recommend", state.recommend), ("score", state.score))
            if batcher is not None
        },
        "candidates": {"kept": kept, "hits": hits, "misses": misses},
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None or not np.isfinite(seconds) else round(1000 * seconds, 3)


async def overview(state: AppState) -> dict[str, Any]:
    """Versions, the model's age and what arrived since, rebuilds, storage and cache health."""
    runtime = state.runtime
    record = await state.store.model_record(runtime.version) if runtime else None
    rebuild = state.last_rebuild
    learning = state.settings.learning
    next_rebuild = None
    if learning.rebuild_interval_seconds and rebuild is not None:
        next_rebuild = rebuild.finished_at + learning.rebuild_interval_seconds
    return {
        "service_version": VERSION,
        "model_version": runtime.version if runtime else None,
        "model_age_seconds": time.time() - record.created_at if record else None,
        "events_since_model": state.tables.events_since_model if state.tables else None,
        "items_added_since_model": runtime.engine.items_added if runtime else None,
        "catalogue_items": len(runtime.engine.item_index) if runtime else None,
        "last_rebuild": None if rebuild is None else rebuild.__dict__,
        "next_rebuild_at": next_rebuild,
        "rebuild_interval_seconds": learning.rebuild_interval_seconds,
        "storage": {"kind": state.store.kind, "ok": await _ok(state.store.ping)},
        "cache": {"kind": type(state.cache).__name__, "ok": await _ok(state.cache.ping)},
    }


async def _ok(ping) -> bool:
    try:
        return bool(await ping())
    except Exception:  # noqa: BLE001 - a health line, not an error path
        return False


async def viewer(
    state: AppState,
    user_id: str,
    context: dict[str, str] | None,
    filters: schemas.Filters | None = None,
) -> dict[str, Any]:
    """A viewer's genre affinities, hourly pattern, recent history, their recommendations
    without and with ``context`` under ``filters`` (the API's own answers) with each item's
    score components, and what MMR and the filters changed (`list_changes`)."""
    runtime = state.engine()
    engine = runtime.engine
    _, profile = await state.profiles.entry(user_id)
    genres = list(engine.model.genre_names)
    events = (await state.store.user_events(user_id))[-RECENT_EVENTS:]

    def title(content_id: str) -> str:
        index = engine.item_index.get(content_id)
        return content_id if index is None else engine.titles[index]

    history = [
        {
            "content_id": e.content_id,
            "title": title(e.content_id),
            "watched_at": e.ts,
            "completion_rate": e.completion_rate,
            "rating": e.rating,
            "dismissed": e.dismissed,
        }
        for e in reversed(events)
    ]
    lists = {}
    for name, ctx in (("plain", None), ("in_context", context)):
        if name == "in_context" and not ctx:
            continue
        request = schemas.RecommendationRequest(
            user_id=user_id, limit=LIST_LENGTH, context=ctx, filters=filters
        )
        mark_started()  # the engine's wait limit counts from here, not from the page's start
        answer = orjson.loads(await recommendations_body(state, request, shown=False))
        ids = [r["content_id"] for r in answer["recommendations"]]
        indices = resolve(request.context).indices
        parts = await _components(state, user_id, ids, indices) if ids else None
        for position, item in enumerate(answer["recommendations"]):
            item["title"] = title(item["content_id"])
            if parts is not None:
                item["components"] = dict(
                    zip(COMPONENT_NAMES, parts.components[position].tolist(), strict=True)
                )
        lists[name] = answer
    return {
        "user_id": user_id,
        "events": profile.events,
        "genres": genres,
        "genre_affinity": np.asarray(profile.genre_affinity, float).tolist(),
        "hourly": np.asarray(profile.hourly, float).tolist()[:HOURS],
        "history": history,
        "lists": lists,
        "context": context or {},
        "filters": filters.model_dump(exclude_defaults=True, mode="json") if filters else {},
        "changes": await list_changes(state, user_id, filters, title),
    }


async def list_changes(
    state: AppState, user_id: str, filters: schemas.Filters | None, title
) -> dict[str, Any]:
    """What MMR and the filters changed in the viewer's list (no context): the list as served
    (the viewer's λ, the filters) beside the same request in relevance order (λ = 1) and
    without the filters, ranked in one engine batch with one exploration seed, so every
    difference is MMR's or the filters' own. Items MMR brought in carry their relevance rank
    (past the list: beyond its length), items it pushed out and items the filters removed
    their rank in the list they left."""
    state.engine()
    arms = state.experiments.assignment(user_id, state.serves)
    served_by = state.served_by(arms.model_version)  # the viewer's variant's version, if any
    runtime = served_by.runtime
    _, profile = await served_by.profiles.entry(user_id)
    plain = schemas.RecommendationRequest(user_id=user_id, limit=LIST_LENGTH, filters=filters)
    request = list_request(state, plain, served_by, arms)
    lam, seed = request.mmr_lambda, policy.new_request_seed()
    depth = 2 * LIST_LENGTH  # how far down the relevance order a brought-in item is placed

    def query(mmr_lambda: float, limit: int, with_filter: bool) -> Query:
        changed = replace(
            request,
            mmr_lambda=mmr_lambda,
            limit=limit,
            item_filter=request.item_filter if with_filter else None,
        )
        return list_query(changed, profile, seed)

    mark_started()
    served, relevance, unfiltered = await asyncio.gather(
        served_by.recommend.submit(query(lam, LIST_LENGTH, True)),
        served_by.recommend.submit(query(1.0, depth, True)),
        served_by.recommend.submit(query(lam, LIST_LENGTH, False)),
    )
    ids = runtime.engine.item_ids

    def listed(result) -> list[str]:
        return [ids[row[0]] for row in result["rows"]]

    shown, by_relevance, without_filters = listed(served), listed(relevance), listed(unfiltered)
    top = by_relevance[:LIST_LENGTH]

    def entry(content_id: str, rank: int | None) -> dict[str, Any]:
        return {"content_id": content_id, "title": title(content_id), "rank": rank}

    def rank_in(order: list[str], content_id: str) -> int | None:
        return order.index(content_id) + 1 if content_id in order else None

    return {
        "mmr_lambda": lam,
        "relevance_depth": depth,
        "brought_in_by_mmr": [entry(c, rank_in(by_relevance, c)) for c in shown if c not in top],
        "pushed_out_by_mmr": [entry(c, rank_in(top, c)) for c in top if c not in shown],
        "reordered_by_mmr": sum(
            1 for position, c in enumerate(shown) if c in top and top.index(c) != position
        ),
        "removed_by_filters": [
            entry(c, rank_in(without_filters, c)) for c in without_filters if c not in shown
        ]
        if filters
        else [],
    }


async def _components(
    state: AppState, user_id: str, content_ids: list[str], context: tuple[int, int, int]
) -> Scores:
    """The score endpoint's components of ``content_ids`` for the viewer in ``context``
    (device, time of day and mood indices; `scores.score_query`, the viewer's arm included):
    one engine call on an engine thread, past the request batcher (an operator's page waits
    rather than being shed while a program compiles)."""
    served, query, key = await score_query(state, user_id, context, content_ids)
    done = await asyncio.get_running_loop().run_in_executor(
        state.executor, served.runtime.score_batch, [query]
    )
    keep_candidates(state, key, done[0]["candidates"])
    return done[0]["scores"]


async def item(state: AppState, content_id: str) -> dict[str, Any] | None:
    """An item's metadata, similar items, popularity, and how often it was listed in
    experiments and watched from those lists."""
    runtime = state.engine()
    engine = runtime.engine
    row = await state.store.get_content(content_id)
    index = engine.item_index.get(content_id)
    if row is None or index is None:
        return None
    top, similarity = item_queries.similar(engine, index, SIMILAR_ITEMS, None)
    popularity = np.asarray(engine.state.global_share, float)
    trending = np.asarray(engine.state.trending, float)
    order = np.argsort(-popularity)
    rank = int(np.where(order == index)[0][0]) + 1
    listed, watched = await state.store.item_exposure_counts(content_id)
    views = await state.store.item_daily_views(content_id, HISTORY_DAYS)
    return {
        "content_id": content_id,
        "title": row.title,
        "genres": row.genres,
        "release_year": row.release_year,
        "duration_minutes": row.duration_minutes,
        "series_id": row.series_id,
        "popularity": float(popularity[index]),
        "trending": float(trending[index]),
        "popularity_rank": rank,
        "catalogue_popularity": sorted(popularity.tolist(), reverse=True)[: 10 * SIMILAR_ITEMS],
        "similar": [
            {"content_id": engine.item_ids[i], "title": engine.titles[i], "similarity": float(s)}
            for i, s in zip(top, similarity, strict=True)
        ],
        "times_listed": listed,
        "times_watched_from_a_list": watched,
        "times_listed_by_this_process": state.metrics.item_listed[content_id],
        "views_over_time": views_over_time(views),
    }


def views_over_time(daily: list[tuple[int, int]]) -> dict[str, list]:
    """Every day from the first to the last of ``daily`` ((days since the epoch, views),
    oldest first) as ISO dates, its views (0 where none) and their trailing mean over
    ``TREND_DAYS`` days (the trend line)."""
    if not daily:
        return {"days": [], "views": [], "trend": []}
    first = daily[0][0]
    views = np.zeros(daily[-1][0] - first + 1)
    for day, count in daily:
        views[day - first] = count
    window = np.ones(TREND_DAYS)
    sums = np.convolve(views, window)[: len(views)]
    counts = np.convolve(np.ones_like(views), window)[: len(views)]
    days = [
        time.strftime("%Y-%m-%d", time.gmtime((first + d) * SECONDS_PER_DAY))
        for d in range(len(views))
    ]
    return {"days": days, "views": views.tolist(), "trend": (sums / counts).round(3).tolist()}


async def experiments(state: AppState) -> list[dict[str, Any]]:
    """Every experiment with its results (running ones first)."""
    records = await state.store.experiments()
    records.sort(key=lambda r: (r.status != "running", -r.created_at))
    return [
        {
            "id": r.experiment_id,
            "name": r.name,
            "status": r.status,
            "shipped_variant": r.shipped_variant,
            "variants": r.definition["variants"],
            "results": await results_of(state, r),
        }
        for r in records
    ]
