"""Start-up: every request shape is compiled before `/ready` says ready (no request waits on a
compile), `/health` answers while start-up works and `/ready` says what it is doing, and a
restart loads its programs from the compilation cache under the data dir."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
import uuid
from pathlib import Path

import httpx
import jax.monitoring
import pytest
import pytest_asyncio
from quart.testing.app import TestApp as QuartTestApp

from service.app import Settings, create_app
from service.serving.runtime import COMPILATION_CACHE
from service.settings import ServingSettings
from service.state import app_state
from sona_jax.config import SonaConfig
from tests.service.servers import ServerProcess

SMALL = SonaConfig().with_overrides({"model": {"embedding_dim": 32}})
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


class Compiles(logging.Handler):
    """Counts XLA compilations in this process (any thread) while ``counting``, and names the
    programs (JAX's compile log)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.counting, self.seen, self.names, self.lock = False, 0, [], threading.Lock()
        jax.monitoring.register_event_duration_secs_listener(self._event)
        logging.getLogger("jax._src.interpreters.pxla").addHandler(self)

    def _event(self, name: str, _seconds: float, **_kwargs) -> None:
        if name == COMPILE_EVENT and self.counting:
            with self.lock:
                self.seen += 1

    def emit(self, record: logging.LogRecord) -> None:
        if self.counting and record.getMessage().startswith("Compiling"):
            self.names.append(record.getMessage())

    def __enter__(self):
        jax.config.update("jax_log_compiles", True)
        jax.config.update("jax_explain_cache_misses", True)
        self.counting = True
        return self

    def __exit__(self, *_):
        self.counting = False
        jax.config.update("jax_log_compiles", False)
        jax.config.update("jax_explain_cache_misses", False)  # it slows every later trace


COMPILES = Compiles()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def warmed(tmp_path_factory):
    settings = Settings(
        config=SMALL,
        serving=ServingSettings(
            warm_up=True,
            max_batch=4,
            learner_max_batch=2,
            # The next capacity compiles in the background by design (test_catalogue_growth.py);
            # here every compile counts as one a request waited for.
            prepare_next_capacity=False,
            compilation_cache=False,  # the process-wide JAX setting stays off in tests
            max_wait_ms=0,  # this test is about compiles, not admission
        ),
        data_dir=Path(tmp_path_factory.mktemp("warm")),
        demo="synthetic",
        demo_users=80,
        demo_items=150,
    )
    app = create_app(settings)
    async with QuartTestApp(app, startup_timeout=60, shutdown_timeout=60) as test_app:
        client = test_app.test_client()
        assert (await client.get("/health")).status_code == 200  # live at once
        await app_state(app).started()
        yield client, app


def _events(content: list[str], n: int, day: int = 1) -> list[dict]:
    return [
        {
            "content_id": content[i % len(content)],
            "timestamp": f"2026-{1 + (i // 28) % 12:02d}-{1 + i % 28:02d}T{day % 24:02d}:00:00Z",
            "completion_rate": 0.9,
        }
        for i in range(n)
    ]


@pytest.mark.asyncio(loop_scope="module")
async def test_no_valid_request_compiles_after_ready(warmed):
    client, app = warmed
    state = app_state(app)
    ready = await (await client.get("/ready")).get_json()
    assert ready["startup"]["phase"] == "ready" and ready["startup"]["progress"]["total"] > 5
    # `program_plan` at batch sizes 1 and 4 (max_batch 4 never fills the larger ones)
    assert ready["model"]["served_programs"] == 8
    content = [c for c in state.runtime.engine.item_ids[:150]]
    heavy, trained = str(uuid.uuid4()), str(uuid.uuid4())
    with COMPILES:
        # A viewer who watched more than the model's list widths (the wide programs) and has
        # hundreds of events (a larger profile bucket); one with enough events to train.
        for start in range(0, 300, 100):
            body = {"user_id": heavy, "viewing_events": _events(content, 100, start // 100)}
            assert (await client.post("/api/v1/profile/update", json=body)).status_code == 200
        body = {"user_id": trained, "viewing_events": _events(content[:20], 12)}
        assert (await client.post("/api/v1/profile/update", json=body)).status_code == 200
        train = await client.post("/api/v1/lora/train", json={"user_id": trained, "force": True})
        assert train.status_code == 200
        for limit in (1, 7, 20, 55, 100):
            for user in (heavy, str(uuid.uuid4())):
                body = {"user_id": user, "limit": limit}
                assert (await client.post("/api/v1/recommendations", json=body)).status_code == 200
        for n in (3, 16):  # concurrent requests fill several batch sizes
            bodies = [{"user_id": str(uuid.uuid4()), "limit": 100} for _ in range(n)]
            answers = await asyncio.gather(
                *(client.post("/api/v1/recommendations", json=b) for b in bodies)
            )
            assert {a.status_code for a in answers} == {200}
        for ids in (content[:1], content[:5], content[:150]):
            body = {"user_id": heavy, "content_ids": ids}
            batch = await client.post("/api/v1/personalization/score/batch", json=body)
            assert batch.status_code == 200
        body = {"user_id": heavy, "content_id": content[3]}
        assert (await client.post("/api/v1/personalization/score", json=body)).status_code == 200
        body = {"content_id": content[0], "limit": 100}
        assert (await client.post("/api/v1/recommendations/similar", json=body)).status_code == 200
        await asyncio.sleep(0.5)  # the learner's background trainings too
    assert COMPILES.seen == 0, "\n".join(sorted({n[:3000] for n in COMPILES.names}))


def test_health_at_once_ready_with_progress_and_a_warm_restart_loads_its_programs(tmp_path):
    config = "[model]\nembedding_dim = 32\n[serving]\nmax_batch = 2\nlearner_max_batch = 1\n"
    server = ServerProcess(
        tmp_path,
        "--demo",
        "--demo-users",
        "80",
        "--demo-items",
        "120",
        config_text=config,
        env={"SONA_COMPILATION_CACHE_DIR": ""},  # its own cache: this test is about a cold start
    )
    started = time.monotonic()
    server.start(until="/health")
    health_after = time.monotonic() - started
    phases = set()
    while (ready := httpx.get(f"{server.url}/ready", timeout=5)).status_code != 200:
        assert ready.status_code == 503
        phases.add(ready.json()["startup"]["phase"])
        time.sleep(0.05)
    cold = time.monotonic() - started
    assert "compiling the engine's programs" in phases and health_after < cold / 2
    assert any((tmp_path / COMPILATION_CACHE).iterdir())
    server.stop()
    started = time.monotonic()
    server.start()
    warm = time.monotonic() - started
    # Every loaded program runs: a new viewer (retrieval), a known one, scores, similar items.
    known = httpx.get(f"{server.url}/api/v1/content", params={"limit": 2}, timeout=30).json()
    item = known["items"][0]["content_id"]
    for path, body in (
        ("/api/v1/recommendations", {"user_id": str(uuid.uuid4()), "limit": 10}),
        ("/api/v1/personalization/score", {"user_id": str(uuid.uuid4()), "content_id": item}),
        ("/api/v1/recommendations/similar", {"content_id": item, "limit": 5}),
    ):
        answer = httpx.post(server.url + path, json=body, timeout=30)
        assert answer.status_code == 200, (path, answer.text)
    log = (tmp_path / f"server-{server.port}.log").read_text()
    server.stop()
    assert "start-up: compiling the engine's programs" in log and "ready after" in log
    loaded = re.search(r"loaded (\d+) saved programs", log)  # batch sizes 1 and 4: 8 planned,
    assert loaded and int(loaded.group(1)) >= 6  # all but those the compilation cache gave
    assert warm < cold / 2, (warm, cold)
