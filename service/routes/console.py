"""The operator console: ``/console`` pages rendered with Jinja and charted with
plotly.js served by the service. With API keys configured, only an admin key opens it: a login
form puts the key in an HttpOnly, SameSite=Strict cookie (never in a URL)."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
from pydantic import ValidationError
from quart import Blueprint, jsonify, redirect, render_template, request
from quart_schema import hide

from service import schemas
from service.answers.experiments import change_status
from service.console import data as console_data
from service.errors import ApiError
from service.http.error_handlers import invalid_fields
from service.state import AppState, app_state

TEMPLATES = Path(__file__).resolve().parents[1] / "console" / "templates"
COOKIE = "sona_console"
OPEN = {"console.login", "console.login_form"}
CONTEXT_FIELDS = ("device_type", "time_of_day", "mood")
LIST_FILTERS = ("genres_any", "genres_none")  # comma-separated in the page's query string
BOUND_FILTERS = ("release_year_min", "release_year_max", "duration_min", "duration_max")

blueprint = Blueprint("console", __name__, template_folder=str(TEMPLATES))


def _guarded(state: AppState) -> bool:
    return bool(state.settings.api_keys or state.settings.admin_keys)


@blueprint.before_request
async def admin_only():
    state = app_state()
    if request.endpoint in OPEN or not _guarded(state):
        return None
    if request.cookies.get(COOKIE, "") in state.settings.admin_keys:
        return None
    if request.path.startswith("/console/data/"):
        return jsonify({"error": "unauthorized", "message": "log in with an admin key"}), 401
    return redirect("/console/login")


@blueprint.get("/console/login")
@hide
async def login_form():
    return await render_template("console/login.html", error=None)


@blueprint.post("/console/login")
@hide
async def login():
    state = app_state()
    key = (await request.form).get("key", "")
    if _guarded(state) and key not in state.settings.admin_keys:
        return await render_template("console/login.html", error="wrong key"), 401
    response = redirect("/console")
    response.set_cookie(COOKIE, key, httponly=True, samesite="Strict", path="/console")
    return response


@blueprint.post("/console/logout")
@hide
async def logout():
    response = redirect("/console/login")
    response.delete_cookie(COOKIE, path="/console")
    return response


@blueprint.get("/console")
@hide
async def overview():
    state = app_state()
    return await render_template(
        "console/overview.html", page="overview", info=await console_data.overview(state)
    )


@blueprint.get("/console/data/metrics")
@hide
async def metrics():
    return jsonify(console_data.live_metrics(app_state()))


def _uuid(value: str, field: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ApiError(400, "validation_error", f"{field}: not a UUID: {value!r}") from None


@blueprint.get("/console/viewer")
@hide
async def viewer():
    state = app_state()
    user_id = request.args.get("user_id", "")
    if not user_id:
        return await render_template("console/viewer.html", page="viewer", viewer=None)
    context = {f: request.args[f] for f in CONTEXT_FIELDS if request.args.get(f)}
    data = await console_data.viewer(
        state, _uuid(user_id, "user_id"), context or None, _filters(request.args)
    )
    return await render_template("console/viewer.html", page="viewer", viewer=data)


def _filters(args) -> schemas.Filters | None:
    """The API's `Filters` from the viewer page's form (None when no field is set); a bad
    value answers 400 naming the field, as the API does."""
    fields: dict[str, object] = {
        f: [g.strip() for g in args[f].split(",") if g.strip()]
        for f in LIST_FILTERS
        if args.get(f, "").strip()
    }
    for f in BOUND_FILTERS:
        if args.get(f, "").strip():
            try:  # a number as JSON reads it, so the API's own rules judge it
                fields[f] = orjson.loads(args[f])
            except orjson.JSONDecodeError:
                raise ApiError(400, "validation_error", f"filters.{f}: not a number") from None
    if args.get("one_per_series"):
        fields["one_per_series"] = True
    if not fields:
        return None
    try:
        return schemas.Filters.model_validate(fields)
    except ValidationError as error:
        raise invalid_fields(error, ("filters",)) from None


@blueprint.get("/console/item/<content_id>")
@hide
async def item(content_id: str):
    state = app_state()
    data = await console_data.item(state, _uuid(content_id, "content_id"))
    if data is None:
        raise ApiError(404, "content_not_found", f"content_id: unknown content {content_id}")
    return await render_template("console/item.html", page="item", item=data)


@blueprint.get("/console/experiments")
@hide
async def experiments():
    state = app_state()
    return await render_template(
        "console/experiments.html",
        page="experiments",
        experiments=await console_data.experiments(state),
        error=request.args.get("error"),
    )


@blueprint.post("/console/experiments/<experiment_id>/status")
@hide
async def experiment_status(experiment_id: str):
    state = app_state()
    form = await request.form
    try:
        await change_status(state, experiment_id, form.get("status", ""), form.get("variant"))
    except ApiError as error:
        return redirect(f"/console/experiments?error={error.message}")
    return redirect("/console/experiments")
