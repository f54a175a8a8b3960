"""The PostgreSQL store's experiment tables (`Store` experiment methods): definitions, the
lists shown in them, and the attribution query (`experiment_rows`). Mixed into
`PostgresStore`, whose pool it uses."""

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


class PostgresExperiments:
    async def create_experiment(self, record: ExperimentRecord) -> bool:
        found = await self.pool.fetchval(
            f"INSERT INTO experiments ({EXPERIMENT_COLUMNS}) "
            "VALUES ($1,$2,$3,$4,$5::jsonb,$6,$7,$8,$9::jsonb) "
            "ON CONFLICT (name) DO NOTHING RETURNING 1",
            *experiment_columns(record),
        )
        return found == 1

    async def experiments(self) -> list[ExperimentRecord]:
        rows = await self.pool.fetch(
            f"SELECT {EXPERIMENT_COLUMNS} FROM experiments ORDER BY created_at, experiment_id"
        )
        return [experiment_from_columns(row) for row in rows]

    async def experiment(self, experiment_id: str) -> ExperimentRecord | None:
        row = await self.pool.fetchrow(
            f"SELECT {EXPERIMENT_COLUMNS} FROM experiments WHERE experiment_id = $1",
            experiment_id,
        )
        return experiment_from_columns(row) if row else None

    async def update_experiment(
        self, experiment_id: str, status: str, shipped_variant: str | None, expected: str
    ) -> bool:
        found = await self.pool.fetchval(
            "UPDATE experiments SET status = $1, shipped_variant = $2, updated_at = $3 "
            "WHERE experiment_id = $4 AND status = $5 RETURNING 1",
            status,
            shipped_variant,
            time.time(),
            experiment_id,
            expected,
        )
        return found == 1

    async def record_looks(self, experiment_id: str, looks: dict) -> None:
        await self.pool.execute(
            "UPDATE experiments SET looks = $1::jsonb WHERE experiment_id = $2",
            json.dumps(looks),
            experiment_id,
        )

    async def add_exposures(self, rows: list[ExposureRow]) -> None:
        items = [(r.recommendation_id, c) for r in rows for c in r.content_ids]
        async with self.pool.acquire() as connection, connection.transaction():
            await connection.execute(
                "INSERT INTO exposures (recommendation_id, experiment_id, variant, user_id, ts) "
                "SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], "
                "$5::float8[]) ON CONFLICT DO NOTHING",
                [r.recommendation_id for r in rows],
                [r.experiment_id for r in rows],
                [r.variant for r in rows],
                [r.user_id for r in rows],
                [r.ts for r in rows],
            )
            await connection.execute(
                "INSERT INTO exposure_items (recommendation_id, content_id) "
                "SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING",
                [i[0] for i in items],
                [i[1] for i in items],
            )

    async def experiment_counts(
        self, experiment_id: str, window_seconds: float, completed_at: float
    ) -> list[VariantCounts]:
        rows = await self.pool.fetch(
            counts_query(("$1", "$2::float8", "$3::float8")),
            experiment_id,
            window_seconds,
            completed_at,
        )
        return counts_from_rows(rows)

    async def item_exposure_counts(self, content_id: str) -> tuple[int, int]:
        row = await self.pool.fetchrow(item_exposure_query("$1"), content_id)
        return int(row[0]), int(row[1])

    async def item_daily_views(self, content_id: str, days: int) -> list[tuple[int, int]]:
        query = item_daily_views_query("$1", "$2", f"FLOOR(ts / {SECONDS_PER_DAY})::BIGINT")
        rows = await self.pool.fetch(query, content_id, float(days * SECONDS_PER_DAY))
        return [(int(day), int(views)) for day, views in rows]
