"""The engine inside the service: a loaded model version, user profiles, and the batched calls
the micro-batchers run (in a worker thread, off the event loop).

Everything here that touches JAX takes whole batches: `recommend_batch`, `score_batch`,
`train_batch`. Profiles are plain numpy records, serialised for the cache and the store.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, fields

import jax
import jax.numpy as jnp
import numpy as np

from service.storage import EventRow
from sona_jax import lora, recommend
from sona_jax.bucketing import USER_BUCKETS, bucket_size, pad_rows
from sona_jax.config import SonaConfig
from sona_jax.datasets.schema import DEVICE_TYPES, TIMES_OF_DAY, EventLog, time_of_day_of_hour
from sona_jax.events import engine_events
from sona_jax.model import STORAGE_DTYPE, TrainedModel
from sona_jax.profile import event_bucket, profile_arrays
from sona_jax.serving_state import serving_state
from sona_jax.sources import RequestBatch, UserBatch
from sona_jax.tables import MOODS, per_user_table
from sona_jax.training_data import event_targets, recent_events, with_negatives

OUTPUT_BUCKETS = (10, 20, 50, 100)
LIST_BUCKETS = (64, 256, 1024, 4096)


@dataclass
class Profile:
    """Everything needed to serve one user. Arrays are 1-D rows of the engine's batches."""

    preference: np.ndarray  # (d,) float32
    adapter: np.ndarray  # (d, r) float16
    recent_items: np.ndarray  # (Lh,) int32, -1 padded
    recent_weights: np.ndarray  # (Lh,) float32
    seen: np.ndarray  # (n,) int32
    dismissed: np.ndarray  # (m,) int32
    genre_affinity: np.ndarray  # (G,)
    hourly: np.ndarray  # (24,)
    qualifying: float
    events: int
    pool_index: int
    last_trained: float = 0.0
    model_version: int = 0

    def to_bytes(self) -> bytes:
        """Compact cache encoding: a JSON header (scalars, dtypes, shapes) then raw arrays."""
        arrays, scalars = [], {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                arrays.append((f.name, value.dtype.str, list(value.shape)))
            else:
                scalars[f.name] = value
        header = json.dumps({"arrays": arrays, "scalars": scalars}).encode()
        body = b"".join(
            np.ascontiguousarray(getattr(self, name)).tobytes() for name, _, _ in arrays
        )
        return len(header).to_bytes(4, "little") + header + body

    @staticmethod
    def from_bytes(data: bytes) -> Profile:
        size = int.from_bytes(data[:4], "little")
        header = json.loads(data[4 : 4 + size])
        values, offset = dict(header["scalars"]), 4 + size
        for name, dtype, shape in header["arrays"]:
            count = int(np.prod(shape))
            values[name] = np.frombuffer(data, dtype, count, offset).reshape(shape)
            offset += count * np.dtype(dtype).itemsize
        return Profile(**values)


@dataclass
class RecommendRequest:
    profile: Profile
    limit: int
    exclude_watched: bool
    mmr_lambda: float
    device: int
    time_of_day: int
    mood: int
    seed: int


@dataclass
class ScoreRequest:
    profile: Profile
    items: np.ndarray  # (C,) item indices
    device: int = -1
    time_of_day: int = -1
    mood: int = -1


def context_indices(context) -> tuple[int, int, int]:
    """(device, time_of_day, mood) indices of a request context (an object with
    ``device_type``, ``time_of_day`` and ``mood`` attributes, or None); -1 where absent."""
    if context is None:
        return -1, -1, -1
    return (
        _index_of(DEVICE_TYPES, context.device_type),
        _index_of(TIMES_OF_DAY, context.time_of_day),
        _index_of(MOODS, context.mood),
    )


def _index_of(values: tuple[str, ...], value: str | None) -> int:
    return values.index(value) if value in values else -1


def _bucket(n: int, buckets: tuple[int, ...]) -> int:
    for size in buckets:
        if n <= size:
            return size
    return int(2 ** np.ceil(np.log2(n)))


class Runtime:
    """A model version on device plus the functions the batchers call."""

    def __init__(self, model: TrainedModel, cfg: SonaConfig):
        self.lock = threading.Lock()
        self.cfg = cfg
        self.weights = recommend.fusion_weights(cfg)
        self.load(model)

    # ---- model ------------------------------------------------------------------------------

    def load(self, model: TrainedModel) -> None:
        """Swap in a model version (hot reload: requests in flight finish on the old one)."""
        state = serving_state(model)
        index = {content_id: i for i, content_id in enumerate(model.item_ids.tolist())}
        users = {user_id: i for i, user_id in enumerate(model.user_ids.tolist())}
        unit = np.asarray(model.base.item_embeddings)
        item_ids, titles = model.item_ids.tolist(), [str(t) for t in model.titles.tolist()]
        t = model.tables
        widths = {
            name: max(
                minimum,
                _bucket(int((t[f"history_{name}"] >= 0).sum(1).max(initial=1)), LIST_BUCKETS),
            )
            for name, minimum in (("seen", 64), ("dismissed", 64))
        }
        with self.lock:
            self.model, self.state = model, state
            self.item_index, self.user_index = index, users
            self.unit_embeddings = unit
            self.item_genres = jnp.asarray(model.item_genres, jnp.float32)
            self.list_widths = widths
            self.item_ids, self.titles = item_ids, titles
        if self.cfg.serving.warm_up:
            self.warm_up()

    def warm_up(self) -> None:
        """Compile every user bucket a batch can fill, for the default list length, before
        serving traffic (buckets above ``serving.max_batch``, or above 1 with batching off,
        are never used; each recommend program takes about 2.4 s to compile here)."""
        serving = self.cfg.serving
        largest = serving.max_batch if serving.batching else 1
        empty = self.empty_profile()
        for size in USER_BUCKETS:
            self.recommend_batch([RecommendRequest(empty, 20, True, 0.7, -1, -1, -1, 0)] * size)
            self.score_batch([ScoreRequest(empty, np.zeros(1, np.int32))] * size)
            if size >= largest:
                break

    @property
    def version(self) -> int:
        return self.model.version

    # ---- profiles -----------------------------------------------------------------------------

    def empty_profile(self) -> Profile:
        m, cfg = self.model, self.cfg
        d = m.base.item_embeddings.shape[1]
        g = len(m.genre_names)
        return Profile(
            preference=np.zeros(d, np.float32),
            adapter=np.zeros((d, cfg.lora.rank), STORAGE_DTYPE),
            recent_items=np.full(cfg.collaborative.history_items, -1, np.int32),
            recent_weights=np.zeros(cfg.collaborative.history_items, np.float32),
            seen=np.zeros(0, np.int32),
            dismissed=np.zeros(0, np.int32),
            genre_affinity=np.full(g, 1.0 / max(g, 1), np.float32),
            hourly=np.full(24, 1 / 24, np.float32),
            qualifying=0.0,
            events=0,
            pool_index=-1,
            model_version=m.version,
        )

    def model_profile(self, user_id: str) -> Profile | None:
        """The user's profile as of the model's training, or None if the model never saw them."""
        row = self.user_index.get(user_id)
        if row is None:
            return None
        m, t = self.model, self.model.tables
        seen = t["history_seen"][row]
        dismissed = t["history_dismissed"][row]
        return Profile(
            preference=m.users.preference[row].astype(np.float32),
            adapter=m.users.adapter[row],
            recent_items=t["history_recent_items"][row],
            recent_weights=t["history_recent_weights"][row],
            seen=seen[seen >= 0],
            dismissed=dismissed[dismissed >= 0],
            genre_affinity=m.users.genre_affinity[row],
            hourly=m.users.hourly[row],
            qualifying=float(t["qualifying"][row]),
            events=int(m.users.interaction_count[row]),
            pool_index=row,
            model_version=m.version,
        )

    def event_log(self, events: list[EventRow]) -> EventLog:
        """One user's events as an engine log (items unknown to the model are left out)."""
        known = [e for e in events if e.content_id in self.item_index]
        tod = [
            TIMES_OF_DAY.index(e.time_of_day) if e.time_of_day in TIMES_OF_DAY else -1
            for e in known
        ]
        ts = np.array([e.ts for e in known], np.float64)
        derived = time_of_day_of_hour(((ts % 86400) // 3600).astype(np.int64))
        return EventLog.build(
            user=np.zeros(len(known), np.int32),
            item=np.array([self.item_index[e.content_id] for e in known], np.int32),
            timestamp=ts,
            completion=np.array([e.completion_rate for e in known], np.float32),
            rating=np.array([e.rating or 0 for e in known], np.float32),
            dismissed=np.array([e.dismissed for e in known], bool),
            rewatch=np.array([e.is_rewatch for e in known], bool),
            device=np.array(
                [
                    DEVICE_TYPES.index(e.device_type) if e.device_type in DEVICE_TYPES else -1
                    for e in known
                ],
                np.int8,
            ),
            time_of_day=np.where(
                np.array(tod, np.int64) >= 0, np.array(tod, np.int64), derived
            ).astype(np.int8)
            if known
            else None,
        )

    def build_profile(
        self,
        user_id: str,
        events: list[EventRow],
        adapter: np.ndarray | None,
        last_trained: float,
        now: float | None = None,
    ) -> Profile:
        """Recompute a profile from all of a user's events (SPEC 3.1, O(events))."""
        now = time.time() if now is None else now
        log = self.event_log(events)
        profile = self.empty_profile()
        profile.events = len(events)
        profile.last_trained = last_trained
        profile.pool_index = self.user_index.get(user_id, -1)
        if adapter is not None:
            profile.adapter = adapter.astype(STORAGE_DTYPE)
        if len(log) == 0:
            return profile
        engine = engine_events(log, now, pad_to=event_bucket(len(log)), pad_user=1)
        with self.lock:
            embeddings, genres = self.state.base.item_embeddings, self.item_genres
        arrays = profile_arrays(engine, embeddings, genres, 1, self.cfg.preference)
        weights = np.asarray(arrays.weights)[: len(log)]
        engaged = weights > 0
        recent, recent_w = per_user_table(
            log.user[engaged],
            log.item[engaged],
            -log.timestamp[engaged],
            weights[engaged],
            1,
            width=self.cfg.collaborative.history_items,
        )
        profile.preference = np.asarray(arrays.preference[0])
        profile.genre_affinity = np.asarray(arrays.genre_affinity[0])
        profile.hourly = np.asarray(arrays.hourly[0])
        profile.recent_items, profile.recent_weights = recent[0], recent_w[0]
        profile.seen = np.unique(log.item).astype(np.int32)
        profile.dismissed = np.unique(log.item[log.dismissed]).astype(np.int32)
        profile.qualifying = float(engaged.sum())
        return profile

    # ---- batched engine calls ------------------------------------------------------------------

    def _user_batch(self, profiles: list[Profile], bucket: int) -> UserBatch:
        def stack(name):
            return pad_rows(np.stack([getattr(p, name) for p in profiles]), bucket)

        def lists(name, fill=-1):
            longest = max([len(getattr(p, name)) for p in profiles] + [1])
            width = max(self.list_widths[name], _bucket(longest, LIST_BUCKETS))
            out = np.full((bucket, width), fill, np.int32)
            for row, p in enumerate(profiles):
                values = getattr(p, name)[:width]
                out[row, : len(values)] = values
            return out

        pool_index = pad_rows(np.array([p.pool_index for p in profiles], np.int32), bucket, -1)
        return UserBatch(
            preference=stack("preference"),
            adapter=stack("adapter"),
            recent_items=pad_rows(np.stack([p.recent_items for p in profiles]), bucket, -1),
            recent_weights=stack("recent_weights"),
            seen=lists("seen"),
            dismissed=lists("dismissed"),
            genre_affinity=stack("genre_affinity"),
            hourly=stack("hourly"),
            qualifying=pad_rows(np.array([p.qualifying for p in profiles], np.float32), bucket),
            pool_index=pool_index,
        )

    def recommend_batch(self, requests: list[RecommendRequest]) -> list[dict]:
        """Top-``limit`` lists for a batch of requests (one jitted call): per request, ``rows``
        of (item index, score, kind index, based-on item index or -1), best first, and the
        model's ``item_ids`` and ``titles`` the indices refer to."""
        n = len(requests)
        bucket = bucket_size(n)
        n_out = _bucket(max(r.limit for r in requests), OUTPUT_BUCKETS)

        def column(name, dtype, fill):
            return pad_rows(np.array([getattr(r, name) for r in requests], dtype), bucket, fill)

        request = RequestBatch(
            device=column("device", np.int32, -1),
            time_of_day=column("time_of_day", np.int32, -1),
            mood=column("mood", np.int32, -1),
            exclude_watched=column("exclude_watched", bool, True),
            mmr_lambda=column("mmr_lambda", np.float32, 1.0),
            seed=column("seed", np.int32, 0),
        )
        with self.lock:
            state, item_ids, titles = self.state, self.item_ids, self.titles
        out = recommend.recommend(
            state,
            self._user_batch([r.profile for r in requests], bucket),
            request,
            column("limit", np.int32, 1),
            self.weights,
            self.cfg,
            n_out,
        )
        # One conversion per output for the whole batch: per-row numpy slicing cost more.
        items, scores, kinds, based_on = (
            np.asarray(x)[:n].tolist() for x in (out.items, out.scores, out.kind, out.based_on)
        )
        return [
            {
                "rows": [
                    row
                    for row in zip(
                        items[i][: r.limit],
                        scores[i][: r.limit],
                        kinds[i][: r.limit],
                        based_on[i][: r.limit],
                        strict=True,
                    )
                    if row[0] >= 0
                ],
                "item_ids": item_ids,
                "titles": titles,
            }
            for i, r in enumerate(requests)
        ]

    def score_batch(self, requests: list[ScoreRequest]) -> list[dict]:
        """Scores and components of each request's items (one jitted call)."""
        n = len(requests)
        bucket = bucket_size(n)
        width = _bucket(max(len(r.items) for r in requests), (1, 8, 32, 128, 512, 1024))
        items = np.full((bucket, width), -1, np.int32)
        for row, r in enumerate(requests):
            items[row, : len(r.items)] = r.items
        request = RequestBatch(
            device=pad_rows(np.array([r.device for r in requests], np.int32), bucket, -1),
            time_of_day=pad_rows(np.array([r.time_of_day for r in requests], np.int32), bucket, -1),
            mood=pad_rows(np.array([r.mood for r in requests], np.int32), bucket, -1),
            exclude_watched=np.zeros(bucket, bool),
            mmr_lambda=np.ones(bucket, np.float32),
            seed=np.zeros(bucket, np.int32),
        )
        with self.lock:
            state = self.state
        out = recommend.score_items(
            state,
            self._user_batch([r.profile for r in requests], bucket),
            request,
            items,
            self.weights,
            self.cfg,
        )
        score, components = np.asarray(out.score), np.asarray(out.components)
        return [
            {"score": score[row, : len(r.items)], "components": components[row, : len(r.items)]}
            for row, r in enumerate(requests)
        ]

    def similar(self, item: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
        """Items most similar to ``item`` by base-tier embedding cosine (itself excluded)."""
        with self.lock:
            vectors = self.state.base.item_embeddings
        similarity = np.array(_cosine_to(vectors, vectors[item]))
        similarity[item] = -np.inf
        top = np.argsort(-similarity)[:limit]
        return top, similarity[top]

    def train_batch(self, jobs: list[tuple[Profile, list[EventRow]]], now: float) -> list[dict]:
        """Retrain the adapters of several users in one vmapped call (SPEC 3.2)."""
        lcfg = self.cfg.lora
        bucket = bucket_size(len(jobs)) if len(jobs) <= 128 else len(jobs)
        logs = [self.event_log(events) for _, events in jobs]
        user = np.concatenate([np.full(len(log), row, np.int32) for row, log in enumerate(logs)])
        merged = EventLog.build(
            user=user,
            item=np.concatenate([log.item for log in logs]),
            timestamp=np.concatenate([log.timestamp for log in logs]),
            completion=np.concatenate([log.completion for log in logs]),
            rating=np.concatenate([log.rating for log in logs]),
            dismissed=np.concatenate([log.dismissed for log in logs]),
        )
        targets = event_targets(
            merged.completion, merged.rating, merged.dismissed, self.cfg.preference
        )
        rows = np.arange(bucket) % len(jobs)
        recent = recent_events(
            merged.user, merged.item, merged.timestamp, targets, rows, lcfg.max_events
        )
        with self.lock:
            base = self.state.base
            n_items = base.item_embeddings.shape[0]
        key = jax.random.PRNGKey(int(now * 1000) % (2**31))
        items, item_targets, mask = with_negatives(key, recent, n_items, lcfg)
        preferences = np.stack([jobs[r][0].preference for r in rows]).astype(np.float32)
        adapters = np.stack([jobs[r][0].adapter for r in rows])
        batch = lora.prepare_training_batch(
            base, jnp.asarray(preferences), jnp.asarray(adapters), items, item_targets, mask
        )
        result = lora.train_adapters(batch, lcfg)
        new = np.asarray(
            lora.apply_adapter_updates(jnp.asarray(adapters), batch.preference, result.delta)
        ).astype(STORAGE_DTYPE)
        before, after = np.asarray(result.loss_before), np.asarray(result.loss_after)
        used = np.minimum(recent.counts, lcfg.max_events)
        return [
            {
                "adapter": new[row],
                "loss_before": float(before[row]),
                "loss": float(after[row]),
                "events_used": int(used[row]),
            }
            for row in range(len(jobs))
        ]


@jax.jit
def _cosine_to(vectors: jnp.ndarray, query: jnp.ndarray) -> jnp.ndarray:
    return vectors @ query
