"""The SQLite store's experiment tables (`Store` experiment methods): definitions, the lists
shown in them, and the attribution query (`experiment_rows`). Mixed into `SQLiteStore`, whose
connection and lock it uses."""

from __future__ import annotations

import json
import time

from service.storage.base import ExperimentRecord, ExposureRow, VariantCounts
from service.storage.experiment_rows import (
    EXPERIMENT_COLUMNS,
    counts_from_rows,
    counts_query,
    experiment_columns,
    experiment_from_columns,
    item_exposure_query,
)
from service.storage.item_rows import SECONDS_PER_DAY, item_daily_views_query


class SQLiteExperiments:
    async def create_experiment(self, record: ExperimentRecord) -> bool:
        cursor = await self.db.execute(
            f"INSERT INTO experiments ({EXPERIMENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT (name) DO NOTHING",
            experiment_columns(record),
        )
        await self.db.commit()
        return cursor.rowcount == 1

    async def experiments(self) -> list[ExperimentRecord]:
        async with self.db.execute(
            f"SELECT {EXPERIMENT_COLUMNS} FROM experiments ORDER BY created_at, experiment_id"
        ) as cursor:
            return [experiment_from_columns(row) for row in await cursor.fetchall()]

    async def experiment(self, experiment_id: str) -> ExperimentRecord | None:
        async with self.db.execute(
            f"SELECT {EXPERIMENT_COLUMNS} FROM experiments WHERE experiment_id = ?",
            (experiment_id,),
        ) as cursor:
            row = await cursor.fetchone()
        return experiment_from_columns(row) if row else None

    async def update_experiment(
        self, experiment_id: str, status: str, shipped_variant: str | None, expected: str
    ) -> bool:
        cursor = await self.db.execute(
            "UPDATE experiments SET status = ?, shipped_variant = ?, updated_at = ? "
            "WHERE experiment_id = ? AND status = ?",
            (status, shipped_variant, time.time(), experiment_id, expected),
        )
        await self.db.commit()
        return cursor.rowcount == 1

    async def record_looks(self, experiment_id: str, looks: dict) -> None:
        await self.db.execute(
            "UPDATE experiments SET looks = ? WHERE experiment_id = ?",
            (json.dumps(looks), experiment_id),
        )
        await self.db.commit()

    async def add_exposures(self, rows: list[ExposureRow]) -> None:
        await self.db.executemany(
            "INSERT INTO exposures (recommendation_id, experiment_id, variant, user_id, ts) "
            "VALUES (?,?,?,?,?) ON CONFLICT DO NOTHING",
            [(r.recommendation_id, r.experiment_id, r.variant, r.user_id, r.ts) for r in rows],
        )
        await self.db.executemany(
            "INSERT INTO exposure_items (recommendation_id, content_id) VALUES (?,?) "
            "ON CONFLICT DO NOTHING",
            [(r.recommendation_id, c) for r in rows for c in r.content_ids],
        )
        await self.db.commit()

    async def experiment_counts(
        self, experiment_id: str, window_seconds: float, completed_at: float
    ) -> list[VariantCounts]:
        async with self.db.execute(
            counts_query(("?1", "?2", "?3")), (experiment_id, window_seconds, completed_at)
        ) as cursor:
            return counts_from_rows(await cursor.fetchall())

    async def item_exposure_counts(self, content_id: str) -> tuple[int, int]:
        async with self.db.execute(item_exposure_query("?1"), (content_id,)) as cursor:
            listed, watched = await cursor.fetchone()
        return int(listed), int(watched)

    async def item_daily_views(self, content_id: str, days: int) -> list[tuple[int, int]]:
        query = item_daily_views_query("?1", "?2", f"CAST(ts / {SECONDS_PER_DAY} AS INTEGER)")
        async with self.db.execute(query, (content_id, days * SECONDS_PER_DAY)) as cursor:
            return [(int(day), int(views)) for day, views in await cursor.fetchall()]
