"""Live experiments: which variant serves each viewer, what that variant changes in
the engine's request, and the lists it showed (written to the store in batches).

Config variants change only settings the engine takes as arrays per request row, the fusion
matrix (weights and gates), MMR λ and the cold-start and exploration settings, so any number of
live variants compiles nothing new. Settings that shape a compiled program (pool sizes, the most
exploration a list may have) are refused when an experiment is created, naming the field. A
variant may also serve another stored model version (`service.serving.model_arms`); how many versions
may be live at once is capped (``serving.max_variant_models``), which bounds the programs and
memory variants add.

Every process reads the experiments from the store (at start, every
``serving.experiments_poll_seconds``, and at once after its own writes), so assignment,
shipped defaults and statuses agree across processes within that bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from service.errors import ApiError
from service.experiments.statistics import assign
from service.serving.periodic import every
from service.storage import ExperimentRecord, ExposureRow, Store
from sona_jax.config import ColdStartConfig, ConfigError, FusionConfig, SonaConfig
from sona_jax.serve.fusion import COLD_START_SETTINGS, cold_start_row, fusion_matrix

log = logging.getLogger("sona.experiments")

# What a variant may change: settings the engine reads as per-request arrays.
VARIANT_SETTINGS: dict[str, frozenset[str]] = {
    "fusion": frozenset(FusionConfig.model_fields),
    "diversity": frozenset({"mmr_lambda"}),
    "cold_start": frozenset(COLD_START_SETTINGS),
}
assert set(COLD_START_SETTINGS) < set(ColdStartConfig.model_fields)  # most_exploration stays
CONTROL = 0  # the first variant is the control every other is compared with
# Experiments whose variants' model versions the store keeps, and those whose arms may serve.
HOLDS_MODELS = frozenset({"running", "paused", "shipped"})
ARMS_LIVE = frozenset({"running", "paused"})


def check_fragment(fragment: dict[str, Any], cfg: SonaConfig, where: str) -> None:
    """A 400 naming the first key of ``fragment`` (at ``where``, e.g. ``variants.1.config``)
    that a variant may not change, or whose value the config refuses."""
    for section, keys in fragment.items():
        allowed = VARIANT_SETTINGS.get(section)
        if not isinstance(keys, dict) or allowed is None:
            raise _refused(
                f"{where}.{section}", "a variant may change only fusion, diversity and cold_start"
            )
        for key in keys:
            if key not in allowed:
                raise _refused(
                    f"{where}.{section}.{key}",
                    "a variant may change only fusion weights and gates, "
                    "diversity.mmr_lambda and cold_start's " + ", ".join(COLD_START_SETTINGS) + " "
                    "(settings the engine takes as arrays per request)",
                )
    try:
        cfg.with_overrides(fragment)
    except ConfigError as error:
        raise _refused(where, str(error)) from None


def _refused(field: str, why: str) -> ApiError:
    return ApiError(400, "invalid_experiment", f"{field}: {why}", {"field": field})


def _merged(fragments: Sequence[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, dict[str, Any]] = {}
    for fragment in fragments:
        for section, keys in fragment.items():
            out.setdefault(section, {}).update(keys)
    return out


def named_model_versions(
    records: Sequence[ExperimentRecord], statuses: frozenset[str] = HOLDS_MODELS
) -> set[int]:
    """The model versions the variants of experiments in ``statuses`` name (by default those
    the store keeps past ``learning.keep_versions``)."""
    return {
        v["model_version"]
        for r in records
        if r.status in statuses
        for v in r.definition["variants"]
        if v.get("model_version") is not None
    }


@dataclass(frozen=True)
class LiveExperiment:
    """A running experiment as the hot path reads it."""

    experiment_id: str
    name: str
    salt: str
    traffic: tuple[float, ...]
    variant_names: tuple[str, ...]
    fragments: tuple[dict[str, Any], ...]
    model_versions: tuple[int | None, ...]  # None: the served default

    @classmethod
    def of(cls, record: ExperimentRecord) -> LiveExperiment:
        variants = record.definition["variants"]
        return cls(
            record.experiment_id,
            record.name,
            record.salt,
            tuple(v["traffic"] for v in variants),
            tuple(v["name"] for v in variants),
            tuple(v.get("config", {}) for v in variants),
            tuple(v.get("model_version") for v in variants),
        )


class Arm(NamedTuple):
    experiment: LiveExperiment
    variant: int

    @property
    def model_version(self) -> int | None:
        return self.experiment.model_versions[self.variant]

    def tag(self) -> dict[str, str]:
        return {
            "experiment": self.experiment.experiment_id,
            "variant": self.experiment.variant_names[self.variant],
        }


class Assignment(NamedTuple):
    """What serves one viewer: their arm in each running experiment (oldest first), the
    fusion matrix (3, N_SOURCES), MMR λ and cold-start settings row (`cold_start_row`) those
    arms and the shipped variants set (None: the configured one), ``key``, which tells list
    caches the variants apart, and the model version an arm serves (None: the served one; of
    two arms naming one, the newer experiment's, as for config)."""

    arms: tuple[Arm, ...]
    fusion: np.ndarray | None
    mmr_lambda: float | None
    cold_start: np.ndarray | None
    key: tuple
    model_version: int | None = None


# What a set of fragments serves: fusion matrix, MMR λ, cold-start row (None: configured).
VariantSettings = tuple[np.ndarray | None, float | None, np.ndarray | None]

NO_EXPERIMENT = Assignment((), None, None, None, ())


class Experiments:
    """The experiments this process serves, refreshed from the store, and the exposures it
    has yet to write."""

    def __init__(
        self, store: Store, cfg: SonaConfig, poll_seconds: float, flush_seconds: float
    ) -> None:
        self.store, self.cfg = store, cfg
        self.poll_seconds, self.flush_seconds = poll_seconds, flush_seconds
        self.running: tuple[LiveExperiment, ...] = ()
        self.shipped: tuple[tuple[str, dict[str, Any]], ...] = ()  # (id, fragment), ship order
        # The model version the newest shipped model variant made the default (None: newest).
        self.pinned_model_version: int | None = None
        self.on_models: Callable[[frozenset[int]], None] | None = None  # versions arms serve
        self._settings: dict[tuple, VariantSettings] = {}
        self._pending: list[ExposureRow] = []
        self._tasks: list[asyncio.Task] = []
        self._flushing = asyncio.Lock()

    async def refresh(self) -> None:
        records = await self.store.experiments()
        running = tuple(LiveExperiment.of(r) for r in records if r.status == "running")
        shipped = sorted((r for r in records if r.status == "shipped"), key=lambda r: r.updated_at)
        fragments = tuple(
            (r.experiment_id, _variant(r, r.shipped_variant).get("config", {})) for r in shipped
        )
        pins = [_variant(r, r.shipped_variant).get("model_version") for r in shipped]
        self.pinned_model_version = next((v for v in reversed(pins) if v is not None), None)
        if running != self.running or fragments != self.shipped:
            self.running, self.shipped, self._settings = running, fragments, {}
        if self.on_models is not None:  # every time: a version that failed to load is retried
            self.on_models(self.model_versions())

    def model_versions(self) -> frozenset[int]:
        """The model versions running experiments' variants serve."""
        return frozenset(v for e in self.running for v in e.model_versions if v is not None)

    def assignment(
        self, user_id: str, serves: Callable[[int], bool] = lambda version: True
    ) -> Assignment:
        """The viewer's arms (a hash of each experiment's salt and the user id) and what
        they serve. An arm whose model version this process cannot serve yet (``serves``
        false: still loading) is left out, as if the viewer were not in that experiment: its
        lists are neither changed nor counted."""
        if not self.running and not self.shipped:
            return NO_EXPERIMENT
        arms = tuple(Arm(e, assign(e.salt, user_id, e.traffic)) for e in self.running)
        arms = tuple(a for a in arms if a.model_version is None or serves(a.model_version))
        key = (
            tuple(s[0] for s in self.shipped),
            tuple((a.experiment.experiment_id, a.variant) for a in arms),
        )
        settings = self._settings.get(key)
        if settings is None:
            fragments = [s[1] for s in self.shipped]
            fragments += [a.experiment.fragments[a.variant] for a in arms]
            settings = self._settings[key] = self._served(_merged(fragments))
        versions = [a.model_version for a in arms if a.model_version is not None]
        return Assignment(arms, *settings, key, versions[-1] if versions else None)

    def _served(self, fragment: dict[str, Any]) -> VariantSettings:
        cfg = self.cfg.with_overrides(fragment)
        fusion = np.asarray(fusion_matrix(cfg)) if "fusion" in fragment else None
        lam = cfg.diversity.mmr_lambda if "diversity" in fragment else None
        cold_start = cold_start_row(cfg) if "cold_start" in fragment else None
        return fusion, lam, cold_start

    def expose(
        self, recommendation_id: str, user_id: str, arms: Sequence[Arm], content_ids: list[str]
    ) -> None:
        """Note a list shown to a viewer in experiments (written with the next flush)."""
        now = time.time()
        self._pending.extend(
            ExposureRow(
                recommendation_id,
                arm.experiment.experiment_id,
                arm.variant,
                user_id,
                now,
                tuple(content_ids),
            )
            for arm in arms
        )

    async def flush(self) -> None:
        """Write the exposures noted so far (kept for the next try when the store fails)."""
        async with self._flushing:
            rows, self._pending = self._pending, []
            if not rows:
                return
            try:
                await self.store.add_exposures(rows)
            except Exception:
                self._pending[:0] = rows
                raise

    def start(self) -> None:
        self._tasks = [
            every(self.poll_seconds, self.refresh, "experiments refresh", log),
            every(self.flush_seconds, self.flush, "exposure flush", log),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            await self.flush()


def _variant(record: ExperimentRecord, name: str | None) -> dict[str, Any]:
    for variant in record.definition["variants"]:
        if variant["name"] == name:
            return variant
    return {}
