"""Production storage: PostgreSQL through an asyncpg pool, with versioned migrations."""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import AsyncIterator, Collection

import asyncpg

from service.storage.base import (
    CatalogueEntry,
    ContentRow,
    EventRow,
    ModelRecord,
    RebuildRecord,
    TrainingSnapshot,
    UserStateRow,
)
from service.storage.codec import (
    CONTENT_COLUMNS,
    ENTRY_COLUMNS,
    EVENT_COLUMNS,
    artifact_parts,
    content_columns,
    content_from_columns,
    entry_from_columns,
    event_from_columns,
)
from service.storage.migrations import POSTGRES
from service.storage.postgres_experiments import PostgresExperiments

_MIGRATION_LOCK = 0x50A4  # advisory lock: several servers may start at once
_TRAINER_LOCK = 0x50A5  # advisory lock: one trainer across every process and host
# Rows carry the id of the transaction that wrote them; every transaction older than the
# snapshot's xmin has ended, so reading the window [since, xmin) never skips a write that
# commits late (a sequence or a timestamp could: they are drawn before the commit).
_XMIN = "pg_snapshot_xmin(pg_current_snapshot())::text::bigint"


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


class PostgresStore(PostgresExperiments):
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
                "$5::smallint[], $6::bool[], $7::bool[], $8::text[], $9::text[], $10::text[], "
                "$11::float8[]) "
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
                [e.recommendation_id for e in events],
                [now] * len(events),
            )
        return len(inserted)

    async def user_events(self, user_id: str) -> list[EventRow]:
        rows = await self.pool.fetch(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE user_id = $1 "
            # same-second events in arrival order (then by id): a deterministic latest item
            "ORDER BY ts, received_at, content_id",
            user_id,
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
                f"INSERT INTO content ({CONTENT_COLUMNS}, updated_at) "
                "VALUES ($1,$2,$3::jsonb,$4,$5,$6::jsonb,$7,$8,$9) "
                "ON CONFLICT (content_id) DO UPDATE SET title=excluded.title, "
                "genres=excluded.genres, duration_minutes=excluded.duration_minutes, "
                "release_year=excluded.release_year, moods=excluded.moods, "
                "series_id=excluded.series_id, embedding=excluded.embedding, "
                "updated_at=excluded.updated_at, deleted=FALSE, "
                "revision=pg_current_xact_id()::text::bigint",
                [content_columns(c, now) for c in items],
            )
        return len(items)

    async def get_content(self, content_id: str) -> ContentRow | None:
        row = await self.pool.fetchrow(
            f"SELECT {CONTENT_COLUMNS} FROM content WHERE content_id = $1 AND NOT deleted",
            content_id,
        )
        return content_from_columns(row) if row else None

    async def list_content(self, limit: int, cursor: str | None) -> list[ContentRow]:
        rows = await self.pool.fetch(
            f"SELECT {CONTENT_COLUMNS} FROM content WHERE content_id > $1 AND NOT deleted "
            "ORDER BY content_id LIMIT $2",
            cursor or "",
            limit,
        )
        return [content_from_columns(row) for row in rows]

    async def delete_content(self, content_id: str) -> bool:
        status = await self.pool.execute(
            "UPDATE content SET deleted = TRUE, updated_at = $2, "
            "revision = pg_current_xact_id()::text::bigint "
            "WHERE content_id = $1 AND NOT deleted",
            content_id,
            time.time(),
        )
        return status.endswith(" 1")

    async def existing_content(self, content_ids: list[str]) -> set[str]:
        rows = await self.pool.fetch(
            "SELECT content_id FROM content WHERE content_id = ANY($1) AND NOT deleted",
            list(set(content_ids)),
        )
        return {row[0] for row in rows}

    async def content_entries(self, content_ids: list[str]) -> list[CatalogueEntry]:
        rows = await self.pool.fetch(
            f"SELECT {ENTRY_COLUMNS} FROM content WHERE content_id = ANY($1) ORDER BY revision",
            list(set(content_ids)),
        )
        return [entry_from_columns(row) for row in rows]

    async def _window(self, query: str, since: int) -> tuple[list, int]:
        """Rows of ``query`` (with $1 = since, $2 = xmin) in one snapshot, and xmin."""
        async with (
            self.pool.acquire() as connection,
            connection.transaction(isolation="repeatable_read", readonly=True),
        ):
            xmin = await connection.fetchval(f"SELECT {_XMIN}")
            rows = await connection.fetch(query, since, xmin)
        return rows, max(int(xmin), since)

    async def content_changes(self, since: int) -> tuple[list[CatalogueEntry], int]:
        rows, watermark = await self._window(
            f"SELECT {ENTRY_COLUMNS} FROM content WHERE revision >= $1 AND revision < $2 "
            "ORDER BY revision",
            since,
        )
        return [entry_from_columns(row) for row in rows], watermark

    async def new_events(self, since: int) -> tuple[list[EventRow], int]:
        rows, watermark = await self._window(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE txid >= $1 AND txid < $2", since
        )
        return [event_from_columns(row) for row in rows], watermark

    async def count_events_since(self, since: int) -> int:
        return await self.pool.fetchval("SELECT COUNT(*) FROM events WHERE txid >= $1", since)

    async def training_snapshot(self) -> TrainingSnapshot:
        async with (
            self.pool.acquire() as connection,
            connection.transaction(isolation="repeatable_read", readonly=True),
        ):
            xmin = await connection.fetchval(f"SELECT {_XMIN}")
            content = await connection.fetch(
                f"SELECT {CONTENT_COLUMNS} FROM content WHERE NOT deleted ORDER BY slot"
            )
            # Only events below xmin: those at or above it are read live, exactly once.
            events = await connection.fetch(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE txid < $1", xmin
            )
            slot = await connection.fetchval("SELECT COALESCE(MAX(slot), 0) FROM content")
        return TrainingSnapshot(
            [content_from_columns(r) for r in content],
            [event_from_columns(r) for r in events],
            int(xmin),
            int(xmin),
            int(slot),
        )

    async def save_user_state(self, row: UserStateRow) -> int:
        return await self.pool.fetchval(
            "INSERT INTO user_state (user_id, state, events_since_training, last_trained, "
            "updated_at, adapter_revision) VALUES ($1,$2,COALESCE($3::int, 0),$4,$5,1) "
            "ON CONFLICT (user_id) DO UPDATE SET state=excluded.state, events_since_training="
            "COALESCE($3::int, user_state.events_since_training), "
            "last_trained=excluded.last_trained, updated_at=excluded.updated_at, "
            "adapter_revision=user_state.adapter_revision + 1 RETURNING adapter_revision",
            row.user_id,
            row.state,
            row.events_since_training,
            row.last_trained,
            time.time(),
        )

    async def load_user_state(self, user_id: str) -> UserStateRow | None:
        row = await self.pool.fetchrow(
            "SELECT user_id, state, events_since_training, last_trained, adapter_revision "
            "FROM user_state WHERE user_id = $1",
            user_id,
        )
        return UserStateRow(*row) if row else None

    async def add_events_since_training(self, user_id: str, n: int) -> int:
        return await self.pool.fetchval(
            "INSERT INTO user_state (user_id, state, events_since_training, last_trained, "
            "updated_at) VALUES ($1, ''::bytea, $2, NULL, $3) ON CONFLICT (user_id) "
            "DO UPDATE SET events_since_training = user_state.events_since_training + $2 "
            "RETURNING events_since_training",
            user_id,
            n,
            time.time(),
        )

    async def user_version(self, user_id: str) -> tuple[int, int]:
        row = await self.pool.fetchrow(
            "SELECT (SELECT COUNT(*) FROM events WHERE user_id = $1), COALESCE((SELECT "
            "adapter_revision FROM user_state WHERE user_id = $1), 0)",
            user_id,
        )
        return int(row[0]), int(row[1])

    async def record_model_version(
        self, version: int, path: str, report: str, artifact: bytes | None = None
    ) -> None:
        digest = hashlib.sha256(artifact).hexdigest() if artifact is not None else None
        async with self.pool.acquire() as connection, connection.transaction():
            await connection.execute("DELETE FROM model_artifacts WHERE version = $1", version)
            if artifact is not None:
                await connection.executemany(
                    "INSERT INTO model_artifacts VALUES ($1, $2, $3)",
                    [(version, i, part) for i, part in enumerate(artifact_parts(artifact))],
                )
            await connection.execute(
                "INSERT INTO model_versions (version, path, created_at, report, sha256, size) "
                "VALUES ($1,$2,$3,$4::jsonb,$5,$6) ON CONFLICT (version) DO UPDATE SET "
                "path=excluded.path, report=excluded.report, sha256=excluded.sha256, "
                "size=excluded.size",
                version,
                path,
                time.time(),
                report,
                digest,
                None if artifact is None else len(artifact),
            )

    async def latest_model_version(self) -> tuple[int, str] | None:
        row = await self.pool.fetchrow(
            "SELECT version, path FROM model_versions ORDER BY version DESC LIMIT 1"
        )
        return (row[0], row[1]) if row else None

    async def model_record(self, version: int) -> ModelRecord | None:
        row = await self.pool.fetchrow(
            "SELECT version, path, created_at, report::text, sha256, size FROM model_versions "
            "WHERE version = $1",
            version,
        )
        if row is None:
            return None
        return ModelRecord(row[0], row[1], row[2], json.loads(row[3]), row[4], row[5])

    async def model_artifact(self, version: int) -> bytes | None:
        rows = await self.pool.fetch(
            "SELECT data FROM model_artifacts WHERE version = $1 ORDER BY part", version
        )
        return b"".join(row[0] for row in rows) if rows else None

    async def prune_model_versions(self, keep: int, spare: Collection[int] = ()) -> list[int]:
        async with self.pool.acquire() as connection, connection.transaction():
            old = [
                row[0]
                for row in await connection.fetch(
                    "SELECT version FROM model_versions ORDER BY version DESC OFFSET $1", keep
                )
                if row[0] not in spare
            ]
            await connection.execute("DELETE FROM model_artifacts WHERE version = ANY($1)", old)
            await connection.execute("DELETE FROM model_versions WHERE version = ANY($1)", old)
        return old

    async def next_model_version(self) -> int:
        return await self.pool.fetchval("SELECT COALESCE(MAX(version), 0) + 1 FROM model_versions")

    @contextlib.asynccontextmanager
    async def trainer_lock(self) -> AsyncIterator[bool]:
        # A session lock on a connection of its own: PostgreSQL drops it when the holder's
        # connection ends, so a killed trainer never leaves it held.
        connection = await asyncpg.connect(self.url)
        try:
            held = await connection.fetchval("SELECT pg_try_advisory_lock($1)", _TRAINER_LOCK)
            try:
                yield bool(held)
            finally:
                if held:
                    await connection.execute("SELECT pg_advisory_unlock($1)", _TRAINER_LOCK)
        finally:
            await connection.close()

    async def record_rebuild(self, record: RebuildRecord) -> None:
        await self.pool.execute(
            "INSERT INTO rebuilds (started_at, finished_at, outcome, version, message) "
            "VALUES ($1,$2,$3,$4,$5)",
            record.started_at,
            record.finished_at,
            record.outcome,
            record.version,
            record.message,
        )

    async def last_rebuild(self) -> RebuildRecord | None:
        row = await self.pool.fetchrow(
            "SELECT started_at, finished_at, outcome, version, message FROM rebuilds "
            "WHERE outcome != 'skipped' ORDER BY id DESC LIMIT 1"
        )
        return RebuildRecord(*row) if row else None
