"""The embedded default: one SQLite file under the data directory (WAL, synchronous=FULL)."""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from pathlib import Path

import aiosqlite

from service.storage.base import (
    CatalogueEntry,
    ContentRow,
    EventRow,
    TrainingSnapshot,
    UserStateRow,
)
from service.storage.codec import (
    CONTENT_COLUMNS,
    ENTRY_COLUMNS,
    EVENT_COLUMNS,
    content_columns,
    content_from_columns,
    entry_from_columns,
    event_columns,
    event_from_columns,
)
from service.storage.migrations import SQLITE
from service.storage.sqlite_experiments import SQLiteExperiments
from service.storage.sqlite_models import SQLiteModels


def _one_at_a_time(cls):
    """Every query method of ``cls`` (its own and its mixins') holds the connection's lock for
    its whole run.

    One aiosqlite connection runs one statement at a time, but coroutines interleave their
    statements: another's commit could land inside a read transaction, or between an insert and
    the row count it reads back (`sqlite3.InterfaceError` under concurrent writers). SQLite
    writes one transaction at a time anyway, so this costs no concurrency it had.

    The request path's reads (`READ_APART`) run on a second, read-only connection under a lock
    of their own: behind the one lock, a new viewer's profile lookup waited for a catalogue
    write's commit (100 items, fsync), and under a growing catalogue the lookups' admission
    refused requests (503) for it. WAL lets readers run beside the writer; they see what was
    committed, which is everything a write acknowledged."""
    methods = {n: m for base in reversed(cls.__mro__) for n, m in vars(base).items()}
    for name, method in methods.items():
        if inspect.iscoroutinefunction(method) and name not in ("open", "close"):
            setattr(cls, name, _locked(method, "read_lock" if name in READ_APART else "lock"))
    return cls


READ_APART = ("user_events", "user_version", "load_user_state")


def _locked(method, lock: str):
    @functools.wraps(method)
    async def locked(self, *args, **kwargs):
        async with getattr(self, lock):
            return await method(self, *args, **kwargs)

    return locked


