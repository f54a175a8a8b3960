"""Profiles that cannot go back in time (SPEC 5: nothing acknowledged is lost), against the real
stores: concurrent updates of one viewer leave the newest profile cached, concurrent SQLite
writers are exact, versioned cache writes never replace a newer entry, and a Redis restarted
from a persistence file holding old entries is checked against the store before it is used."""

from __future__ import annotations

import asyncio
import functools
import shutil
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from service.serving.cache import LocalCache, RedisCache, Version
from tests.service.servers import (
    ServerProcess,
    drop_postgres_database,
    free_port,
    fresh_postgres_database,
    redis_or_skip,
    unavailable,
)

DEMO = ("--demo", "--demo-users", "150", "--demo-items", "200")


def _events(content: list[str], day: int, n: int = 3) -> list[dict]:
    return [
        {"content_id": c, "timestamp": f"2026-10-{day:02d}T1{i}:00:00Z", "completion_rate": 0.9}
        for i, c in enumerate(content[:n])
    ]


@pytest.fixture(scope="module", params=["sqlite", "postgres+redis"])
def server(request, tmp_path_factory):
    env, database = {}, None
    if request.param == "postgres+redis":
        database = asyncio.run(fresh_postgres_database())
        env = {"SONA_DATABASE_URL": database, "SONA_REDIS_URL": redis_or_skip()}
    process = ServerProcess(tmp_path_factory.mktemp("versions"), *DEMO, env=env).start()
    yield process
    process.stop()
    if database:
        asyncio.run(drop_postgres_database(database))


def _catalogue(server) -> list[str]:
    page = httpx.get(f"{server.url}/api/v1/content?limit=200", timeout=10).json()
    return [item["content_id"] for item in page["items"]]


def _at_once(calls) -> list:
    """Run the calls on threads released together (real concurrency through the server)."""
    start = threading.Barrier(len(calls))

    def run(call):
        start.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def _update(server, client, user, items, day):
    body = {"user_id": user, "viewing_events": _events(items, day, n=len(items))}
    return client.post(f"{server.url}/api/v1/profile/update", json=body, timeout=30)


def test_concurrent_updates_of_one_viewer_leave_the_newest_profile(server):
    """Eight updates at once for one viewer, 60 times: the served list never holds a watched
    item (the issue's run: the cached profile missed events in 3 of 100 such trials)."""
    content = _catalogue(server)
    stale = 0
    with httpx.Client() as client:
        for trial in range(60):
            user = str(uuid.uuid4())
            chosen = content[(trial * 24) % 150 :][:24]
            calls = [
                functools.partial(_update, server, client, user, chosen[3 * k : 3 * k + 3], k + 1)
                for k in range(8)
            ]
            assert [a.status_code for a in _at_once(calls)] == [200] * 8, trial
            body = {"user_id": user, "limit": 100}
            answer = client.post(f"{server.url}/api/v1/recommendations", json=body, timeout=30)
            shown = {r["content_id"] for r in answer.json()["recommendations"]}
            stale += bool(shown & set(chosen))
    assert stale == 0


def test_concurrent_writers_are_exact(server):
    """200 updates at once (half of them repeats): every one answered 200 (today on SQLite:
    3 of 200 answered 500, `sqlite3.InterfaceError`), each counting exactly what it added."""
    content = _catalogue(server)
    users = [str(uuid.uuid4()) for _ in range(100)]
    with httpx.Client(limits=httpx.Limits(max_connections=200)) as client:

        def update(user, day):
            return functools.partial(_update, server, client, user, content[day : day + 2], day)

        first = _at_once([update(u, 1) for u in users])
        again = _at_once([update(u, 1) for u in users[:50]] + [update(u, 5) for u in users[50:]])
    assert [a.status_code for a in first + again] == [200] * 200
    assert [a.json()["events_new"] for a in first] == [2] * 100
    assert [a.json()["events_new"] for a in again] == [0] * 50 + [2] * 50
    assert [a.json()["interaction_count"] for a in again] == [2] * 50 + [4] * 50


@pytest_asyncio.fixture(params=["memory", "redis"])
async def cache(request):
    if request.param == "memory":
        yield LocalCache(100, 60.0)
        return
    redis_or_skip()
    from tests.service.servers import REDIS_URL

    redis = RedisCache(REDIS_URL, prefix=f"sona-test-{uuid.uuid4().hex[:8]}:")
    yield redis
    await redis.close()


