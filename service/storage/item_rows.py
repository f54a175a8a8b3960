"""SQL both stores share for one item's activity (the console's item page); each dialect
passes its placeholder."""

from __future__ import annotations

SECONDS_PER_DAY = 86_400


def item_daily_views_query(item: str, window: str, day: str) -> str:
    """(day, views) of one item per UTC day (days since the epoch) in the ``window`` seconds
    up to its latest view: ``item`` and ``window`` the dialect's placeholders, ``day`` its
    whole-day expression of ``ts``. Reads the ``events_content_ts`` index (migration 5),
    never every event."""
    return f"""
    SELECT {day} AS day, COUNT(*) FROM events
    WHERE content_id = {item}
      AND ts > (SELECT MAX(ts) FROM events WHERE content_id = {item}) - {window}
    GROUP BY day ORDER BY day
    """
