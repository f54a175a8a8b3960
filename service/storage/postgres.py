"""Production storage: PostgreSQL through an asyncpg pool, with versioned migrations."""

from __future__ import annotations

import time

import asyncpg

from service.storage.base import ContentRow, EventRow, UserStateRow
from service.storage.codec import (
    EVENT_COLUMNS,
    content_columns,
    content_from_columns,
    event_from_columns,
)
from service.storage.migrations import POSTGRES

_MIGRATION_LOCK = 0x50A4  # advisory lock: several servers may start at once


async def migrate(connection: asyncpg.Connection) -> int:
    """Apply pending migrations under an advisory lock; returns the schema version."""
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION)"
        )
        current = await connection.fetchval(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations"
        )
        for version, script in enumerate(POSTGRES, start=1):
            if version > current:
                await connection.execute(script)
                await connection.execute(
                    "INSERT INTO schema_migrations VALUES ($1, $2)", version, time.time()
                )
        return len(POSTGRES)


class PostgresStore:
    kind = "postgres"

    def __init__(self, url: str, min_size: int = 1, max_size: int = 8):
        self.url = url
        self.pool: asyncpg.Pool | None = None
        self.sizes = (min_size, max_size)

    async def open(self) -> None:
        self.pool = await asyncpg.create_pool(
            self.url, min_size=self.sizes[0], max_size=self.sizes[1], command_timeout=30
        )
        async with self.pool.acquire() as connection:
            await migrate(connection)

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()
            self.pool = None

    async def ping(self) -> bool:
        return await self.pool.fetchval("SELECT 1") == 1

    async def schema_version(self) -> int:
        return await self.pool.fetchval("SELECT MAX(version) FROM schema_migrations")

    async def add_events(self, events: list[EventRow]) -> int:
        now = time.time()
        async with self.pool.acquire() as connection, connection.transaction():
            inserted = await connection.fetch(
                f"INSERT INTO events ({EVENT_COLUMNS}, received_at) "
                "SELECT * FROM unnest($1::text[], $2::text[], $3::float8[], $4::real[], "
                "$5::smallint[], $6::bool[], $7::bool[], $8::text[], $9::text[], $10::float8[]) "
                "ON CONFLICT (user_id, content_id, ts) DO NOTHING RETURNING 1",
                [e.user_id for e in events],
                [e.content_id for e in events],
                [e.ts for e in events],
                [e.completion_rate for e in events],
                [e.rating for e in events],
                [e.is_rewatch for e in events],
                [e.dismissed for e in events],
                [e.device_type for e in events],
                [e.time_of_day for e in events],
                [now] * len(events),
            )
        return len(inserted)

    async def user_events(self, user_id: str) -> list[EventRow]:
        rows = await self.pool.fetch(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE user_id = $1 ORDER BY ts", user_id
        )
        return [event_from_columns(row) for row in rows]

    async def all_events(self) -> list[EventRow]:
        return [
            event_from_columns(row)
            for row in await self.pool.fetch(f"SELECT {EVENT_COLUMNS} FROM events")
        ]

    async def count_events(self) -> int:
        return await self.pool.fetchval("SELECT COUNT(*) FROM events")

    async def upsert_content(self, items: list[ContentRow]) -> int:
        now = time.time()
        async with self.pool.acquire() as connection, connection.transaction():
            await connection.executemany(
                "INSERT INTO content VALUES ($1,$2,$3::jsonb,$4,$5,$6::jsonb,$7,$8,$9) "
                "ON CONFLICT (content_id) DO UPDATE SET title=excluded.title, "
                "genres=excluded.genres, duration_minutes=excluded.duration_minutes, "
                "release_year=excluded.release_year, moods=excluded.moods, "
                "series_id=excluded.series_id, embedding=excluded.embedding, "
                "updated_at=excluded.updated_at",
                [content_columns(c, now) for c in items],
            )
        return len(items)

    async def get_content(self, content_id: str) -> ContentRow | None:
        row = await self.pool.fetchrow("SELECT * FROM content WHERE content_id = $1", content_id)
        return content_from_columns(row) if row else None

    async def list_content(self, limit: int, cursor: str | None) -> list[ContentRow]:
        rows = await self.pool.fetch(
            "SELECT * FROM content WHERE content_id > $1 ORDER BY content_id LIMIT $2",
            cursor or "",
            limit,
        )
        return [content_from_columns(row) for row in rows]

    async def delete_content(self, content_id: str) -> bool:
        status = await self.pool.execute("DELETE FROM content WHERE content_id = $1", content_id)
        return status.endswith(" 1")

    async def existing_content(self, content_ids: list[str]) -> set[str]:
        rows = await self.pool.fetch(
            "SELECT content_id FROM content WHERE content_id = ANY($1)", list(set(content_ids))
        )
        return {row[0] for row in rows}

    async def save_user_state(self, row: UserStateRow) -> None:
        await self.pool.execute(
            "INSERT INTO user_state VALUES ($1,$2,COALESCE($3::int, 0),$4,$5) ON CONFLICT "
            "(user_id) DO UPDATE SET state=excluded.state, events_since_training="
            "COALESCE($3::int, user_state.events_since_training), "
            "last_trained=excluded.last_trained, updated_at=excluded.updated_at",
            row.user_id,
            row.state,
            row.events_since_training,
            row.last_trained,
            time.time(),
        )

    async def load_user_state(self, user_id: str) -> UserStateRow | None:
        row = await self.pool.fetchrow(
            "SELECT user_id, state, events_since_training, "
            "last_trained FROM user_state WHERE user_id = $1",
            user_id,
        )
        return UserStateRow(*row) if row else None

    async def add_events_since_training(self, user_id: str, n: int) -> int:
        return await self.pool.fetchval(
            "INSERT INTO user_state VALUES ($1, ''::bytea, $2, NULL, $3) ON CONFLICT (user_id) "
            "DO UPDATE SET events_since_training = user_state.events_since_training + $2 "
            "RETURNING events_since_training",
            user_id,
            n,
            time.time(),
        )

    async def record_model_version(self, version: int, path: str, report: str) -> None:
        await self.pool.execute(
            "INSERT INTO model_versions VALUES ($1,$2,$3,$4::jsonb) ON CONFLICT (version) DO "
            "UPDATE SET path=excluded.path, report=excluded.report",
            version,
            path,
            time.time(),
            report,
        )

    async def latest_model_version(self) -> tuple[int, str] | None:
        row = await self.pool.fetchrow(
            "SELECT version, path FROM model_versions ORDER BY version DESC LIMIT 1"
        )
        return (row[0], row[1]) if row else None