async def test_a_versioned_write_never_replaces_a_newer_entry(cache):
    value = (lambda tag: tag) if cache.kind == "memory" else (lambda tag: tag.encode())
    await cache.set_if_newer("k", Version((1, 5, 0)), value("five"), 60)
    await cache.set_if_newer("k", Version((1, 4, 0)), value("four"), 60)  # older: dropped
    found = await cache.get_versioned("k")
    assert found.version == Version((1, 5, 0)) and found.value == value("five") and found.trusted
    await cache.set_if_newer("k", Version((1, 5, 0)), value("five again"), 60)  # same: replaces
    assert (await cache.get_versioned("k")).value == value("five again")
    await cache.set_if_newer("k", Version((1, 6, 0)), value("six"), 60)
    assert (await cache.get_versioned("k")).version == Version((1, 6, 0))
    # Newer events but an older adapter: neither is the whole truth, so neither stays.
    await cache.set_if_newer("k", Version((1, 7, 0)), value("seven"), 60)
    await cache.set_if_newer("k", Version((1, 6, 1)), value("trained"), 60)
    assert await cache.get_versioned("k") is None


def _redis_server(port: int, directory: Path) -> subprocess.Popen:
    if shutil.which("redis-server") is None:
        unavailable("redis-server binary", FileNotFoundError("redis-server"))
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(directory),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    import redis

    while time.monotonic() < deadline:
        try:
            redis.Redis(port=port).ping()
            return process
        except redis.ConnectionError:
            time.sleep(0.1)
    raise TimeoutError("redis-server did not start")


def test_a_redis_restored_from_old_data_is_checked_against_the_store(tmp_path):
    """Redis restarted from its own dump (taken before the viewer watched more): both servers
    stop recommending what the viewer watched since, within seconds (today: 5 of 5 still there
    after 10 s)."""
    import redis

    port = free_port()
    server_redis = _redis_server(port, tmp_path)
    database = asyncio.run(fresh_postgres_database())
    env = {"SONA_DATABASE_URL": database, "SONA_REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    first = ServerProcess(tmp_path / "a", *DEMO, env=env).start()
    second = ServerProcess(tmp_path / "b", env=env).start()
    try:
        page = httpx.get(f"{first.url}/api/v1/content?limit=30", timeout=10).json()
        content = [item["content_id"] for item in page["items"]]
        user = str(uuid.uuid4())

        def update(url, items, day):
            body = {"user_id": user, "viewing_events": _events(items, day, n=len(items))}
            return httpx.post(f"{url}/api/v1/profile/update", json=body, timeout=30)

        def shown(url):
            body = {"user_id": user, "limit": 20}
            answer = httpx.post(f"{url}/api/v1/recommendations", json=body, timeout=30)
            if answer.status_code == 503:  # the first request after the restart may be slow
                assert answer.headers["Retry-After"]
                answer = httpx.post(f"{url}/api/v1/recommendations", json=body, timeout=30)
            assert answer.status_code == 200, answer.text
            return {r["content_id"] for r in answer.json()["recommendations"]}

        assert update(first.url, content[:3], 1).status_code == 200
        watched_next = sorted(shown(second.url))[:5]
        redis.Redis(port=port).save()  # the dump holds the profile before those five
        assert update(first.url, watched_next, 2).status_code == 200
        assert not shown(first.url) & set(watched_next)
        assert not shown(second.url) & set(watched_next)
        server_redis.kill()
        server_redis.wait(5)
        server_redis = _redis_server(port, tmp_path)  # loads dump.rdb: the old entries
        assert redis.Redis(port=port).dbsize() > 0
        time.sleep(1.5)  # a server notices the restart (Redis run id) within a second
        stale = []
        for _ in range(8):  # today's code: after one miss (the broken connection), old answers
            for server in (first, second):
                stale += [server.url] if shown(server.url) & set(watched_next) else []
            time.sleep(0.5)
        assert not stale
    finally:
        first.stop()
        second.stop()
        server_redis.kill()
        asyncio.run(drop_postgres_database(database))


def test_redis_is_used_again_one_back_off_after_it_comes_back(tmp_path):
    """Redis killed and started again while the server holds a pool of (now dead) connections:
    one failure drops them all, so the cache is written again within one back-off (today each
    dead connection failed in turn, a back-off apiece: up to 15 s)."""
    import redis

    port = free_port()
    cache = _redis_server(port, tmp_path)
    env = {"SONA_REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    server = ServerProcess(tmp_path / "s", *DEMO, env=env).start()
    try:
        content = _catalogue(server)[:4]
        with httpx.Client() as client:

            def update(user: str):
                return _update(server, client, user, content, 1)

            users = [str(uuid.uuid4()) for _ in range(24)]
            assert {
                a.status_code for a in _at_once([functools.partial(update, u) for u in users])
            } == {200}  # many pooled connections
            cache.kill()
            cache.wait(5)
            for _ in range(3):
                assert update(str(uuid.uuid4())).status_code == 200  # served without Redis
            cache = _redis_server(port, tmp_path)
            back = time.monotonic()
            while redis.Redis(port=port).dbsize() == 0:
                assert update(str(uuid.uuid4())).status_code == 200
                assert time.monotonic() - back < 5.0, "the cache was not used again"
                time.sleep(0.1)
            assert time.monotonic() - back < 2.5  # one back-off (1 s) and a request
    finally:
        server.stop()
        cache.kill()
