"""The SONA HTTP API (SPEC 5) on Quart: `create_app(settings)`.

Handlers validate (quart-schema + pydantic), fetch profiles, hand work to a micro-batcher or the
learner, and shape the response; no scoring logic lives here.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import numpy as np
import orjson
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from quart import Quart, Response, g, jsonify, request
from quart_schema import (
    DataSource,
    QuartSchema,
    RequestSchemaValidationError,
    document_response,
    validate_querystring,
    validate_request,
    validate_response,
)
from werkzeug.exceptions import HTTPException

from service import schemas
from service.batcher import OVERLAP_MAX_BATCH, MicroBatcher, Overloaded
from service.cache import open_cache
from service.demo import latest_model, new_request_seed, seed_store, train_from_store
from service.errors import ApiError
from service.fast_path import FastPath, HotRoute
from service.profiles import InsufficientData, Learner, Profiles, TooSoon
from service.runtime import RecommendRequest, Runtime, ScoreRequest, context_indices
from service.storage import ContentRow, EventRow, open_store
from sona_jax.bucketing import USER_BUCKETS
from sona_jax.config import SonaConfig
from sona_jax.recommend import KIND_NAMES

log = logging.getLogger("sona")
VERSION = "0.1.0"
COMPONENT_NAMES = ("collaborative", "content_based", "graph_based", "context", "lora_boost")
SERVICE_NAME = "sona-personalization-engine"


@dataclass
class Settings:
    """Everything `sona serve` decides before the app starts."""

    config: SonaConfig = field(default_factory=SonaConfig)
    data_dir: Path = Path("sona-data")
    database_url: str | None = None
    redis_url: str | None = None
    api_keys: frozenset[str] = frozenset()
    admin_keys: frozenset[str] = frozenset()
    demo: str | None = None  # "synthetic" | "ml-100k" | None
    demo_path: str | None = None
    demo_users: int = 2_000
    demo_items: int = 3_000
    model_poll_seconds: float = 10.0

    @property
    def model_dir(self) -> Path:
        return self.data_dir / "models"


def _error_response(status: int, error: str, message: str, details=None, headers=None):
    return _refusal(ApiError(status, error, message, details, headers))


def _refusal(error: ApiError) -> Response:
    response = Response(error.body(), status=error.status, content_type="application/json")
    for key, value in error.headers.items():
        response.headers[key] = value
    return response


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "sona_requests", "HTTP requests", ["endpoint", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "sona_request_seconds",
            "HTTP latency",
            ["endpoint"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1),
        )
        self.batch = Histogram(
            "sona_batch_size",
            "requests per engine call",
            ["batcher"],
            registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
        )
        self.batch_seconds = Histogram(
            "sona_batch_seconds",
            "engine call time per batch (the batch function alone)",
            ["batcher"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.5),
        )
        self.events = Counter("sona_events_stored", "viewing events stored", registry=self.registry)
        self.overloaded = Counter(
            "sona_overloaded", "requests refused with 503", registry=self.registry
        )

    def observe_batch(self, batcher: str, size: int, seconds: float) -> None:
        self.batch.labels(batcher).observe(size)
        self.batch_seconds.labels(batcher).observe(seconds)


def _explanation(kind: str, based_on_title: str | None, context: schemas.Context | None) -> str:
    if kind in ("graph_based", "content_based") and based_on_title:
        return f"Because you watched {based_on_title}"
    if kind == "collaborative":
        return "Popular with viewers who share your taste"
    if kind == "context_aware" and context is not None:
        where = f" on {context.device_type}" if context.device_type else ""
        when = f" in the {context.time_of_day}" if context.time_of_day else ""
        mood = f" for a {context.mood} mood" if context.mood else ""
        return f"Popular{where}{when}{mood}".strip()
    if kind == "exploration":
        return "Something different to explore"
    return "Popular right now"


def _freeze_heap() -> None:
    """Move everything alive now (model tables, compiled programs, tracing caches) out of the
    collector's reach: full collections then scan only what requests allocate. Without this
    they scanned the start-up heap and paused serving for 100-250 ms every few seconds."""
    gc.unfreeze()  # what a previous model version left behind may be collected now
    gc.collect()
    gc.freeze()


def create_app(settings: Settings | None = None) -> Quart:
    settings = settings or Settings()
    cfg = settings.config
    app = Quart("sona")
    app.config["MAX_CONTENT_LENGTH"] = cfg.serving.max_body_bytes
    QuartSchema(
        app,
        info={"title": "SONA personalization engine", "version": VERSION},
        security_schemes={"bearer": {"type": "http", "scheme": "bearer"}},
    )
    metrics = Metrics()
    parts: dict = {}

    # ---- lifecycle ---------------------------------------------------------------------------

    @app.before_serving
    async def start() -> None:
        if not settings.api_keys:
            log.warning("SONA_API_KEYS is not set: the API accepts unauthenticated requests")
        store = open_store(settings.database_url, settings.data_dir)
        await store.open()
        parts["store"] = store
        parts["cache"] = open_cache(
            settings.redis_url,
            cfg.serving.cache_max_entries,
            cfg.serving.recommendation_ttl_seconds or 1,
        )
        executor = ThreadPoolExecutor(
            max_workers=cfg.serving.engine_threads, thread_name_prefix="sona-engine"
        )
        parts["executor"] = executor
        if settings.demo:
            await seed_store(
                store,
                settings.demo,
                settings.demo_path,
                settings.demo_users,
                settings.demo_items,
                cfg.model.seed,
            )
        model = await latest_model(store, settings.model_dir)
        if model is None and await store.count_events() > 0:
            log.info("no model yet: training one from the store")
            model = await train_from_store(store, cfg, settings.model_dir)
        parts["runtime"] = Runtime(model, cfg) if model is not None else None
        if parts["runtime"] is not None:
            _start_engine_parts()
        parts["watcher"] = asyncio.get_running_loop().create_task(_watch_models())
        _freeze_heap()

    def _start_engine_parts() -> None:
        runtime, executor, serving = parts["runtime"], parts["executor"], cfg.serving
        batch = serving.max_batch if serving.batching else 1
        window = serving.batch_window_ms if serving.batching else 0.0
        for name, fn in (("recommend", runtime.recommend_batch), ("score", runtime.score_batch)):
            batcher = MicroBatcher(
                name,
                fn,
                batch,
                window,
                serving.max_queue,
                on_batch=partial(metrics.observe_batch, name),
                engines=serving.engine_threads,
                sizes=USER_BUCKETS,
                solo_from=None if serving.xla_threads == 1 else OVERLAP_MAX_BATCH,
            )
            batcher.start()
            parts[name] = batcher
        parts["profiles"] = Profiles(parts["store"], parts["cache"], runtime, executor)
        parts["learner"] = Learner(parts["profiles"])
        parts["learner"].start()

    async def _watch_models() -> None:
        """Reload a newer model version recorded in the store (another process trained it)."""
        while True:
            await asyncio.sleep(settings.model_poll_seconds)
            try:
                found = await parts["store"].latest_model_version()
                runtime = parts.get("runtime")
                if found and (runtime is None or found[0] > runtime.version):
                    model = await latest_model(parts["store"], settings.model_dir)
                    if model is not None:
                        if runtime is None:
                            parts["runtime"] = Runtime(model, cfg)
                            _start_engine_parts()
                        else:
                            runtime.load(model)
                        _freeze_heap()
                        log.info("serving model version %d", model.version)
            except Exception:  # noqa: BLE001 - keep watching
                log.exception("model watch failed")

    @app.after_serving
    async def stop() -> None:
        if "watcher" in parts:
            parts["watcher"].cancel()
        for name in ("recommend", "score"):
            if name in parts:
                await parts[name].drain()
        if "learner" in parts:
            await parts["learner"].stop()
        if "executor" in parts:
            parts["executor"].shutdown(wait=True)
        if "cache" in parts:
            await parts["cache"].close()
        if "store" in parts:
            await parts["store"].close()
        log.info("shutdown complete: batchers drained, learner stopped, store closed")

    # ---- cross-cutting -------------------------------------------------------------------------

    admin_routes = {("POST", "/api/v1/content"), ("POST", "/api/v1/lora/train")}

    def authorise(method: str, path: str, header: str) -> None:
        """Raise 401 without a valid key (when keys are configured), 403 for admin operations
        without an admin key."""
        if not settings.api_keys and not settings.admin_keys:
            return
        if not path.startswith("/api/"):
            return
        key = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        if key not in settings.api_keys and key not in settings.admin_keys:
            raise ApiError(
                401,
                "unauthorized",
                "a valid Authorization: Bearer key is required",
                headers={"WWW-Authenticate": "Bearer"},
            )
        needs_admin = (method, path) in admin_routes or (
            method == "DELETE" and path.startswith("/api/v1/content/")
        )
        if needs_admin and key not in settings.admin_keys:
            raise ApiError(403, "forbidden", "this operation needs an admin key")

    @app.before_request
    async def authenticate():
        g.started = time.perf_counter()
        try:
            authorise(request.method, request.path, request.headers.get("Authorization", ""))
        except ApiError as error:
            return _refusal(error)
        return None

    @app.after_request
    async def record(response: Response) -> Response:
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        if hasattr(g, "started"):
            metrics.latency.labels(endpoint).observe(time.perf_counter() - g.started)
        return response

    @app.errorhandler(RequestSchemaValidationError)
    async def invalid(error: RequestSchemaValidationError):
        problems = getattr(error.validation_error, "errors", None)
        if callable(problems):
            details = [
                {"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]}
                for e in problems(include_url=False, include_context=False)
            ]
            message = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5])
        else:
            details, message = None, f"invalid request body: {error.validation_error}"
        return _error_response(400, "validation_error", message, details)

    def refusal_of(error: Exception) -> ApiError:
        """What a handler's exception is answered with (both paths)."""
        if isinstance(error, ApiError):
            return error
        if isinstance(error, Overloaded):
            metrics.overloaded.inc()
            return ApiError(503, "overloaded", str(error), headers={"Retry-After": "1"})
        log.error("unhandled error on a hot route", exc_info=error)
        return ApiError(500, "internal_error", "the server failed; this is logged")

    @app.errorhandler(ApiError)
    async def api_error(error: ApiError):
        return _refusal(error)

    @app.errorhandler(Overloaded)
    async def overloaded(error: Overloaded):
        return _refusal(refusal_of(error))

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException):
        names = {
            400: "bad_request",
            404: "not_found",
            405: "method_not_allowed",
            413: "payload_too_large",
        }
        message = {
            413: f"request body larger than {cfg.serving.max_body_bytes} bytes",
            400: "malformed request: the body must be valid JSON",
            404: f"no route {request.method} {request.path}",
        }.get(error.code, error.description or error.name)
        return _error_response(error.code or 500, names.get(error.code, "http_error"), message)

    @app.errorhandler(Exception)
    async def unexpected(error: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _refusal(ApiError(500, "internal_error", "the server failed; this is logged"))

    def runtime() -> Runtime:
        if parts.get("runtime") is None:
            raise ApiError(
                503,
                "model_not_ready",
                "no model is loaded yet: post content and "
                "events, then run `sona train` or start with --demo",
                headers={"Retry-After": "10"},
            )
        return parts["runtime"]

    def item_index(content_id: str, field_name: str) -> int:
        index = runtime().item_index.get(content_id)
        if index is None:
            raise ApiError(
                404,
                "content_not_found",
                f"{field_name}: unknown content {content_id}",
                {"field": field_name},
            )
        return index

    # ---- health ------------------------------------------------------------------------------

    @app.get("/health")
    @validate_response(schemas.HealthResponse)
    async def health():
        return schemas.HealthResponse(status="healthy", service=SERVICE_NAME, version=VERSION)

    @app.get("/ready")
    async def ready():
        checks = {"storage": False, "cache": False, "model": parts.get("runtime") is not None}
        with contextlib.suppress(Exception):
            checks["storage"] = await parts["store"].ping()
        checks["cache"] = await parts["cache"].ping()
        ok = checks["storage"] and checks["model"]  # losing Redis degrades, it does not stop us
        body = {
            "status": "ready" if ok else "not_ready",
            "checks": checks,
            "storage": parts["store"].kind,
            "cache": parts["cache"].kind,
            "model_version": parts["runtime"].version if checks["model"] else None,
        }
        return jsonify(body), 200 if ok else 503

    @app.get("/metrics")
    async def metrics_endpoint():
        return Response(generate_latest(metrics.registry), content_type=CONTENT_TYPE_LATEST)

    # ---- recommendations ---------------------------------------------------------------------

    async def recommendations_body(data: schemas.RecommendationRequest) -> bytes:
        """The recommendations answer (JSON bytes); shared by the Quart route and the fast path."""
        rt = runtime()
        user_id = str(data.user_id)
        profile = await parts["profiles"].get(user_id)
        lam = (
            cfg.diversity.mmr_lambda
            if data.diversity_threshold is None
            else 1.0 - data.diversity_threshold
        )
        device, tod, mood = context_indices(data.context)
        ttl = cfg.serving.recommendation_ttl_seconds
        if ttl:  # lists are cached per profile version, so writes invalidate them
            key = (
                "recs:"
                + hashlib.blake2b(
                    json.dumps(
                        [
                            user_id,
                            profile.events,
                            rt.version,
                            data.limit,
                            data.exclude_watched,
                            lam,
                            device,
                            tod,
                            mood,
                        ]
                    ).encode(),
                    digest_size=16,
                ).hexdigest()
            )
            cached = await parts["cache"].get(key)
            if cached is not None:
                return cached
        result = await parts["recommend"].submit(
            RecommendRequest(
                profile,
                data.limit,
                data.exclude_watched,
                lam,
                device,
                tod,
                mood,
                new_request_seed(),
            )
        )
        ids, titles = result["item_ids"], result["titles"]
        items = []
        for item, score, kind, based in result["rows"]:
            kind_name = KIND_NAMES[kind]
            cites = based >= 0 and kind_name in ("graph_based", "content_based")
            based_on = (
                [ids[based]]
                if cites
                else ["similar viewers"]
                if kind_name == "collaborative"
                else []
            )
            items.append(
                {
                    "content_id": ids[item],
                    "confidence_score": round(score, 6),
                    "recommendation_type": kind_name,
                    "based_on": based_on,
                    "explanation": _explanation(
                        kind_name, titles[based] if cites else None, data.context
                    ),
                }
            )
        body = orjson.dumps(
            {
                "recommendations": items,
                "generated_at": datetime.now(UTC).isoformat(),
                "ttl_seconds": cfg.serving.recommendation_ttl_seconds,
            }
        )
        if ttl:
            await parts["cache"].set(key, body, ttl)
        return body

    @app.post("/api/v1/recommendations")
    @validate_request(schemas.RecommendationRequest)
    @document_response(schemas.RecommendationResponse)
    async def recommendations(data: schemas.RecommendationRequest):
        return Response(await recommendations_body(data), content_type="application/json")

    @app.post("/api/v1/recommendations/similar")
    @validate_request(schemas.SimilarRequest)
    @validate_response(schemas.SimilarResponse)
    async def similar(data: schemas.SimilarRequest):
        rt = runtime()
        index = item_index(str(data.content_id), "content_id")
        top, similarity = await asyncio.get_running_loop().run_in_executor(
            parts["executor"], rt.similar, index, data.limit
        )
        model = rt.model
        return schemas.SimilarResponse(
            similar_content=[
                schemas.SimilarItem(
                    content_id=str(model.item_ids[i]),
                    similarity=float(s),
                    title=str(model.titles[i]),
                )
                for i, s in zip(top, similarity, strict=True)
            ]
        )

    # ---- scores --------------------------------------------------------------------------------

    def _components(values: np.ndarray) -> dict[str, float]:
        """The five named score components of one item (``values``: (5,))."""
        return dict(zip(COMPONENT_NAMES, values.tolist(), strict=True))

    async def score_body(data: schemas.ScoreRequest) -> bytes:
        """The personalization score answer (JSON bytes); shared by the route and the fast path."""
        index = item_index(str(data.content_id), "content_id")
        profile = await parts["profiles"].get(str(data.user_id))
        device, tod, mood = context_indices(data.context)
        result = await parts["score"].submit(
            ScoreRequest(profile, np.array([index]), device, tod, mood)
        )
        return orjson.dumps(
            {
                "user_id": str(data.user_id),
                "content_id": str(data.content_id),
                "score": float(result["score"][0]),
                "components": _components(result["components"][0]),
            }
        )

    @app.post("/api/v1/personalization/score")
    @validate_request(schemas.ScoreRequest)
    @document_response(schemas.ScoreResponse)
    async def score(data: schemas.ScoreRequest):
        return Response(await score_body(data), content_type="application/json")

    @app.post("/api/v1/personalization/score/batch")
    @validate_request(schemas.BatchScoreRequest)
    @validate_response(schemas.BatchScoreResponse)
    async def score_batch(data: schemas.BatchScoreRequest):
        rt = runtime()
        ids = [str(c) for c in data.content_ids]
        known = [(c, rt.item_index[c]) for c in ids if c in rt.item_index]
        unknown = [c for c in ids if c not in rt.item_index]
        scores = []
        if known:
            profile = await parts["profiles"].get(str(data.user_id))
            device, tod, mood = context_indices(data.context)
            result = await parts["score"].submit(
                ScoreRequest(profile, np.array([i for _, i in known]), device, tod, mood)
            )
            scores = [
                schemas.BatchScoreItem(content_id=c, score=float(s), components=_components(comp))
                for (c, _), s, comp in zip(
                    known, result["score"], result["components"], strict=True
                )
            ]
        return schemas.BatchScoreResponse(
            user_id=str(data.user_id), scores=scores, unknown_content_ids=unknown
        )

    # ---- learning ------------------------------------------------------------------------------

    @app.post("/api/v1/profile/update")
    @validate_request(schemas.ProfileUpdateRequest)
    @validate_response(schemas.ProfileUpdateResponse)
    async def profile_update(data: schemas.ProfileUpdateRequest):
        runtime()
        user_id = str(data.user_id)
        if len(data.viewing_events) > cfg.serving.max_events_per_update:
            raise ApiError(
                400,
                "validation_error",
                f"viewing_events: at most {cfg.serving.max_events_per_update} events per update",
            )
        content_ids = [str(e.content_id) for e in data.viewing_events]
        existing = await parts["store"].existing_content(content_ids)
        missing = [i for i, c in enumerate(content_ids) if c not in existing]
        if missing:
            raise ApiError(
                404,
                "content_not_found",
                f"viewing_events.{missing[0]}.content_id: unknown content "
                f"{content_ids[missing[0]]}",
                [{"field": f"viewing_events.{i}.content_id"} for i in missing[:20]],
            )
        events = [
            EventRow(
                user_id,
                str(e.content_id),
                e.timestamp.timestamp(),
                e.completion_rate,
                e.rating,
                e.is_rewatch,
                e.dismissed,
                e.device_type,
                e.time_of_day,
            )
            for e in data.viewing_events
        ]
        new, since, profile = await parts["profiles"].record_events(user_id, events)
        metrics.events.inc(new)
        due = since >= cfg.lora.retrain_every_events and profile.events >= cfg.lora.min_events
        if due:
            parts["learner"].schedule(user_id)
        return schemas.ProfileUpdateResponse(
            status="updated",
            user_id=user_id,
            events_processed=len(events),
            events_new=new,
            interaction_count=profile.events,
            training_scheduled=due,
        )

    @app.post("/api/v1/lora/train")
    @validate_request(schemas.TrainRequest)
    @validate_response(schemas.TrainResponse)
    async def train(data: schemas.TrainRequest):
        runtime()
        user_id = str(data.user_id)
        started = time.perf_counter()
        try:
            info = await parts["learner"].train_now(user_id, data.force)
        except InsufficientData as error:
            return jsonify(
                {
                    "error": "Insufficient training data",
                    "message": f"training needs at least {cfg.lora.min_events} "
                    f"events; user has {error.count}",
                    "current_count": error.count,
                }
            ), 400
        except TooSoon as error:
            raise ApiError(
                429,
                "training_too_frequent",
                f"this user was trained less than {cfg.lora.train_interval_seconds:.0f}"
                f"s ago; retry in {error.retry_after:.0f}s or pass force=true",
                headers={"Retry-After": str(int(np.ceil(error.retry_after)))},
            ) from None
        return schemas.TrainResponse(
            status="training_completed",
            user_id=user_id,
            duration_ms=(time.perf_counter() - started) * 1000,
            training_iterations=cfg.lora.iterations,
            events_used=info["events_used"],
            loss=info["loss"],
        )

    # ---- catalogue -----------------------------------------------------------------------------

    def _content_item(row: ContentRow) -> schemas.ContentItem:
        embedding = (
            np.frombuffer(row.embedding, np.float32).tolist() if row.embedding is not None else None
        )
        return schemas.ContentItem(
            content_id=row.content_id,
            title=row.title,
            genres=row.genres,
            duration_minutes=row.duration_minutes,
            release_year=row.release_year,
            moods=row.moods,
            series_id=row.series_id,
            embedding=embedding,
        )

    @app.post("/api/v1/content")
    @validate_request(schemas.ContentUpsertRequest)
    @validate_response(schemas.ContentUpsertResponse)
    async def upsert_content(data: schemas.ContentUpsertRequest):
        dim = cfg.model.embedding_dim
        rows = []
        for i, item in enumerate(data.items):
            if item.embedding is not None and len(item.embedding) != dim:
                raise ApiError(
                    400,
                    "validation_error",
                    f"items.{i}.embedding: expected {dim} values, got {len(item.embedding)}",
                )
            rows.append(
                ContentRow(
                    str(item.content_id),
                    item.title,
                    item.genres,
                    item.duration_minutes,
                    item.release_year,
                    item.moods,
                    item.series_id,
                    np.asarray(item.embedding, np.float32).tobytes() if item.embedding else None,
                )
            )
        count = await parts["store"].upsert_content(rows)
        return schemas.ContentUpsertResponse(status="upserted", count=count)

    @app.get("/api/v1/content")
    @validate_querystring(schemas.ContentListQuery)
    @validate_response(schemas.ContentListResponse)
    async def list_content(query_args: schemas.ContentListQuery):
        rows = await parts["store"].list_content(query_args.limit, query_args.cursor)
        next_cursor = rows[-1].content_id if len(rows) == query_args.limit else None
        return schemas.ContentListResponse(
            items=[_content_item(r) for r in rows], next_cursor=next_cursor
        )

    @app.get("/api/v1/content/<content_id>")
    @validate_response(schemas.ContentItem)
    async def get_content(content_id: str):
        row = await parts["store"].get_content(_uuid_path(content_id))
        if row is None:
            raise ApiError(404, "content_not_found", f"content_id: unknown content {content_id}")
        return _content_item(row)

    @app.delete("/api/v1/content/<content_id>")
    async def delete_content(content_id: str):
        if not await parts["store"].delete_content(_uuid_path(content_id)):
            raise ApiError(404, "content_not_found", f"content_id: unknown content {content_id}")
        return jsonify({"status": "deleted", "content_id": content_id})

    def record_fast(endpoint: str, status: int, seconds: float) -> None:
        metrics.requests.labels(endpoint, str(status)).inc()
        metrics.latency.labels(endpoint).observe(seconds)

    app.asgi_app = FastPath(
        app.asgi_app,
        {
            "/api/v1/recommendations": HotRoute(
                schemas.RecommendationRequest, recommendations_body, "/api/v1/recommendations"
            ),
            "/api/v1/personalization/score": HotRoute(
                schemas.ScoreRequest, score_body, "/api/v1/personalization/score"
            ),
        },
        cfg.serving.max_body_bytes,
        authorise,
        record_fast,
        refusal_of,
    )
    app.parts = parts  # for tests and the CLI
    app.metrics = metrics
    return app


def _uuid_path(value: str) -> str:
    import uuid

    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ApiError(400, "validation_error", f"content_id: not a UUID: {value!r}") from None


__all__ = ["ApiError", "DataSource", "Settings", "create_app"]
