"""User profiles on the request path: cache -> store -> model -> empty, and writes that refresh
the profile at once and invalidate what they change."""

from __future__ import annotations

import asyncio
import contextlib
import time
from concurrent.futures import Executor

import numpy as np

from service.cache import Cache
from service.runtime import Profile, Runtime
from service.storage import EventRow, Store, UserStateRow
from sona_jax.model import STORAGE_DTYPE

PROFILE_TTL_SECONDS = 3600.0


def encode_state(profile: Profile) -> bytes:
    """What is stored per user: preference and adapter in float16 (9,216 bytes at d=512, r=8)."""
    return np.concatenate(
        [
            profile.preference.astype(STORAGE_DTYPE).ravel(),
            profile.adapter.astype(STORAGE_DTYPE).ravel(),
        ]
    ).tobytes()


def decode_adapter(state: bytes, dim: int, rank: int) -> np.ndarray | None:
    values = np.frombuffer(state, STORAGE_DTYPE)
    if values.size != dim + dim * rank:
        return None  # empty or from a model with other shapes: start from zero
    return values[dim:].reshape(dim, rank).copy()


class Profiles:
    def __init__(self, store: Store, cache: Cache, runtime: Runtime, executor: Executor):
        self.store, self.cache, self.runtime, self.executor = store, cache, runtime, executor

    @staticmethod
    def key(user_id: str) -> str:
        return f"profile:v2:{user_id}"  # bump when the encoding changes

    async def _in_engine(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def get(self, user_id: str) -> Profile:
        cached = await self.cache.get(self.key(user_id))
        if cached is not None:
            profile = self._decode(cached)
            if profile is not None and profile.model_version == self.runtime.version:
                return profile
        profile = await self.rebuild(user_id)
        await self._put(user_id, profile)
        return profile

    def _decode(self, cached) -> Profile | None:
        if isinstance(cached, Profile):  # the in-process cache keeps objects as they are
            return cached
        try:
            return Profile.from_bytes(cached)
        except (ValueError, KeyError, TypeError):  # unreadable entry: a miss, not an error
            return None

    async def _put(self, user_id: str, profile: Profile) -> None:
        value = profile if self.cache.kind == "memory" else profile.to_bytes()
        await self.cache.set(self.key(user_id), value, PROFILE_TTL_SECONDS)

    async def rebuild(
        self, user_id: str, adapter: np.ndarray | None = None, last_trained: float | None = None
    ) -> Profile:
        """From the store when the user has live state there, else from the model."""
        row = await self.store.load_user_state(user_id)
        if row is None:
            return self.runtime.model_profile(user_id) or self.runtime.empty_profile()
        cfg = self.runtime.cfg
        if adapter is None:
            adapter = decode_adapter(row.state, cfg.model.embedding_dim, cfg.lora.rank)
        if adapter is None:  # no adapter stored yet: keep the one the model trained, if any
            known = self.runtime.model_profile(user_id)
            adapter = known.adapter if known is not None else None
        events = await self.store.user_events(user_id)
        trained = row.last_trained if last_trained is None else last_trained
        return await self._in_engine(
            self.runtime.build_profile, user_id, events, adapter, trained or 0.0
        )

    async def record_events(self, user_id: str, events: list[EventRow]) -> tuple[int, int, Profile]:
        """Store events durably, refresh the profile, count toward retraining.

        Returns (new events, events since last training, refreshed profile).
        """
        new = await self.store.add_events(events)
        since = await self.store.add_events_since_training(user_id, new)
        profile = await self.rebuild(user_id)  # adapter and last training come from the store
        await self.save(user_id, profile, reset_counter=False)
        return new, since, profile

    async def save(self, user_id: str, profile: Profile, reset_counter: bool) -> None:
        await self.store.save_user_state(
            UserStateRow(
                user_id,
                encode_state(profile),
                0 if reset_counter else None,
                profile.last_trained or None,
            )
        )
        await self._put(user_id, profile)


class InsufficientData(Exception):
    def __init__(self, count: int):
        super().__init__(count)
        self.count = count


class TooSoon(Exception):
    def __init__(self, retry_after: float):
        super().__init__(retry_after)
        self.retry_after = retry_after


class Learner:
    """Background adapter training: users due (every N new events, or asked) are trained
    together in one vmapped call, off the request path."""

    def __init__(self, profiles: Profiles, max_batch: int = 64, window_s: float = 0.05):
        self.profiles = profiles
        self.queue: asyncio.Queue = asyncio.Queue()
        self.max_batch, self.window = max_batch, window_s
        self.task: asyncio.Task | None = None
        self.trained = 0

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run(), name="learner")

    def schedule(self, user_id: str) -> None:
        self.queue.put_nowait((user_id, False, None))

    async def train_now(self, user_id: str, force: bool) -> dict:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((user_id, force, future))
        return await future

    async def _run(self) -> None:
        while True:
            batch = [await self.queue.get()]
            deadline = time.monotonic() + self.window
            while len(batch) < self.max_batch and (left := deadline - time.monotonic()) > 0:
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), left))
                except TimeoutError:
                    break
            try:
                await self._train(batch)
            except Exception as error:  # noqa: BLE001 - keep learning after a failed batch
                for _, _, future in batch:
                    if future is not None and not future.done():
                        future.set_exception(error)

    async def _train(self, batch) -> None:
        cfg = self.profiles.runtime.cfg.lora
        now = time.time()
        jobs, waiters = [], []
        seen_users = {}
        for user_id, force, future in batch:
            if user_id in seen_users:  # one training per user per batch; share the result
                waiters[seen_users[user_id]][1].append(future)
                continue
            events = await self.profiles.store.user_events(user_id)
            if len(events) < cfg.min_events:
                if future is not None and not future.done():
                    future.set_exception(InsufficientData(len(events)))
                continue
            profile = await self.profiles.get(user_id)
            wait = profile.last_trained + cfg.train_interval_seconds - now
            if wait > 0 and not force:
                if future is not None and not future.done():
                    future.set_exception(TooSoon(wait))
                continue
            seen_users[user_id] = len(jobs)
            jobs.append((profile, events))
            waiters.append((user_id, [future]))
        if not jobs:
            return
        started = time.perf_counter()
        results = await self.profiles._in_engine(self.profiles.runtime.train_batch, jobs, now)
        duration_ms = (time.perf_counter() - started) * 1000
        for (profile, _), (user_id, futures), result in zip(jobs, waiters, results, strict=True):
            profile.adapter = result["adapter"]
            profile.last_trained = now
            await self.profiles.save(user_id, profile, reset_counter=True)
            self.trained += 1
            info = {
                "duration_ms": duration_ms,
                "events_used": result["events_used"],
                "loss": result["loss"],
                "loss_before": result["loss_before"],
                "batch_users": len(jobs),
            }
            for future in futures:
                if future is not None and not future.done():
                    future.set_result(info)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
