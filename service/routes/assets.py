"""Scripts and styles the docs page and the console load from the service itself (issue 16):
Swagger UI from the npm registry's swagger-ui-dist (`npm ci --prefix service/web`; version 5,
the first to render OpenAPI 3.1) and plotly.js from PyPI's plotly, so every page works on a
host with no internet route."""

from __future__ import annotations

from pathlib import Path

import plotly
from quart import Blueprint, send_from_directory
from quart_schema import hide

from service.errors import ApiError

blueprint = Blueprint("assets", __name__)
SWAGGER_UI = Path(__file__).resolve().parents[1] / "web" / "node_modules" / "swagger-ui-dist"
PLOTLY_JS = Path(plotly.__file__).parent / "package_data"
SWAGGER_JS = "/assets/swagger-ui/swagger-ui-bundle.js"
SWAGGER_CSS = "/assets/swagger-ui/swagger-ui.css"
MAX_AGE = 24 * 3600  # seconds a browser may keep an asset (they change only on upgrade)


@blueprint.get("/assets/swagger-ui/<path:name>")
@hide
async def swagger_ui(name: str):
    if not SWAGGER_UI.is_dir():
        raise ApiError(
            404,
            "not_installed",
            "Swagger UI is not installed: run `npm ci --prefix service/web` (the README's "
            "set-up does)",
        )
    return await send_from_directory(SWAGGER_UI, name, cache_timeout=MAX_AGE)


@blueprint.get("/assets/plotly.min.js")
@hide
async def plotly_js():
    return await send_from_directory(PLOTLY_JS, "plotly.min.js", cache_timeout=MAX_AGE)
