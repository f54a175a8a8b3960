"""Cache for profiles (with adapters) and recommendation lists: in-process or Redis.

In-process (the default) is a TTL + LRU bounded map. With ``SONA_REDIS_URL`` the cache lives in
Redis, shared by every server process, so a write's invalidation reaches all of them. Redis
errors degrade to cache misses (after one failure Redis is skipped for a short back-off, and
every pooled connection is dropped, so the first call after it reconnects), never to failed
requests.

Versioned entries (profiles) never go back in time: `set_if_newer` keeps an entry whose version
is newer in any part, and drops both when neither is newer in every part (the next read rebuilds
from the store, which has both writes). `get_versioned` also says whether the entry can be
trusted as it is: a Redis entry written under another Redis run (a restart, perhaps from a
persistence file holding old data) cannot; the caller checks it against the store.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import NamedTuple, Protocol

from cachetools import TLRUCache

from service.serving.admission import excuse

log = logging.getLogger("sona.cache")


class Version(NamedTuple):
    """Parts that only grow (e.g. model version, stored events, adapter revision)."""

    parts: tuple[int, ...]

    def order(self, other: Version) -> str:
        """ "newer", "older", "same" or "conflict" (newer in some parts, older in others)."""
        newer = any(a > b for a, b in zip(self.parts, other.parts, strict=True))
        older = any(a < b for a, b in zip(self.parts, other.parts, strict=True))
        return "conflict" if newer and older else "newer" if newer else "older" if older else "same"


class Versioned(NamedTuple):
    version: Version
    value: object
    trusted: bool  # False: written under another Redis run; check it against the store


class Cache(Protocol):
    kind: str

    async def get(self, key: str) -> bytes | None: ...
    async def set(self, key: str, value: bytes, ttl: float) -> None: ...
    async def get_versioned(self, key: str) -> Versioned | None: ...
    async def set_if_newer(self, key: str, version: Version, value, ttl: float) -> None: ...
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

    async def get_versioned(self, key: str) -> Versioned | None:
        found = self.entries.get(key)
        return None if found is None else Versioned(*found[1], trusted=True)

    async def set_if_newer(self, key: str, version: Version, value, ttl: float) -> None:
        found = self.entries.get(key)  # no await in between: atomic on the event loop
        order = "newer" if found is None else version.order(found[1][0])
        if order == "conflict":
            self.entries.pop(key, None)
        elif order != "older" and ttl > 0:
            self.entries[key] = (ttl, (version, value))

    async def delete(self, *keys: str) -> None:
        for key in keys:
            self.entries.pop(key, None)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self.entries.clear()


# A versioned Redis value: each version part as 20 decimal digits, "|", the writer's Redis run
# id (40 hex digits), then the value. Decimal, so that Lua compares parts with tonumber.
PART_DIGITS = 20
RUN_ID_CHARS = 40
SET_IF_NEWER = """
local parts = tonumber(ARGV[3])
local head = parts * 20
local current = redis.call('GETRANGE', KEYS[1], 0, head - 1)
if string.len(current) == head then
  local newer, older = false, false
  for i = 0, parts - 1 do
    local new = tonumber(string.sub(ARGV[1], i * 20 + 1, i * 20 + 20))
    local old = tonumber(string.sub(current, i * 20 + 1, i * 20 + 20))
    if new > old then newer = true elseif new < old then older = true end
  end
  if older then
    if newer then redis.call('DEL', KEYS[1]) end
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""


