"""Fixtures shared by the service's tests."""

from __future__ import annotations

import pytest_asyncio

from service.storage import open_store
from tests.service.servers import drop_postgres_database, fresh_postgres_database


@pytest_asyncio.fixture(params=["sqlite", "postgres"])
async def store(request, tmp_path):
    """An empty store of each backend: SQLite under ``tmp_path`` and a fresh database on the
    real PostgreSQL (skipped when it cannot be reached, except in CI)."""
    url = await fresh_postgres_database() if request.param == "postgres" else None
    store = open_store(url, tmp_path)
    await store.open()
    yield store
    await store.close()
    if url:
        await drop_postgres_database(url)
