"""The SQLite store's model versions and rebuilds (`Store` model methods): version records with
their artefacts in parts, pruning, the next version number, the trainer's lock file and the
rebuild log. Mixed into `SQLiteStore`, whose connection, lock and path it uses."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import time
from collections.abc import AsyncIterator, Collection

from service.storage.base import ModelRecord, RebuildRecord
from service.storage.codec import artifact_parts


class SQLiteModels:
    async def record_model_version(
        self, version: int, path: str, report: str, artifact: bytes | None = None
    ) -> None:
        digest = hashlib.sha256(artifact).hexdigest() if artifact is not None else None
        await self.db.execute("DELETE FROM model_artifacts WHERE version = ?", (version,))
        if artifact is not None:
            await self.db.executemany(
                "INSERT INTO model_artifacts VALUES (?,?,?)",
                [(version, i, part) for i, part in enumerate(artifact_parts(artifact))],
            )
        # The version row last: a host that sees it finds the whole artefact.
        await self.db.execute(
            "INSERT OR REPLACE INTO model_versions (version, path, created_at, report, sha256, "
            "size) VALUES (?,?,?,?,?,?)",
            (
                version,
                path,
                time.time(),
                report,
                digest,
                None if artifact is None else len(artifact),
            ),
        )
        await self.db.commit()

    async def latest_model_version(self) -> tuple[int, str] | None:
        async with self.db.execute(
            "SELECT version, path FROM model_versions ORDER BY version DESC LIMIT 1"
        ) as cursor:
            row = await cursor.fetchone()
        return (row[0], row[1]) if row else None

    async def model_record(self, version: int) -> ModelRecord | None:
        async with self.db.execute(
            "SELECT version, path, created_at, report, sha256, size FROM model_versions "
            "WHERE version = ?",
            (version,),
        ) as cursor:
            row = await cursor.fetchone()
        return (
            ModelRecord(row[0], row[1], row[2], json.loads(row[3]), row[4], row[5]) if row else None
        )

    async def model_artifact(self, version: int) -> bytes | None:
        async with self.db.execute(
            "SELECT data FROM model_artifacts WHERE version = ? ORDER BY part", (version,)
        ) as cursor:
            parts = [row[0] for row in await cursor.fetchall()]
        return b"".join(parts) if parts else None

    async def prune_model_versions(self, keep: int, spare: Collection[int] = ()) -> list[int]:
        async with self.db.execute(
            "SELECT version FROM model_versions ORDER BY version DESC LIMIT -1 OFFSET ?", (keep,)
        ) as cursor:
            old = [row[0] for row in await cursor.fetchall() if row[0] not in spare]
        for version in old:
            await self.db.execute("DELETE FROM model_artifacts WHERE version = ?", (version,))
            await self.db.execute("DELETE FROM model_versions WHERE version = ?", (version,))
        await self.db.commit()
        return old

    async def next_model_version(self) -> int:
        async with self.db.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM model_versions") as c:
            return (await c.fetchone())[0]

    @contextlib.asynccontextmanager
    async def trainer_lock(self) -> AsyncIterator[bool]:
        # A file lock beside the database: the OS drops it when the holder dies.
        with open(self.path.with_name(self.path.name + ".trainer.lock"), "a+b") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    async def record_rebuild(self, record: RebuildRecord) -> None:
        await self.db.execute(
            "INSERT INTO rebuilds (started_at, finished_at, outcome, version, message) "
            "VALUES (?,?,?,?,?)",
            (record.started_at, record.finished_at, record.outcome, record.version, record.message),
        )
        await self.db.commit()

    async def last_rebuild(self) -> RebuildRecord | None:
        async with self.db.execute(
            "SELECT started_at, finished_at, outcome, version, message FROM rebuilds "
            "WHERE outcome != 'skipped' ORDER BY id DESC LIMIT 1"
        ) as cursor:
            row = await cursor.fetchone()
        return RebuildRecord(*row) if row else None
