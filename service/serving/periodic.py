"""The one loop behind the service's pollers (catalogue feed, live tables, rebuilds, models)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable


def every(
    seconds: float, step: Callable[[], Awaitable[object]], what: str, log: logging.Logger
) -> asyncio.Task:
    """A task running ``step()`` every ``seconds``; a failed step is logged and the next one
    runs on time (a poller must outlive a store that is briefly unreachable)."""

    async def run() -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await step()
            except Exception:  # noqa: BLE001 - keep polling
                log.exception("%s failed", what)

    return asyncio.get_running_loop().create_task(run(), name=what)
