"""Viewer profiles on the request path: cache -> store -> model -> empty, and writes that
refresh the profile at once and invalidate what they change."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import Executor

from service.serving.admission import Stage
from service.serving.cache import Cache, Version
from service.serving.profile_codec import (
    decode_adapter,
    encode_state,
    profile_from_bytes,
    profile_to_bytes,
)
from service.serving.runtime import Runtime
from service.settings import ServingSettings
from service.storage import EventRow, Store, UserStateRow
from sona_jax.serve import viewers
from sona_jax.serve.batch import ViewerProfile
from sona_jax.serve.engine import ServingEngine

PROFILE_KEY_VERSION = 4  # bump when the cached encoding changes


def profile_version(profile: ViewerProfile, events: int, adapter_revision: int) -> Version:
    """What a profile was built from: (model version, stored events, adapter revision)."""
    return Version((profile.model_version, events, adapter_revision))


class Profiles:
    """Profiles that cannot go back in time: every cached profile carries the version of the
    store's history it was built from (`profile_version`), a write never replaces a newer one
    (`Cache.set_if_newer`), and an entry that may be stale (its viewer named by the event feed
    since, or written under another Redis run) is checked against the store's version first."""

    def __init__(
        self,
        store: Store,
        cache: Cache,
        runtime: Runtime,
        executor: Executor,
        serving: ServingSettings,
        store_stage: Stage | None = None,
        remember: int = 0,
        namespace: str = "",
        check_first_reads: bool = False,
    ):
        """Profiles cached ``serving.profile_ttl_seconds``, built on ``executor``; store reads
        admitted by ``store_stage`` within ``serving.max_wait_ms``; the ``remember`` most recent
        viewers rebuilt before a swap; ``namespace``: cache keys of their own (a model arm's),
        whose first read of each viewer is checked against the store (``check_first_reads``)."""
        ttl, max_suspects = serving.profile_ttl_seconds, serving.cache_max_entries
        max_wait_ms = serving.max_wait_ms
        self.store, self.cache, self.runtime, self.executor = store, cache, runtime, executor
        self.ttl = ttl
        self.remember = remember  # recent viewers whose profiles a swap rebuilds first
        self.recent: OrderedDict[str, None] = OrderedDict()
        # Viewers the event feed named since their entry was last checked -> when (a count).
        self.suspects: OrderedDict[str, int] = OrderedDict()
        self.max_suspects, self.named = max_suspects, 0
        # Admission (`service.serving.admission`) covers the store path only: a cached profile costs
        # nothing to look up, and refusing those too kept a cold cache from ever warming under
        # load (every viewer refused before its profile could be cached).
        self.store_stage = store_stage or Stage("the profile lookup")
        self.max_wait_ms = max_wait_ms
        # Profiles of another served model version (a variant's) live under keys of their own:
        # sharing one key, the two versions would replace each other's entries on every read.
        self.prefix = f"profile:v{PROFILE_KEY_VERSION}:{namespace}"
        # Told which viewers this process wrote (events, adapters): other profile sets of the
        # same viewers check their entries against the store before using them again.
        self.on_write: Callable[[Iterable[str]], None] | None = None
        # A variant's profiles may find entries it cached before it was let go and brought up
        # again, written meanwhile without it hearing: each viewer's first read checks the store.
        self.verified: OrderedDict[str, None] | None = OrderedDict() if check_first_reads else None

    def key(self, user_id: str) -> str:
        return self.prefix + user_id

    async def in_engine(self, fn, *args):
        """Run ``fn(*args)`` on an engine thread, off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def written(self, user_ids: Iterable[str]) -> None:
        """The store holds new events of ``user_ids`` (written through any process): check
        their cached profiles against the store before using them again."""
        self.named += 1
        for user_id in user_ids:
            self.suspects[user_id] = self.named
            self.suspects.move_to_end(user_id)
        while len(self.suspects) > self.max_suspects:
            self.suspects.popitem(last=False)

    async def get(self, user_id: str) -> ViewerProfile:
        return (await self.entry(user_id))[1]

    async def entry(self, user_id: str) -> tuple[Version, ViewerProfile]:
        """The viewer's profile and its version: cache -> store -> model -> empty."""
        if self.remember:
            self.recent[user_id] = None
            self.recent.move_to_end(user_id)
            if len(self.recent) > self.remember:
                self.recent.popitem(last=False)
        named = self.suspects.get(user_id)
        cached = await self.cache.get_versioned(self.key(user_id))
        if cached is not None:
            profile = self._decode(cached.value)
            if profile is not None and profile.model_version == self.runtime.version:
                if cached.trusted and named is None and self._verified(user_id):
                    return cached.version, profile
                with self.store_stage.admitted(self.max_wait_ms):
                    stored_parts = await self.store.user_version(user_id)
                stored = profile_version(profile, *stored_parts)
                if stored.order(cached.version) in ("same", "older"):
                    self._checked(user_id, named)
                    if not cached.trusted:  # stamp it as checked under this Redis run
                        await self._put(user_id, cached.version, profile)
                    return cached.version, profile
        with self.store_stage.admitted(self.max_wait_ms):
            version, profile = await self.rebuild(user_id)
        self._checked(user_id, named)
        await self._put(user_id, version, profile)
        return version, profile

    def _checked(self, user_id: str, named: int | None) -> None:
        """Clear the suspicion read before the check (not one raised while it ran)."""
        if named is not None and self.suspects.get(user_id) == named:
            del self.suspects[user_id]
        if self.verified is not None:
            self.verified[user_id] = None
            self.verified.move_to_end(user_id)
            if len(self.verified) > self.max_suspects:
                self.verified.popitem(last=False)

    def _verified(self, user_id: str) -> bool:
        return self.verified is None or user_id in self.verified

    def _decode(self, cached) -> ViewerProfile | None:
        if isinstance(cached, ViewerProfile):  # the in-process cache keeps objects as they are
            return cached
        try:
            return profile_from_bytes(cached)
        except (ValueError, KeyError, TypeError):  # unreadable entry: a miss, not an error
            return None

    async def _put(self, user_id: str, version: Version, profile: ViewerProfile) -> None:
        value = profile if self.cache.kind == "memory" else profile_to_bytes(profile)
        await self.cache.set_if_newer(self.key(user_id), version, value, self.ttl)

    async def prepared(self, engine: ServingEngine) -> list[tuple[str, Version, ViewerProfile]]:
        """The recent viewers' profiles under ``engine`` (a version about to be served), so
        that their first requests after the swap find them cached."""
        recent = list(reversed(self.recent))  # requests keep adding to it meanwhile
        return [(u, *await self.rebuild(u, engine=engine)) for u in recent]

    async def put_all(self, profiles: list[tuple[str, Version, ViewerProfile]]) -> None:
        """Cache prepared profiles. One whose viewer was written meanwhile conflicts with the
        write's (newer events, older model) and leaves no entry: it is rebuilt when next read."""
        for user_id, version, profile in profiles:
            await self._put(user_id, version, profile)

    async def rebuild(
        self, user_id: str, engine: ServingEngine | None = None
    ) -> tuple[Version, ViewerProfile]:
        """From the store when the user has live state there, else from the model (of
        ``engine``, default: the served one); with the version it was built from."""
        engine = engine or self.runtime.engine
        row = await self.store.load_user_state(user_id)
        if row is None:
            profile = viewers.model_profile(engine, user_id) or viewers.empty_profile(engine)
            return profile_version(profile, *await self.store.user_version(user_id)), profile
        cfg = self.runtime.cfg
        adapter = decode_adapter(row.state, cfg.model.embedding_dim, cfg.lora.rank)
        if adapter is None:  # no adapter stored yet: keep the one the model trained, if any
            known = viewers.model_profile(engine, user_id)
            adapter = known.adapter if known is not None else None
        events = await self.store.user_events(user_id)
        profile = await self.in_engine(
            self.runtime.viewer_profile, user_id, events, adapter, row.last_trained or 0.0, engine
        )
        return profile_version(profile, len(events), row.adapter_revision), profile

    async def record_events(
        self, user_id: str, events: list[EventRow]
    ) -> tuple[int, int, ViewerProfile]:
        """Store events durably, refresh the profile, count toward retraining.

        Returns (new events, events since last training, refreshed profile).
        """
        new = await self.store.add_events(events)
        since = await self.store.add_events_since_training(user_id, new)
        version, profile = await self.rebuild(user_id)  # adapter and training time: the store's
        await self._put(user_id, version, profile)
        self._wrote(user_id)
        return new, since, profile

    async def save_trained(self, user_id: str, version: Version, profile: ViewerProfile) -> None:
        """Store a newly trained adapter (``profile``, built from ``version`` with the adapter
        replaced) and cache the profile under the adapter's new revision."""
        revision = await self.store.save_user_state(
            UserStateRow(user_id, encode_state(profile), 0, profile.last_trained or None)
        )
        model, events, _ = version.parts
        await self._put(user_id, Version((model, events, revision)), profile)
        self._wrote(user_id)

    def _wrote(self, user_id: str) -> None:
        if self.on_write is not None:
            self.on_write((user_id,))