class RedisCache:
    """Shared cache in Redis/Valkey through ``redis.asyncio``; values above ``max_value_bytes``
    are not cached (the bound on size, together with TTLs on every key)."""

    kind = "redis"

    def __init__(
        self,
        url: str,
        prefix: str = "sona:",
        timeout: float = 0.25,
        backoff_seconds: float = 1.0,
        max_value_bytes: int = 1 << 20,
        run_check_seconds: float = 1.0,
    ):
        import redis.asyncio as redis

        self.client = redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self.set_if_newer_script = self.client.register_script(SET_IF_NEWER)
        self.prefix = prefix
        self.backoff = backoff_seconds
        self.max_value_bytes = max_value_bytes
        self.down_until = 0.0
        self.run_id = "0" * RUN_ID_CHARS  # the Redis run entries are trusted from
        self.run_check_seconds, self.run_checked = run_check_seconds, float("-inf")

    def _available(self) -> bool:
        return time.monotonic() >= self.down_until

    async def _failed(self, error: Exception) -> None:
        if self._available():
            log.warning("redis unavailable (%s); serving without it for %.0fs", error, self.backoff)
        self.down_until = time.monotonic() + self.backoff
        self.run_checked = float("-inf")  # it may come back as another run
        # Drop every pooled connection now: otherwise each dead one fails once, a back-off
        # apiece, before the cache is used again.
        with contextlib.suppress(Exception):
            await self.client.connection_pool.disconnect()

    async def _current_run(self) -> str:
        """The id of the Redis run serving us, checked at most every ``run_check_seconds``."""
        now = time.monotonic()
        if now - self.run_checked >= self.run_check_seconds:
            info = await self.client.info("server")
            run_id = str(info["run_id"])
            if run_id != self.run_id and self.run_checked != float("-inf"):
                log.warning("redis restarted (run %s): its entries are checked before use", run_id)
            self.run_id, self.run_checked = run_id, now
        return self.run_id

    async def get(self, key: str) -> bytes | None:
        if not self._available():
            return None
        started = time.monotonic()
        try:
            return await self.client.get(self.prefix + key)
        except Exception as error:  # noqa: BLE001 - any Redis failure is a miss
            await self._failed(error)
            return None
        finally:
            excuse(time.monotonic() - started)

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        if not self._available() or len(value) > self.max_value_bytes:
            return
        try:
            await self.client.set(self.prefix + key, value, px=max(1, int(ttl * 1000)))
        except Exception as error:  # noqa: BLE001
            await self._failed(error)

    async def get_versioned(self, key: str) -> Versioned | None:
        if not self._available():
            return None
        started = time.monotonic()
        try:
            run = await self._current_run()
            raw = await self.client.get(self.prefix + key)
        except Exception as error:  # noqa: BLE001
            await self._failed(error)
            return None
        finally:
            excuse(time.monotonic() - started)
        if raw is None:
            return None
        try:
            return _versioned_from_bytes(raw, run)
        except ValueError:  # unreadable entry: a miss
            return None

    async def set_if_newer(self, key: str, version: Version, value: bytes, ttl: float) -> None:
        if not self._available() or len(value) > self.max_value_bytes:
            return
        started = time.monotonic()
        try:
            run = await self._current_run()
            head = "".join(f"{part:0{PART_DIGITS}d}" for part in version.parts) + "|" + run
            await self.set_if_newer_script(
                keys=[self.prefix + key],
                args=[head.encode() + value, max(1, int(ttl * 1000)), len(version.parts)],
            )
        except Exception as error:  # noqa: BLE001
            await self._failed(error)
        finally:
            excuse(time.monotonic() - started)

    async def delete(self, *keys: str) -> None:
        if not keys:
            return
        try:
            await self.client.delete(*(self.prefix + key for key in keys))
        except Exception as error:  # noqa: BLE001
            # A failed invalidation leaves a stale shared entry behind: profiles are checked
            # against the store when the event feed names their viewer (`service.serving.profiles`).
            await self._failed(error)

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except Exception as error:  # noqa: BLE001
            await self._failed(error)
            return False

    async def close(self) -> None:
        await self.client.aclose()


def _versioned_from_bytes(raw: bytes, run: str) -> Versioned:
    """A versioned Redis value; raises ValueError on one this code did not write."""
    end = raw.index(b"|")
    parts = tuple(int(raw[i : i + PART_DIGITS]) for i in range(0, end, PART_DIGITS))
    writer = raw[end + 1 : end + 1 + RUN_ID_CHARS].decode()
    return Versioned(Version(parts), raw[end + 1 + RUN_ID_CHARS :], trusted=writer == run)


def open_cache(redis_url: str | None, max_entries: int, ttl: float) -> Cache:
    return RedisCache(redis_url) if redis_url else LocalCache(max_entries, ttl)
