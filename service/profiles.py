"""Viewer profiles on the request path: cache -> store -> model -> empty, and writes that
refresh the profile at once and invalidate what they change."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from concurrent.futures import Executor

import numpy as np

from service.cache import Cache
from service.codec import decode_adapter, encode_state, profile_from_bytes, profile_to_bytes
from service.runtime import Runtime
from service.storage import EventRow, Store, UserStateRow
from sona_jax.serve.batch import ViewerProfile
from sona_jax.serve.engine import ServingEngine

PROFILE_KEY_VERSION = 3  # bump when the cached encoding changes


class Profiles:
    def __init__(
        self,
        store: Store,
        cache: Cache,
        runtime: Runtime,
        executor: Executor,
        ttl: float,
        remember: int = 0,
    ):
        self.store, self.cache, self.runtime, self.executor = store, cache, runtime, executor
        self.ttl = ttl
        self.remember = remember  # recent viewers whose profiles a swap rebuilds first
        self.recent: OrderedDict[str, None] = OrderedDict()
        self.changed: set[str] | None = None  # viewers written while a swap prepares profiles

    @staticmethod
    def key(user_id: str) -> str:
        return f"profile:v{PROFILE_KEY_VERSION}:{user_id}"

    async def in_engine(self, fn, *args):
        """Run ``fn(*args)`` on an engine thread, off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def get(self, user_id: str) -> ViewerProfile:
        if self.remember:
            self.recent[user_id] = None
            self.recent.move_to_end(user_id)
            if len(self.recent) > self.remember:
                self.recent.popitem(last=False)
        cached = await self.cache.get(self.key(user_id))
        if cached is not None:
            profile = self._decode(cached)
            if profile is not None and profile.model_version == self.runtime.version:
                return profile
        profile = await self.rebuild(user_id)
        await self._put(user_id, profile)
        return profile

    def _decode(self, cached) -> ViewerProfile | None:
        if isinstance(cached, ViewerProfile):  # the in-process cache keeps objects as they are
            return cached
        try:
            return profile_from_bytes(cached)
        except (ValueError, KeyError, TypeError):  # unreadable entry: a miss, not an error
            return None

    async def _put(self, user_id: str, profile: ViewerProfile) -> None:
        value = profile if self.cache.kind == "memory" else profile_to_bytes(profile)
        await self.cache.set(self.key(user_id), value, self.ttl)

    async def prepared(self, engine: ServingEngine) -> list[tuple[str, ViewerProfile]]:
        """The recent viewers' profiles under ``engine`` (a version about to be served), so
        that their first requests after the swap find them cached."""
        self.changed = set()
        viewers = list(reversed(self.recent))  # requests keep adding to it meanwhile
        return [(u, await self.rebuild(u, engine=engine)) for u in viewers]

    async def put_all(self, profiles: list[tuple[str, ViewerProfile]]) -> None:
        """Cache prepared profiles, except those of viewers written meanwhile (theirs would
        miss the write; they are rebuilt on their next request)."""
        changed, self.changed = self.changed or set(), None
        for user_id, profile in profiles:
            if user_id not in changed:
                await self._put(user_id, profile)

    async def rebuild(
        self,
        user_id: str,
        adapter: np.ndarray | None = None,
        last_trained: float | None = None,
        engine: ServingEngine | None = None,
    ) -> ViewerProfile:
        """From the store when the user has live state there, else from the model (of
        ``engine``, default: the served one)."""
        engine = engine or self.runtime.engine
        row = await self.store.load_user_state(user_id)
        if row is None:
            return engine.model_profile(user_id) or engine.empty_profile()
        cfg = self.runtime.cfg
        if adapter is None:
            adapter = decode_adapter(row.state, cfg.model.embedding_dim, cfg.lora.rank)
        if adapter is None:  # no adapter stored yet: keep the one the model trained, if any
            known = engine.model_profile(user_id)
            adapter = known.adapter if known is not None else None
        events = await self.store.user_events(user_id)
        trained = row.last_trained if last_trained is None else last_trained
        return await self.in_engine(
            self.runtime.viewer_profile, user_id, events, adapter, trained or 0.0, engine
        )

    async def record_events(
        self, user_id: str, events: list[EventRow]
    ) -> tuple[int, int, ViewerProfile]:
        """Store events durably, refresh the profile, count toward retraining.

        Returns (new events, events since last training, refreshed profile).
        """
        new = await self.store.add_events(events)
        since = await self.store.add_events_since_training(user_id, new)
        profile = await self.rebuild(user_id)  # adapter and last training come from the store
        await self.save(user_id, profile, reset_counter=False)
        return new, since, profile

    async def save(self, user_id: str, profile: ViewerProfile, reset_counter: bool) -> None:
        if self.changed is not None:
            self.changed.add(user_id)
        await self.store.save_user_state(
            UserStateRow(
                user_id,
                encode_state(profile),
                0 if reset_counter else None,
                profile.last_trained or None,
            )
        )
        await self._put(user_id, profile)
