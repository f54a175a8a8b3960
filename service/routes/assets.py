"""Scripts and styles the docs page and the console load from the service itself, so every
page works on a host with no internet route: Swagger UI from PyPI's swagger-ui-py (its static
files: Swagger UI 5, the first to render OpenAPI 3.1) and plotly.js from PyPI's plotly."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import plotly
from quart import Blueprint, send_from_directory
from quart_schema import hide

blueprint = Blueprint("assets", __name__)
# Its static folder only: importing swagger_ui would load its handlers for every framework.
SWAGGER_UI = Path(importlib.util.find_spec("swagger_ui").submodule_search_locations[0]) / "static"
PLOTLY_JS = Path(plotly.__file__).parent / "package_data"
SWAGGER_JS = "/assets/swagger-ui/swagger-ui-bundle.js"
SWAGGER_CSS = "/assets/swagger-ui/swagger-ui.css"
MAX_AGE = 24 * 3600  # seconds a browser may keep an asset (they change only on upgrade)


@blueprint.get("/assets/swagger-ui/<path:name>")
@hide
async def swagger_ui(name: str):
    return await send_from_directory(SWAGGER_UI, name, cache_timeout=MAX_AGE)


@blueprint.get("/assets/plotly.min.js")
@hide
async def plotly_js():
    return await send_from_directory(PLOTLY_JS, "plotly.min.js", cache_timeout=MAX_AGE)
