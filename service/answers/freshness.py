"""How fresh the served model is (SPEC 4.2): its version and
age, what arrived since it was trained, and the last rebuild — for ``/ready`` and ``/metrics``."""

from __future__ import annotations

import time

from service.state import AppState


def freshness(state: AppState) -> dict:
    """The served model's freshness (None values while no model is served)."""
    rebuild = state.last_rebuild
    last = (
        None
        if rebuild is None
        else {
            "outcome": rebuild.outcome,
            "version": rebuild.version,
            "duration_seconds": round(rebuild.finished_at - rebuild.started_at, 3),
            "finished_at": rebuild.finished_at,
            "message": rebuild.message,
        }
    )
    if state.runtime is None:
        return {"version": None, "last_rebuild": last}
    engine = state.runtime.engine
    model = engine.model
    trained_at = float(model.report.get("store", {}).get("trained_at", model.reference_time))
    return {
        "version": model.version,
        "trained_at": trained_at,
        "age_seconds": round(time.time() - trained_at, 3),
        "events_since": state.tables.events_since_model,
        "items_since": engine.items_added,
        "items_waiting": len(state.catalogue.waiting),
        "item_capacity": engine.capacity,
        "served_programs": len(engine.programs),
        "compiled_programs": state.library.live_programs(),
        "program_sets": len(state.library.live()),
        "tables_refreshed_at": state.tables.refreshed_at or None,
        "last_rebuild": last,
    }


def set_gauges(state: AppState) -> None:
    """Copy `freshness` into the app's Prometheus gauges."""
    fresh, gauges = freshness(state), state.metrics.freshness
    if fresh["version"] is not None:
        gauges["model_version"].set(fresh["version"])
        gauges["model_age_seconds"].set(fresh["age_seconds"])
        gauges["events_since_model"].set(fresh["events_since"])
        gauges["items_since_model"].set(fresh["items_since"])
        gauges["items_waiting"].set(fresh["items_waiting"])
        gauges["item_capacity"].set(fresh["item_capacity"])
        gauges["compiled_programs"].set(fresh["compiled_programs"])
        gauges["program_sets"].set(fresh["program_sets"])
        gauges["tables_refreshed"].set(fresh["tables_refreshed_at"] or 0)
    last = fresh["last_rebuild"]
    if last is not None:
        gauges["last_rebuild_seconds"].set(last["duration_seconds"])
        gauges["last_rebuild_succeeded"].set(1 if last["outcome"] == "succeeded" else 0)
        gauges["last_rebuild_finished"].set(last["finished_at"])
