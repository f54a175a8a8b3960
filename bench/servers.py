"""`sona serve` in a subprocess on a free port, waited on until it answers, and empty PostgreSQL
databases: what benchmarks and the service's tests start servers with."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from bench import ROOT

PG_URL = os.environ.get("SONA_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("SONA_TEST_REDIS", "redis://127.0.0.1:6379/0")
# One compilation cache for every server a run starts (same shapes, same programs): each start
# loads what an earlier one compiled instead of compiling it again.
SHARED_XLA_CACHE = os.environ.get("SONA_TEST_XLA_CACHE") or tempfile.mkdtemp(prefix="sona-xla-")
SMALL_CONFIG = """
[model]
embedding_dim = 32
[serving]
batch_window_ms = 1.0
warm_up = false
"""


async def fresh_postgres_database(server_url: str = PG_URL) -> str:
    """Create an empty database on the server at ``server_url``; returns its URL."""
    import asyncpg

    connection = await asyncpg.connect(server_url, timeout=3)
    name = f"sona_test_{uuid.uuid4().hex[:12]}"
    await connection.execute(f"CREATE DATABASE {name}")
    await connection.close()
    return server_url.rsplit("/", 1)[0] + "/" + name


async def drop_postgres_database(url: str, server_url: str = PG_URL) -> None:
    import asyncpg

    connection = await asyncpg.connect(server_url)
    name = url.rsplit("/", 1)[1]
    await connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    await connection.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """`sona serve` in a subprocess; `start()` waits until /ready answers 200. Its programs go
    to the run's `SHARED_XLA_CACHE` unless ``env`` sets ``SONA_COMPILATION_CACHE_DIR`` ("": the
    server's own, under its data dir)."""

    def __init__(
        self, data_dir: Path, *args: str, env: dict | None = None, config_text: str = SMALL_CONFIG
    ):
        self.port = free_port()
        self.data_dir = data_dir
        config = data_dir / f"small-{self.port}.toml"
        data_dir.mkdir(parents=True, exist_ok=True)
        config.write_text(config_text)
        self.command = [
            sys.executable,
            "-m",
            "service.cli",
            "serve",
            "--port",
            str(self.port),
            "--data-dir",
            str(data_dir),
            "--config",
            str(config),
            *args,
        ]
        self.env = {**os.environ, "SONA_COMPILATION_CACHE_DIR": SHARED_XLA_CACHE, **(env or {})}
        self.process: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0, until: str = "/ready") -> ServerProcess:
        """Start and wait until ``until`` answers 200 (``/health`` for a server with no model)."""
        log = open(self.data_dir / f"server-{self.port}.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            self.command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"server exited: {(self.data_dir / f'server-{self.port}.log').read_text()[-3000:]}"
                )
            try:
                if httpx.get(self.url + until, timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.kill()  # leave nothing running behind a failed start
        raise TimeoutError(f"server did not answer {until} with 200 in {timeout:.0f}s")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> int:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            return self.process.wait(30)
        return self.process.returncode if self.process else 0
