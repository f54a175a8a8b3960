"""Stored model versions that experiment variants serve beside the default.

Each version named by a running experiment is a `ServedVersion`, as the default is: a `Runtime`
of its own with the live catalogue and popularity tables, its viewers' profiles under keys of
their own, and list and score batchers. A version is brought up in the
background when an experiment starts naming it and let go when none does; until it serves, its
viewers are served as if they were not in that experiment, and nothing is counted for it.

A version whose catalogue and config agree with the default's has the same array shapes, so it
runs on the default's program set; one trained under other shapes (a transformer source, a
larger catalogue) compiles its own. How many versions may be live at once is capped when an
experiment is created (``serving.max_variant_models``), which bounds both programs and memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from service.serving.served_version import ServedVersion, ServingParts
from sona_jax.model.version import TrainedModel

log = logging.getLogger("sona.model_arms")
# A request that picked an arm just before it was let go still finishes on it (its profile
# lookup and engine call take milliseconds); the arm stops this long after.
RETIRE_AFTER_SECONDS = 5.0


class ModelArms:
    """The model versions this process serves for experiments, by version."""

    def __init__(
        self,
        parts: ServingParts,
        load: Callable[[int], Awaitable[tuple[TrainedModel | None, str]]],
    ) -> None:
        """``parts``: what the default version shares (an arm of the default's shapes runs on
        its programs); ``load(version)``: the stored model version when the served config can
        serve it, else None and why."""
        self.parts, self.load = parts, load
        self.live: dict[int, ServedVersion] = {}
        self.failed: dict[int, tuple[str, float]] = {}  # version -> (why, when: monotonic s)
        self.wanted: frozenset[int] = frozenset()
        self.closed = False
        self._loading: dict[int, asyncio.Task] = {}
        self._retiring: set[asyncio.Task] = set()

    def serving_version(self, version: int) -> ServedVersion | None:
        """What serves ``version`` here (None: not live, still loading or failed)."""
        return self.live.get(version)

    def status(self, version: int) -> str:
        """``serving``, ``loading``, ``failed: why`` or ``idle`` (no running experiment names it)."""
        if version in self.live:
            return "serving"
        if version in self._loading:
            return "loading"
        if version in self.failed:
            return f"failed: {self.failed[version][0]}"
        return "idle"

    def want(self, versions: frozenset[int]) -> None:
        """Serve exactly ``versions``: bring up the new ones in the background (one that
        failed, again after ``serving.model_poll_seconds``), let go of the others (requests
        that picked them finish first). Called at every experiments refresh."""
        if self.closed:
            return
        self.wanted = versions
        loop, now = asyncio.get_running_loop(), time.monotonic()
        for version in sorted(versions - self.live.keys() - self._loading.keys()):
            failed = self.failed.get(version)
            if failed is not None and now - failed[1] < self.parts.serving.model_poll_seconds:
                continue
            self._loading[version] = loop.create_task(
                self._bring_up(version), name=f"model arm v{version}"
            )
        for version in [v for v in self._loading if v not in versions]:
            self._loading.pop(version).cancel()
        for version in [v for v in self.live if v not in versions]:
            task = loop.create_task(self._retire(self.live.pop(version)), name=f"retire v{version}")
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def _retire(self, arm: ServedVersion) -> None:
        try:
            await asyncio.sleep(RETIRE_AFTER_SECONDS)
        finally:  # at shutdown too
            await arm.stop()

    def written(self, user_ids: Iterable[str]) -> None:
        """This process wrote ``user_ids``' events or adapters: every arm checks their cached
        profiles against the store before using them again."""
        user_ids = tuple(user_ids)
        for arm in self.live.values():
            arm.profiles.written(user_ids)

    async def catalogue_written(self, content_ids: list[str]) -> None:
        """This process wrote ``content_ids``: every arm serves them before it is acknowledged."""
        for arm in list(self.live.values()):
            await arm.catalogue.write(content_ids)

    async def _bring_up(self, version: int) -> None:
        try:
            arm = await self._arm(version)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a version pruned meanwhile, a config it cannot serve under
            log.error("model version %d not served for experiments: %s", version, error)
            self.failed[version] = (str(error), time.monotonic())
            return
        finally:
            if self._loading.get(version) is asyncio.current_task():  # not a newer bring-up's
                del self._loading[version]
        if version in self.wanted and version not in self.live and not self.closed:
            self.failed.pop(version, None)
            self.live[version] = arm
            log.info("model version %d serves experiment variants", version)
        else:
            await arm.stop()

    async def _arm(self, version: int) -> ServedVersion:
        model, why = await self.load(version)
        if model is None:
            raise LookupError(why)
        arm = ServedVersion(self.parts, namespace=f"m{version}:", check_first_reads=True)
        await arm.serve(model)
        return arm

    async def stop(self) -> None:
        self.closed = True
        for task in list(self._loading.values()) + list(self._retiring):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for arm in list(self.live.values()):
            await arm.stop()
        self.live.clear()
