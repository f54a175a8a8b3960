"""Experiments as the API and the console answer them: a definition checked and stored, one
experiment with its results (its looks stored), and status changes (shipping a variant pins
the version the default serves)."""

from __future__ import annotations

import math
import time
import uuid

from service import schemas
from service.errors import ApiError
from service.experiments.live import ARMS_LIVE, check_fragment, named_model_versions
from service.experiments.report import results
from service.learning.versions import servable_version
from service.state import AppState
from service.storage import ExperimentRecord

SECONDS_PER_MINUTE = 60.0
TRAFFIC_TOLERANCE = 1e-6
INVALID = "invalid_experiment"
# Where each status may go: shipping ends an experiment with one variant as the default;
# stopping a shipped one restores the configured default.
NEXT_STATUS = {
    "running": {"paused", "stopped", "shipped"},
    "paused": {"running", "stopped", "shipped"},
    "stopped": {"shipped"},
    "shipped": {"stopped"},
}


def public(record: ExperimentRecord, found: dict | None = None) -> dict:
    """An experiment as the API shows it (with ``found``: its results)."""
    out = {
        "id": record.experiment_id,
        "name": record.name,
        "status": record.status,
        "shipped_variant": record.shipped_variant,
        **record.definition,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }
    if found is not None:
        out["results"] = found
    return out


def _invalid(field: str, why: str) -> ApiError:
    """A 400 for a rule across fields (shares that sum to 1, unique names, what a variant may
    change), which no schema of the request states."""
    return ApiError(400, INVALID, f"{field}: {why}", {"field": field})


async def check(data: schemas.ExperimentRequest, state: AppState) -> None:
    total = math.fsum(v.traffic for v in data.variants)
    if abs(total - 1.0) > TRAFFIC_TOLERANCE:
        raise _invalid("variants", f"traffic shares must sum to 1 (they sum to {total:g})")
    seen: set[str] = set()
    for i, variant in enumerate(data.variants):
        if variant.name in seen:
            raise _invalid(f"variants.{i}.name", f"{variant.name!r} is used twice")
        seen.add(variant.name)
        check_fragment(variant.config, state.cfg, f"variants.{i}.config")
    await _check_model_versions(data, state)


async def _check_model_versions(data: schemas.ExperimentRequest, state: AppState) -> None:
    """A 400 naming the variant whose model version would take more versions live than
    ``serving.max_variant_models``, comes while another running or paused experiment serves
    model versions, is not in the store, or has train-time settings the served config
    disagrees with."""
    first: dict[int, str] = {}  # each version and the field that names it first, in order
    for i, variant in enumerate(data.variants):
        if variant.model_version is not None:
            first.setdefault(variant.model_version, f"variants.{i}.model_version")
    cap = state.serving.max_variant_models
    if len(first) > cap:
        raise _invalid(
            list(first.values())[cap],
            f"at most {cap} model versions may serve experiment variants at once "
            "(serving.max_variant_models)",
        )
    live = named_model_versions(await state.store.experiments(), ARMS_LIVE)
    if first and live:  # a viewer is in every running experiment: two would serve one of them
        raise _invalid(
            next(iter(first.values())),
            f"another running or paused experiment serves model versions {sorted(live)}; "
            "stop it first (one model experiment at a time)",
        )
    for version, field in first.items():
        model, why = await servable_version(
            state.store, version, state.settings.model_dir, state.cfg
        )
        if model is None:
            raise _invalid(field, why)


async def record_of(state: AppState, experiment_id: str) -> ExperimentRecord:
    record = await state.store.experiment(experiment_id)
    if record is None:
        raise ApiError(
            404, "experiment_not_found", f"experiment_id: unknown experiment {experiment_id}"
        )
    return record


async def create(state: AppState, data: schemas.ExperimentRequest) -> ExperimentRecord:
    """Check and store a new experiment; 400 / 409 naming what is wrong."""
    await check(data, state)
    now = time.time()
    record = ExperimentRecord(
        experiment_id=str(uuid.uuid4()),
        name=data.name,
        salt=uuid.uuid4().hex,
        status=data.status,
        definition={
            "variants": [
                {"name": v.name, "traffic": v.traffic, "config": v.config}
                | ({} if v.model_version is None else {"model_version": v.model_version})
                for v in data.variants
            ],
            "metric": data.metric,
            "attribution_window_minutes": data.attribution_window_minutes,
            "relative_effect": data.relative_effect,
            "expected_rate": data.expected_rate,
        },
        created_at=now,
        updated_at=now,
    )
    if not await state.store.create_experiment(record):
        raise ApiError(409, "experiment_exists", f"name: an experiment named {data.name!r} exists")
    await state.experiments.refresh()
    return record


async def results_of(state: AppState, record: ExperimentRecord) -> dict:
    """``record``'s results now (`experiment_report.results`), its looks stored."""
    await state.experiments.flush()  # this process's lists count at once
    counts = await state.store.experiment_counts(
        record.experiment_id,
        record.definition["attribution_window_minutes"] * SECONDS_PER_MINUTE,
        state.serving.experiment_completed_at,
    )
    found, looks = results(record, counts)
    if looks != record.looks:
        await state.store.record_looks(record.experiment_id, looks)
    return found


async def change_status(
    state: AppState, experiment_id: str, status: str, variant: str | None
) -> ExperimentRecord:
    """Move an experiment to ``status`` (shipping ``variant``); 400 / 404 / 409 naming why not."""
    record = await record_of(state, experiment_id)
    names = [v["name"] for v in record.definition["variants"]]
    if status == "shipped":
        if variant not in names:
            raise _invalid("variant", f"shipping needs one of the variants {names}")
        pinned = record.definition["variants"][names.index(variant)].get("model_version")
        if pinned is not None and await state.store.model_record(pinned) is None:
            raise ApiError(
                409,
                "model_version_gone",
                f"variant: its model version {pinned} is no longer in the store",
            )
    elif variant is not None:
        raise _invalid("variant", "only shipping names a variant")
    if status == record.status and variant == record.shipped_variant:
        return record
    if status not in NEXT_STATUS[record.status]:
        raise ApiError(
            409,
            "invalid_transition",
            f"status: a {record.status} experiment cannot become {status}",
        )
    if not await state.store.update_experiment(experiment_id, status, variant, record.status):
        raise ApiError(409, "conflict", "status: changed by another request; read it again")
    await state.experiments.refresh()
    if "shipped" in (status, record.status) and state.runtime is not None:
        # A shipped model variant pins the default version, a stopped one lets it go: swap
        # in the background (other processes do at their next model watch).
        state.swap_soon()
    return await record_of(state, experiment_id)


async def experiment(state: AppState, experiment_id: str) -> dict:
    """One experiment with its results now, and how this process serves its model versions."""
    record = await record_of(state, experiment_id)
    out = public(record, await results_of(state, record))
    versions = sorted({v["model_version"] for v in out["variants"] if "model_version" in v})
    if versions:  # how this process serves them
        served = state.runtime.version if state.runtime is not None else None
        out["model_versions"] = {
            str(v): "default" if v == served else state.model_arms.status(v) for v in versions
        }
    return out
