"""What both backends share for experiments: the stored columns of an `ExperimentRecord`, and
the one query that attributes events to the lists an experiment showed."""

from __future__ import annotations

import json
from collections.abc import Sequence

from service.storage.base import ExperimentRecord, VariantCounts

EXPERIMENT_COLUMNS = (
    "experiment_id, name, salt, status, definition, created_at, updated_at, shipped_variant, looks"
)


def _json(value) -> dict:
    return json.loads(value) if isinstance(value, str) else dict(value)


def experiment_from_columns(row: Sequence) -> ExperimentRecord:
    """An `ExperimentRecord` from the columns of `EXPERIMENT_COLUMNS`, in order."""
    return ExperimentRecord(
        row[0], row[1], row[2], row[3], _json(row[4]), row[5], row[6], row[7], _json(row[8])
    )


def experiment_columns(record: ExperimentRecord) -> tuple:
    """The values of `EXPERIMENT_COLUMNS` (JSON as text) for ``record``."""
    return (
        record.experiment_id,
        record.name,
        record.salt,
        record.status,
        json.dumps(record.definition),
        record.created_at,
        record.updated_at,
        record.shipped_variant,
        json.dumps(record.looks),
    )


def counts_query(mark: Sequence[str]) -> str:
    """Per variant of one experiment, exposures and what they led to (`VariantCounts`);
    ``mark`` are the dialect's placeholders for (experiment id, window seconds, completion
    bar). A view is attributed to a list when it is on one of the list's items, by the list's
    viewer, and carries the list's id or falls in the window after it; DISTINCT counts a view
    once however many lists it is attributed to."""
    experiment, window, bar = mark
    return f"""
    WITH attributed AS (
        SELECT DISTINCT x.variant, e.user_id, e.content_id, e.ts, e.completion_rate, e.dismissed
        FROM exposures x
        JOIN exposure_items i ON i.recommendation_id = x.recommendation_id
        JOIN events e ON e.user_id = x.user_id AND e.content_id = i.content_id
        WHERE x.experiment_id = {experiment}
          AND (e.recommendation_id = x.recommendation_id
               OR (e.ts >= x.ts AND e.ts <= x.ts + {window}))
    ),
    views AS (
        SELECT variant,
               COUNT(DISTINCT CASE WHEN NOT dismissed THEN user_id END) AS clicked_users,
               COUNT(DISTINCT CASE WHEN NOT dismissed AND completion_rate >= {bar}
                                   THEN user_id END) AS completed_users,
               SUM(CASE WHEN NOT dismissed THEN 1 ELSE 0 END) AS views,
               SUM(CASE WHEN NOT dismissed THEN completion_rate ELSE 0 END) AS completion_sum,
               SUM(CASE WHEN dismissed THEN 1 ELSE 0 END) AS dismissals,
               COUNT(DISTINCT CASE WHEN dismissed THEN user_id END) AS dismissing_users
        FROM attributed GROUP BY variant
    ),
    shown AS (
        SELECT variant, COUNT(DISTINCT user_id) AS users, COUNT(*) AS lists
        FROM exposures WHERE experiment_id = {experiment} GROUP BY variant
    )
    SELECT s.variant, s.users, s.lists, COALESCE(v.clicked_users, 0),
           COALESCE(v.completed_users, 0), COALESCE(v.views, 0),
           COALESCE(v.completion_sum, 0), COALESCE(v.dismissals, 0),
           COALESCE(v.dismissing_users, 0)
    FROM shown s LEFT JOIN views v ON v.variant = s.variant
    ORDER BY s.variant
    """


def counts_from_rows(rows: Sequence[Sequence]) -> list[VariantCounts]:
    return [
        VariantCounts(
            int(r[0]),
            int(r[1]),
            int(r[2]),
            int(r[3]),
            int(r[4]),
            int(r[5]),
            float(r[6]),
            int(r[7]),
            int(r[8]),
        )
        for r in rows
    ]


def item_exposure_query(mark: str) -> str:
    """How many lists shown in experiments held an item, and views of it that carry the id
    of one of them (``mark``: the dialect's placeholder for the content id)."""
    return f"""
    SELECT (SELECT COUNT(*) FROM exposure_items WHERE content_id = {mark}),
           (SELECT COUNT(*) FROM events e WHERE e.content_id = {mark} AND e.recommendation_id IN
                (SELECT recommendation_id FROM exposure_items WHERE content_id = {mark}))
    """