@_one_at_a_time
class SQLiteStore(SQLiteExperiments, SQLiteModels):
    kind = "sqlite"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.db: aiosqlite.Connection | None = None
        self.reader: aiosqlite.Connection | None = None  # `READ_APART`'s, read-only
        self.lock, self.read_lock = asyncio.Lock(), asyncio.Lock()

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = await aiosqlite.connect(self.path)
        # WAL + FULL sync: a committed transaction survives a crash of the process or machine.
        await self.db.execute("PRAGMA journal_mode=WAL")
        await self.db.execute("PRAGMA synchronous=FULL")
        await self.db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
        )
        async with self.db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations") as c:
            (current,) = await c.fetchone()
        for version, script in enumerate(SQLITE, start=1):
            if version > current:
                await self.db.executescript(script)
                await self.db.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?)", (version, time.time())
                )
        await self.db.commit()
        self.reader = await aiosqlite.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)

    async def close(self) -> None:
        for connection in (self.reader, self.db):
            if connection is not None:
                await connection.close()
        self.db = self.reader = None

    async def ping(self) -> bool:
        async with self.db.execute("SELECT 1") as cursor:
            return (await cursor.fetchone())[0] == 1

    async def schema_version(self) -> int:
        async with self.db.execute("SELECT MAX(version) FROM schema_migrations") as cursor:
            return (await cursor.fetchone())[0]

    async def add_events(self, events: list[EventRow]) -> int:
        now = time.time()
        # This statement's own row count: the connection's total_changes also counts what
        # other writers on it inserted meanwhile.
        cursor = await self.db.executemany(
            f"INSERT INTO events ({EVENT_COLUMNS}, received_at) VALUES (?,?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT (user_id, content_id, ts) DO NOTHING",
            [event_columns(e, now) for e in events],
        )
        await self.db.commit()
        return cursor.rowcount

    async def user_events(self, user_id: str) -> list[EventRow]:
        async with self.reader.execute(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE user_id = ? "
            # same-second events in arrival order (then by id): a deterministic latest item
            "ORDER BY ts, received_at, content_id",
            (user_id,),
        ) as cursor:
            return [event_from_columns(row) for row in await cursor.fetchall()]

    async def all_events(self) -> list[EventRow]:
        async with self.db.execute(f"SELECT {EVENT_COLUMNS} FROM events") as cursor:
            return [event_from_columns(row) for row in await cursor.fetchall()]

    async def count_events(self) -> int:
        async with self.db.execute("SELECT COUNT(*) FROM events") as cursor:
            return (await cursor.fetchone())[0]

    async def upsert_content(self, items: list[ContentRow]) -> int:
        # One writer at a time (SQLite's write lock), so MAX + 1 gives every write a new
        # revision, and every new item a new slot, in commit order.
        now = time.time()
        await self.db.executemany(
            f"INSERT INTO content ({CONTENT_COLUMNS}, updated_at, slot, revision, deleted) "
            "VALUES (?,?,?,?,?,?,?,?,?, (SELECT COALESCE(MAX(slot), 0) + 1 FROM content), "
            "(SELECT COALESCE(MAX(revision), 0) + 1 FROM content), 0) "
            "ON CONFLICT (content_id) DO UPDATE "
            "SET title=excluded.title, genres=excluded.genres, "
            "duration_minutes=excluded.duration_minutes, release_year=excluded.release_year, "
            "moods=excluded.moods, series_id=excluded.series_id, embedding=excluded.embedding, "
            "updated_at=excluded.updated_at, revision=excluded.revision, deleted=0",
            [content_columns(c, now) for c in items],
        )
        await self.db.commit()
        return len(items)

    async def get_content(self, content_id: str) -> ContentRow | None:
        async with self.db.execute(
            f"SELECT {CONTENT_COLUMNS} FROM content WHERE content_id = ? AND NOT deleted",
            (content_id,),
        ) as cursor:
            row = await cursor.fetchone()
        return content_from_columns(row) if row else None

    async def list_content(self, limit: int, cursor: str | None) -> list[ContentRow]:
        async with self.db.execute(
            f"SELECT {CONTENT_COLUMNS} FROM content WHERE content_id > ? AND NOT deleted "
            "ORDER BY content_id LIMIT ?",
            (cursor or "", limit),
        ) as c:
            return [content_from_columns(row) for row in await c.fetchall()]

    async def delete_content(self, content_id: str) -> bool:
        cursor = await self.db.execute(
            "UPDATE content SET deleted = 1, updated_at = ?, "
            "revision = (SELECT MAX(revision) + 1 FROM content) "
            "WHERE content_id = ? AND NOT deleted",
            (time.time(), content_id),
        )
        await self.db.commit()
        return cursor.rowcount > 0

    async def existing_content(self, content_ids: list[str]) -> set[str]:
        found: set[str] = set()
        unique = list(dict.fromkeys(content_ids))
        for start in range(0, len(unique), 500):
            part = unique[start : start + 500]
            marks = ",".join("?" * len(part))
            async with self.db.execute(
                f"SELECT content_id FROM content WHERE content_id IN ({marks}) AND NOT deleted",
                part,
            ) as cursor:
                found.update(row[0] for row in await cursor.fetchall())
        return found

    async def content_entries(self, content_ids: list[str]) -> list[CatalogueEntry]:
        found = []
        unique = list(dict.fromkeys(content_ids))
        for start in range(0, len(unique), 500):
            part = unique[start : start + 500]
            marks = ",".join("?" * len(part))
            async with self.db.execute(
                f"SELECT {ENTRY_COLUMNS} FROM content WHERE content_id IN ({marks}) "
                "ORDER BY revision",
                part,
            ) as cursor:
                found += [entry_from_columns(row) for row in await cursor.fetchall()]
        return found

    async def content_changes(self, since: int) -> tuple[list[CatalogueEntry], int]:
        async with self.db.execute(
            f"SELECT {ENTRY_COLUMNS} FROM content WHERE revision > ? ORDER BY revision",
            (since,),
        ) as cursor:
            rows = await cursor.fetchall()
        return [entry_from_columns(r) for r in rows], (rows[-1][-1] if rows else since)

    async def new_events(self, since: int) -> tuple[list[EventRow], int]:
        async with self.db.execute(
            f"SELECT {EVENT_COLUMNS}, rowid FROM events WHERE rowid > ? ORDER BY rowid", (since,)
        ) as cursor:
            rows = await cursor.fetchall()
        return [event_from_columns(r) for r in rows], (rows[-1][-1] if rows else since)

    async def count_events_since(self, since: int) -> int:
        async with self.db.execute("SELECT COUNT(*) FROM events WHERE rowid > ?", (since,)) as c:
            return (await c.fetchone())[0]

    async def training_snapshot(self) -> TrainingSnapshot:
        await self.db.execute("BEGIN")  # one read transaction: one consistent view
        try:
            async with self.db.execute(
                f"SELECT {CONTENT_COLUMNS} FROM content WHERE NOT deleted ORDER BY slot"
            ) as cursor:
                content = [content_from_columns(r) for r in await cursor.fetchall()]
            async with self.db.execute(f"SELECT {EVENT_COLUMNS}, rowid FROM events") as cursor:
                rows = await cursor.fetchall()
            async with self.db.execute(
                "SELECT COALESCE(MAX(revision), 0), COALESCE(MAX(slot), 0) FROM content"
            ) as cursor:
                revision, slot = await cursor.fetchone()
        finally:
            await self.db.commit()
        watermark = max((r[-1] for r in rows), default=0)
        return TrainingSnapshot(
            content, [event_from_columns(r) for r in rows], watermark, revision, slot
        )

    async def save_user_state(self, row: UserStateRow) -> int:
        cursor = await self.db.execute(
            "INSERT INTO user_state (user_id, state, events_since_training, last_trained, "
            "updated_at, adapter_revision) VALUES (?,?,COALESCE(?, 0),?,?,1) ON CONFLICT "
            "(user_id) DO UPDATE SET state=excluded.state, events_since_training=COALESCE(?, "
            "events_since_training), last_trained=excluded.last_trained, "
            "updated_at=excluded.updated_at, adapter_revision=adapter_revision + 1 "
            "RETURNING adapter_revision",
            (
                row.user_id,
                row.state,
                row.events_since_training,
                row.last_trained,
                time.time(),
                row.events_since_training,
            ),
        )
        (revision,) = await cursor.fetchone()
        await cursor.close()
        await self.db.commit()
        return revision

    async def load_user_state(self, user_id: str) -> UserStateRow | None:
        async with self.reader.execute(
            "SELECT user_id, state, events_since_training, last_trained, adapter_revision "
            "FROM user_state WHERE user_id = ?",
            (user_id,),
        ) as cursor:
            row = await cursor.fetchone()
        return UserStateRow(*row) if row else None

    async def add_events_since_training(self, user_id: str, n: int) -> int:
        await self.db.execute(
            "INSERT INTO user_state (user_id, state, events_since_training, last_trained, "
            "updated_at) VALUES (?, x'', ?, NULL, ?) ON CONFLICT (user_id) DO UPDATE "
            "SET events_since_training = events_since_training + ?",
            (user_id, n, time.time(), n),
        )
        await self.db.commit()
        async with self.db.execute(
            "SELECT events_since_training FROM user_state WHERE user_id = ?", (user_id,)
        ) as cursor:
            return (await cursor.fetchone())[0]

    async def user_version(self, user_id: str) -> tuple[int, int]:
        async with self.reader.execute(
            "SELECT (SELECT COUNT(*) FROM events WHERE user_id = ?), COALESCE((SELECT "
            "adapter_revision FROM user_state WHERE user_id = ?), 0)",
            (user_id, user_id),
        ) as cursor:
            return tuple(await cursor.fetchone())
