"""Faults with real processes: SIGKILL after acknowledged writes, Redis going away, two servers
sharing one PostgreSQL and one Redis (fuzzing the live API: test_fuzz)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from service.storage.sqlite import SQLiteStore
from tests.service.servers import (
    ServerProcess,
    drop_postgres_database,
    free_port,
    fresh_postgres_database,
    redis_or_skip,
    unavailable,
)

DEMO = ("--demo", "--demo-users", "150", "--demo-items", "200")


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory):
    server = ServerProcess(tmp_path_factory.mktemp("sona-sqlite"), *DEMO).start()
    yield server
    server.stop()


def _content(server, n=30):
    page = httpx.get(f"{server.url}/api/v1/content?limit={n}", timeout=10).json()
    return [item["content_id"] for item in page["items"]]


def _update(url, user, content_ids, day=1):
    events = [
        {"content_id": c, "timestamp": f"2026-10-{day + i:02d}T21:00:00Z", "completion_rate": 0.8}
        for i, c in enumerate(content_ids)
    ]
    return httpx.post(
        f"{url}/api/v1/profile/update", json={"user_id": user, "viewing_events": events}, timeout=30
    )


def test_sigkill_after_acknowledged_updates_loses_nothing(sqlite_server):
    content = _content(sqlite_server)
    users = [str(uuid.uuid4()) for _ in range(12)]
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda u: _update(sqlite_server.url, u, content[:5]), users))
    assert all(r.status_code == 200 for r in responses)
    sqlite_server.kill()  # no shutdown, no flush: only what was committed survives

    async def stored():
        store = SQLiteStore(sqlite_server.data_dir / "sona.db")
        await store.open()
        counts = {u: len(await store.user_events(u)) for u in users}
        await store.close()
        return counts

    assert asyncio.run(stored()) == {u: 5 for u in users}
    sqlite_server.start()
    again = _update(sqlite_server.url, users[0], content[:5]).json()
    assert again["events_new"] == 0 and again["interaction_count"] == 5
    recs = httpx.post(
        f"{sqlite_server.url}/api/v1/recommendations",
        json={"user_id": users[0], "limit": 10},
        timeout=30,
    ).json()
    assert not {r["content_id"] for r in recs["recommendations"]} & set(content[:5])


def test_requests_survive_redis_going_away(tmp_path):
    if shutil.which("redis-server") is None:
        unavailable("redis-server binary", FileNotFoundError("redis-server"))
    port = free_port()
    redis = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        server = ServerProcess(
            tmp_path, *DEMO, env={"SONA_REDIS_URL": f"redis://127.0.0.1:{port}/0"}
        ).start()
        try:
            content = _content(server)
            user = str(uuid.uuid4())
            assert _update(server.url, user, content[:3]).status_code == 200
            assert httpx.get(f"{server.url}/ready").json()["cache"] == "redis"
            redis.kill()
            redis.wait(5)
            for i in range(5):
                response = httpx.post(
                    f"{server.url}/api/v1/recommendations",
                    json={"user_id": user, "limit": 5},
                    timeout=30,
                )
                assert response.status_code == 200
                assert _update(server.url, user, content[3 + i : 4 + i], day=10).status_code == 200
            ready = httpx.get(f"{server.url}/ready").json()
            assert ready["status"] == "ready" and ready["checks"]["cache"] is False
        finally:
            server.stop()
    finally:
        redis.kill()


def test_two_servers_share_postgres_and_redis(tmp_path):
    redis_url = redis_or_skip()
    database = asyncio.run(fresh_postgres_database())
    env = {"SONA_DATABASE_URL": database, "SONA_REDIS_URL": redis_url}
    first = ServerProcess(tmp_path, *DEMO, env=env).start()
    second = ServerProcess(tmp_path, env=env).start()  # same store and model, no seeding
    try:
        _content(first, 40)
        user = str(uuid.uuid4())
        before = httpx.post(
            f"{second.url}/api/v1/recommendations", json={"user_id": user, "limit": 20}, timeout=30
        ).json()
        watched = [r["content_id"] for r in before["recommendations"]][:5]
        assert _update(first.url, user, watched).status_code == 200
        after = httpx.post(
            f"{second.url}/api/v1/recommendations", json={"user_id": user, "limit": 20}, timeout=30
        ).json()
        shown = {r["content_id"] for r in after["recommendations"]}
        assert not shown & set(watched)  # the update through one shows through the other
        assert httpx.get(f"{second.url}/ready").json()["storage"] == "postgres"
    finally:
        first.stop()
        second.stop()
        asyncio.run(drop_postgres_database(database))


def test_graceful_shutdown_exits_cleanly(tmp_path):
    server = ServerProcess(tmp_path, *DEMO).start()
    content = _content(server)
    assert _update(server.url, str(uuid.uuid4()), content[:2]).status_code == 200
    code = server.stop()
    assert code in (0, -15)  # uvicorn re-raises the SIGTERM it handled, after shutting down
    log = (tmp_path / f"server-{server.port}.log").read_text()
    assert "shutdown complete: batchers drained" in log
