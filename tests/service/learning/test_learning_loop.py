"""SPEC 4.2 with real processes: catalogue writes and events reach every server sharing a store,
`sona train --from-store` runs one at a time and a killed trainer changes nothing, every host
(another data folder) loads the new version from the database, servers hot-swap to it under
load, and habits posted through the API change recommendations after one rebuild."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from service.learning.rebuilds import EXIT_BUSY, trainer_command
from service.storage import open_store
from tests.service.servers import (
    ROOT,
    SMALL_CONFIG,
    ServerProcess,
    drop_postgres_database,
    fresh_postgres_database,
    redis_or_skip,
)

DEMO = ("--demo", "--demo-users", "150", "--demo-items", "200")
FAST = (
    SMALL_CONFIG
    + """catalogue_poll_seconds = 0.3
tables_refresh_seconds = 0.3
model_poll_seconds = 0.5
recommendation_ttl_seconds = 0
"""
)
BOUND_SECONDS = 10.0  # what "within a bounded time" is held to here (polls are 0.3-0.5 s)


@pytest.fixture(params=["sqlite", "postgres+redis"])
def shared_store(request, tmp_path):
    """(environment for every server of one store, data folder of the first host)."""
    if request.param == "sqlite":
        yield {"SONA_DATABASE_URL": f"sqlite:///{tmp_path / 'shared.db'}"}, request.param
        return
    redis_url = redis_or_skip()
    database = asyncio.run(fresh_postgres_database())
    yield {"SONA_DATABASE_URL": database, "SONA_REDIS_URL": redis_url}, request.param
    asyncio.run(drop_postgres_database(database))


def _eventually(check, bound: float = BOUND_SECONDS):
    """Seconds until ``check()`` is true (fails past ``bound``)."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > bound:
            pytest.fail(f"not within {bound:.0f}s")
        time.sleep(0.05)
    return time.monotonic() - started


def _post(server, path, body, timeout=30):
    return httpx.post(f"{server.url}{path}", json=body, timeout=timeout)


def _version(server) -> int | None:
    return httpx.get(f"{server.url}/ready", timeout=10).json()["model"]["version"]


