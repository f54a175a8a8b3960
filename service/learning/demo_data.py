"""Demo data into an empty store (the synthetic generator or MovieLens from a folder)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from service.storage import ContentRow, EventRow, Store
from sona_jax.data import DEVICE_TYPES, TIMES_OF_DAY, Dataset
from sona_lab.datasets import load_dataset

CONTENT_PAGE = 1000  # items per store write while seeding
EVENT_PAGE = 20_000  # events per store write while seeding

log = logging.getLogger("sona.demo")


def dataset_rows(dataset: Dataset) -> tuple[list[ContentRow], list[EventRow]]:
    """A dataset as store rows."""
    cat = dataset.catalogue
    content = []
    for i, content_id in enumerate(cat.item_ids.tolist()):
        genres = [g for g, flag in zip(cat.genre_names, cat.genres[i], strict=True) if flag]
        moods = (
            [m for m, flag in zip(cat.mood_names, cat.moods[i], strict=True) if flag]
            if cat.moods is not None
            else []
        )
        duration = float(cat.duration_minutes[i])
        year = float(cat.release_year[i])
        series = int(cat.series[i]) if cat.series is not None else -1
        content.append(
            ContentRow(
                str(content_id),
                str(cat.titles[i]),
                genres,
                None if np.isnan(duration) else duration,
                None if np.isnan(year) else int(year),
                moods,
                f"series-{series}" if series >= 0 else None,
            )
        )
    ev = dataset.events
    users, items = dataset.user_ids, cat.item_ids
    events = [
        EventRow(
            str(users[u]),
            str(items[i]),
            float(ts),
            float(c),
            int(r) or None,
            bool(rw),
            bool(d),
            DEVICE_TYPES[dv] if dv >= 0 else None,
            TIMES_OF_DAY[td] if td >= 0 else None,
        )
        for u, i, ts, c, r, rw, d, dv, td in zip(
            ev.user.tolist(),
            ev.item.tolist(),
            ev.timestamp.tolist(),
            ev.completion.tolist(),
            ev.rating.tolist(),
            ev.rewatch.tolist(),
            ev.dismissed.tolist(),
            ev.device.tolist(),
            ev.time_of_day.tolist(),
            strict=True,
        )
    ]
    return content, events


async def seed_store(
    store: Store,
    kind: str,
    path: str | None,
    users: int,
    items: int,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> bool:
    """Load demo data into the store when it has no content yet; True if it did.
    ``progress(done, total)`` counts items and events stored."""
    if await store.list_content(1, None):
        return False
    dataset = (
        load_dataset("synthetic", n_users=users, n_items=items, seed=seed)
        if kind == "synthetic"
        else load_dataset(kind, path)
    )
    content, events = dataset_rows(dataset)
    total = len(content) + len(events)
    for start in range(0, len(content), CONTENT_PAGE):
        await store.upsert_content(content[start : start + CONTENT_PAGE])
        if progress is not None:
            progress(min(start + CONTENT_PAGE, len(content)), total)
    for start in range(0, len(events), EVENT_PAGE):
        await store.add_events(events[start : start + EVENT_PAGE])
        if progress is not None:
            progress(len(content) + min(start + EVENT_PAGE, len(events)), total)
    log.info("demo: stored %d items and %d events (%s)", len(content), len(events), kind)
    return True
