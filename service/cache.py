"""Cache for profiles (with adapters) and recommendation lists: in-process or Redis.

In-process (the default) is a TTL + LRU bounded map. With ``SONA_REDIS_URL`` the cache lives in
Redis, shared by every server process, so a write's invalidation reaches all of them. Redis
errors degrade to cache misses (after one failure Redis is skipped for a short back-off), never
to failed requests.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from cachetools import TLRUCache

log = logging.getLogger("sona.cache")


class Cache(Protocol):
    kind: str

    async def get(self, key: str) -> bytes | None: ...
    async def set(self, key: str, value: bytes, ttl: float) -> None: ...
    async def delete(self, *keys: str) -> None: ...
    async def ping(self) -> bool: ...
    async def close(self) -> None: ...


class LocalCache:
    """Bounded in-process cache (LRU) with a TTL per entry. Values are kept as given (objects
    as well as bytes), since nothing leaves the process."""

    kind = "memory"

    def __init__(self, max_entries: int, ttl: float):
        self.default_ttl = ttl
        self.entries: TLRUCache = TLRUCache(
            maxsize=max_entries, ttu=lambda _key, value, now: now + value[0]
        )

    async def get(self, key: str):
        found = self.entries.get(key)
        return None if found is None else found[1]

    async def set(self, key: str, value, ttl: float) -> None:
        if ttl > 0:
            self.entries[key] = (ttl, value)

    async def delete(self, *keys: str) -> None:
        for key in keys:
            self.entries.pop(key, None)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self.entries.clear()


class RedisCache:
    """Shared cache in Redis/Valkey through ``redis.asyncio``; values above ``max_value_bytes``
    are not cached (the bound on size, together with TTLs on every key)."""

    kind = "redis"

    def __init__(
        self,
        url: str,
        prefix: str = "sona:",
        timeout: float = 0.25,
        backoff_seconds: float = 2.0,
        max_value_bytes: int = 1 << 20,
    ):
        import redis.asyncio as redis

        self.client = redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self.prefix = prefix
        self.backoff = backoff_seconds
        self.max_value_bytes = max_value_bytes
        self.down_until = 0.0

    def _available(self) -> bool:
        return time.monotonic() >= self.down_until

    def _failed(self, error: Exception) -> None:
        if self._available():
            log.warning("redis unavailable (%s); serving without it for %.0fs", error, self.backoff)
        self.down_until = time.monotonic() + self.backoff

    async def get(self, key: str) -> bytes | None:
        if not self._available():
            return None
        try:
            return await self.client.get(self.prefix + key)
        except Exception as error:  # noqa: BLE001 - any Redis failure is a miss
            self._failed(error)
            return None

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        if not self._available() or len(value) > self.max_value_bytes:
            return
        try:
            await self.client.set(self.prefix + key, value, px=max(1, int(ttl * 1000)))
        except Exception as error:  # noqa: BLE001
            self._failed(error)

    async def delete(self, *keys: str) -> None:
        if not keys:
            return
        try:
            await self.client.delete(*(self.prefix + key for key in keys))
        except Exception as error:  # noqa: BLE001
            # A failed invalidation must not leave a stale shared entry behind: retry once
            # when Redis is back is not possible here, so make it visible.
            self._failed(error)

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except Exception as error:  # noqa: BLE001
            self._failed(error)
            return False

    async def close(self) -> None:
        await self.client.aclose()


def open_cache(redis_url: str | None, max_entries: int, ttl: float) -> Cache:
    return RedisCache(redis_url) if redis_url else LocalCache(max_entries, ttl)
