"""Real PostgreSQL / Redis for tests (skip when unreachable, fail in CI) and `sona serve`
subprocesses on free ports (`bench.servers`, with a small model by default)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench import ROOT, servers
from bench.servers import PG_URL, REDIS_URL, SHARED_XLA_CACHE, SMALL_CONFIG, free_port

__all__ = ["PG_URL", "REDIS_URL", "ROOT", "SHARED_XLA_CACHE", "SMALL_CONFIG", "free_port"]
IN_CI = os.environ.get("CI", "").lower() == "true"


def unavailable(what: str, error: Exception):
    message = f"{what} not reachable ({error}); start it as DEVELOPERS.md / .ci/run do"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


async def fresh_postgres_database() -> str:
    """Create an empty database on the test server; returns its URL."""
    try:
        return await servers.fresh_postgres_database(PG_URL)
    except Exception as error:  # noqa: BLE001 - any failure to connect
        unavailable("PostgreSQL at " + PG_URL, error)


async def drop_postgres_database(url: str) -> None:
    await servers.drop_postgres_database(url, PG_URL)


def redis_or_skip() -> str:
    import redis

    try:
        redis.from_url(REDIS_URL, socket_timeout=2).ping()
    except Exception as error:  # noqa: BLE001
        unavailable("Redis at " + REDIS_URL, error)
    return REDIS_URL


class ServerProcess(servers.ServerProcess):
    """`bench.servers.ServerProcess` with the tests' small model by default."""

    def __init__(
        self, data_dir: Path, *args: str, env: dict | None = None, config_text: str = SMALL_CONFIG
    ):
        super().__init__(data_dir, *args, env=env, config_text=config_text)