def _trainer(env, data_dir: Path) -> subprocess.Popen:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "trainer.toml").write_text(SMALL_CONFIG)
    return subprocess.Popen(
        trainer_command(data_dir, config_path=data_dir / "trainer.toml"),
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def test_catalogue_writes_and_events_reach_another_process(shared_store, tmp_path):
    env, _ = shared_store
    first = ServerProcess(tmp_path / "a", *DEMO, env=env, config_text=FAST).start()
    second = ServerProcess(tmp_path / "b", env=env, config_text=FAST).start()
    try:
        items = [str(uuid.uuid4()) for _ in range(5)]
        body = {
            "items": [
                {"content_id": c, "title": f"Fresh {i}", "genres": ["Drama"]}
                for i, c in enumerate(items)
            ]
        }
        assert _post(first, "/api/v1/content", body).status_code == 200
        viewer = str(uuid.uuid4())
        score = {"user_id": viewer, "content_id": items[0]}
        assert _post(first, "/api/v1/personalization/score", score).status_code == 200  # at once
        _eventually(
            lambda: _post(second, "/api/v1/personalization/score", score).status_code == 200
        )
        # An event on a brand-new item through the other server counts there at once.
        late = str(uuid.uuid4())
        assert (
            _post(first, "/api/v1/content", {"items": [{"content_id": late, "title": "Late"}]})
        ).status_code == 200
        event = {
            "content_id": late,
            "timestamp": "2026-11-20T20:00:00Z",
            "completion_rate": 1.0,
        }
        update = _post(
            second, "/api/v1/profile/update", {"user_id": viewer, "viewing_events": [event]}
        )
        assert update.status_code == 200
        # Trending takes in events from every process: a hot new item tops cold-start lists.
        hot = [
            {**event, "content_id": items[1], "timestamp": f"2026-11-{d:02d}T{h:02d}:00:00Z"}
            for d in range(1, 29)
            for h in range(0, 24, 3)
        ]
        assert _post(first, "/api/v1/profile/update", {"user_id": viewer, "viewing_events": hot})
        stranger = {"user_id": str(uuid.uuid4()), "limit": 10}

        def hot_in_cold_start():
            listed = _post(second, "/api/v1/recommendations", stranger).json()["recommendations"]
            return items[1] in [r["content_id"] for r in listed]

        _eventually(hot_in_cold_start)
        # A delete through the second process stops the first serving the item.
        assert httpx.delete(f"{second.url}/api/v1/content/{items[1]}").status_code == 200
        _eventually(
            lambda: (
                _post(
                    first, "/api/v1/personalization/score", {**score, "content_id": items[1]}
                ).status_code
                == 404
            )
        )
        listed = _post(first, "/api/v1/recommendations", stranger).json()["recommendations"]
        assert items[1] not in [r["content_id"] for r in listed]
        ready = httpx.get(f"{first.url}/ready").json()["model"]
        assert ready["items_since"] == 5 and ready["events_since"] >= 1 + len(hot)
    finally:
        first.stop()
        second.stop()


def test_rebuilds_one_at_a_time_and_a_killed_trainer_changes_nothing(shared_store, tmp_path):
    env, kind = shared_store
    server = ServerProcess(tmp_path / "a", *DEMO, env=env, config_text=FAST).start()
    try:
        before = _version(server)
        store = open_store(env["SONA_DATABASE_URL"], tmp_path / "a")

        async def holding_the_lock():
            await store.open()
            try:
                async with store.trainer_lock() as held:
                    assert held
                    trainer = _trainer(env, tmp_path / "t")
                    output, _ = await asyncio.get_running_loop().run_in_executor(
                        None, trainer.communicate
                    )
                    return trainer.returncode, output.decode()
            finally:
                await store.close()

        code, output = asyncio.run(holding_the_lock())
        assert code == EXIT_BUSY, output  # two trainers never run at once

        trainer = _trainer(env, tmp_path / "t")

        async def lock_taken() -> bool:
            await store.open()
            try:
                async with store.trainer_lock() as free:
                    return not free
            finally:
                await store.close()

        def trainer_holds_lock() -> bool:
            nonlocal trainer
            if trainer.poll() == EXIT_BUSY:  # it tried while this test was looking: again
                trainer = _trainer(env, tmp_path / "t")
            return trainer.poll() is None and asyncio.run(lock_taken())

        _eventually(trainer_holds_lock, bound=60)
        trainer.send_signal(signal.SIGKILL)  # mid-run: it holds the lock, it has recorded nothing
        trainer.wait(10)
        time.sleep(1.0)
        assert _version(server) == before
        assert (
            _post(server, "/api/v1/recommendations", {"user_id": str(uuid.uuid4())}).status_code
            == 200
        )

        trainer = _trainer(env, tmp_path / "t")  # the lock died with the killed trainer
        output, _ = trainer.communicate(timeout=300)
        assert trainer.returncode == 0, output.decode()[-2000:]
        _eventually(lambda: _version(server) == before + 1)  # hot-swapped
        ready = httpx.get(f"{server.url}/ready").json()["model"]
        assert ready["last_rebuild"]["outcome"] == "succeeded"
        assert ready["last_rebuild"]["version"] == before + 1
        metrics = httpx.get(f"{server.url}/metrics").text
        assert f"sona_model_version {float(before + 1)}" in metrics
        assert "sona_last_rebuild_succeeded 1.0" in metrics

        if kind == "postgres+redis":  # another host: its own folder, the artefact from the database
            host = ServerProcess(tmp_path / "host-b", env=env, config_text=FAST).start()
            try:
                assert _version(host) == before + 1
                assert not (tmp_path / "t" / "models").samefile(tmp_path / "host-b" / "models")
                assert (tmp_path / "host-b" / "models" / f"v{before + 1:04d}").is_dir()
            finally:
                host.stop()
    finally:
        server.stop()


def test_scheduled_rebuild_under_load_answers_every_request(tmp_path):
    # A rebuild that blocked serving would hold requests for seconds; 2 s of admission wait
    # tells that apart from a busy shared machine's hiccup (one 503 in 9,666 once, with an
    # evaluation running beside the suite, at the default 250 ms).
    config = (
        FAST
        + "max_wait_ms = 2000.0\n"
        + "[learning]\nrebuild_interval_seconds = 1\nrebuild_min_events = 5\n"
    )
    server = ServerProcess(tmp_path, *DEMO, config_text=config).start()
    statuses: list[int] = []
    stop = threading.Event()

    def load():
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                body = {"user_id": str(uuid.uuid4()), "limit": 10}
                statuses.append(
                    client.post(f"{server.url}/api/v1/recommendations", json=body).status_code
                )

    try:
        before = _version(server)
        content = httpx.get(f"{server.url}/api/v1/content?limit=10").json()["items"]
        events = [
            {
                "content_id": c["content_id"],
                "timestamp": f"2026-11-{i + 1:02d}T08:00:00Z",
                "completion_rate": 1.0,
            }
            for i, c in enumerate(content)
        ]
        threads = [threading.Thread(target=load) for _ in range(2)]
        for thread in threads:
            thread.start()
        # This server compiles on first use (warm_up = false): the programs the two clients'
        # batches need are compiled before the rebuild is measured (a request queued behind a
        # compile waits past max_wait_ms; a served config compiles them before it is ready).
        _eventually(lambda: statuses.count(200) >= 50)
        statuses.clear()
        assert (
            _post(
                server,
                "/api/v1/profile/update",
                {"user_id": str(uuid.uuid4()), "viewing_events": events},
            ).status_code
            == 200
        )
        _eventually(lambda: _version(server) == before + 1, bound=180)
        time.sleep(1.0)
        stop.set()
        for thread in threads:
            thread.join()
        assert statuses and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    finally:
        stop.set()
        server.stop()


def _habit_catalogue(rng) -> tuple[list[dict], list[str], list[str]]:
    family = [str(uuid.UUID(int=int(rng.integers(2**62)) * 2 + 1)) for _ in range(60)]
    dramas = [str(uuid.UUID(int=int(rng.integers(2**62)) * 2)) for _ in range(60)]
    items = [
        {
            "content_id": c,
            "title": f"Family {i}",
            "genres": ["Children", "Animation"],
            "moods": ["uplifting", "funny"],
            "duration_minutes": 25,
        }
        for i, c in enumerate(family)
    ] + [
        {
            "content_id": c,
            "title": f"Prestige drama {i}",
            "genres": ["Drama"],
            "moods": ["dark"],
            "duration_minutes": 140,
        }
        for i, c in enumerate(dramas)
    ]
    return items, family, dramas


def test_habits_posted_through_the_api_shape_recommendations_after_one_rebuild(tmp_path):
    """300 viewers watch family titles on mobile in the morning and long dramas on TV in the
    evening; after the scheduled rebuild, new viewers asking from a phone in the morning get
    more family titles than those asking from a TV in the evening (and the reverse)."""
    import numpy as np

    rng = np.random.default_rng(7)
    config = FAST + "[learning]\nrebuild_interval_seconds = 1\nrebuild_min_events = 3000\n"
    server = ServerProcess(tmp_path, config_text=config).start(until="/health")  # no model yet
    try:
        items, family, dramas = _habit_catalogue(rng)
        assert _post(server, "/api/v1/content", {"items": items}).status_code == 200
        with httpx.Client(timeout=30) as client:
            for _ in range(300):
                events = []
                for day in rng.choice(np.arange(1, 29), 12, replace=False):
                    morning = len(events) % 2 == 0
                    events.append(
                        {
                            "content_id": str(rng.choice(family if morning else dramas)),
                            "timestamp": f"2026-11-{day:02d}T{8 if morning else 20:02d}:00:00Z",
                            "completion_rate": 0.95,
                            "device_type": "mobile" if morning else "tv",
                        }
                    )
                body = {"user_id": str(uuid.uuid4()), "viewing_events": events}
                response = client.post(f"{server.url}/api/v1/profile/update", json=body)
                assert response.status_code == 200, response.text
        _eventually(lambda: _version(server) == 1, bound=180)

        def family_share(device: str, daypart: str) -> float:
            shown = []
            for _ in range(20):
                body = {
                    "user_id": str(uuid.uuid4()),
                    "limit": 10,
                    "context": {"device_type": device, "time_of_day": daypart},
                }
                shown += [
                    r["content_id"]
                    for r in _post(server, "/api/v1/recommendations", body).json()[
                        "recommendations"
                    ]
                ]
            return float(np.mean([c in family for c in shown]))

        morning_phone = family_share("mobile", "morning")
        evening_tv = family_share("tv", "evening")
        print(f"family share: mobile/morning {morning_phone:.3f}, tv/evening {evening_tv:.3f}")
        assert morning_phone - evening_tv >= 0.3
    finally:
        server.stop()
