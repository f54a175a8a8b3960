"""The docs page and the operator console in a real browser (issue 16): headless Debian
chromium driven by Playwright against a running `sona serve --demo` with API keys set. No
request may leave the host: every script and style comes from the service.

Screenshots of each page go to $SONA_SCREENSHOTS (default: a temporary directory), out of git.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import uuid
from pathlib import Path

import httpx
import pytest

from tests.service.servers import ServerProcess

CHROMIUM = Path("/usr/bin/chromium")
ADMIN, USER = "console-admin-key", "console-user-key"
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _chromium_or_skip() -> None:
    if CHROMIUM.exists() and shutil.which("chromium"):
        return
    why = "Debian's chromium is not installed (apt-get install chromium; .ci/run does)"
    if os.environ.get("CI") == "true":
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    _chromium_or_skip()
    data = tmp_path_factory.mktemp("console")
    process = ServerProcess(
        data,
        "--demo",
        "--demo-users",
        "150",
        "--demo-items",
        "200",
        env={"SONA_API_KEYS": USER, "SONA_ADMIN_KEYS": ADMIN},
    ).start(timeout=300)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def browser():
    _chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    where = os.environ.get("SONA_SCREENSHOTS")
    path = Path(where) if where else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _offline_page(browser, server):
    """A page whose requests may only reach the server: anything else fails the test."""
    context = browser.new_context()
    page = context.new_page()
    outside: list[str] = []

    def route(route):
        if route.request.url.startswith(server.url):
            return route.continue_()
        outside.append(route.request.url)
        return route.abort()

    page.route("**/*", route)
    return page, outside


def _charts_with_data(page, selector: str = ".js-plotly-plot") -> int:
    """Charts drawn with at least one trace holding marks (bars, points or lines)."""
    page.wait_for_selector(f"{selector} .main-svg", timeout=30_000)
    return page.evaluate(
        """(sel) => [...document.querySelectorAll(sel)].filter(el =>
              el.querySelectorAll('.trace path, .trace .point, .trace .js-line').length > 0).length""",
        selector,
    )


def _log_in(page, server, key: str):
    page.goto(server.url + "/console")
    page.fill("#key", key)
    page.click("#login")


def _heavy_viewer(server) -> str:
    with sqlite3.connect(server.data_dir / "sona.db") as db:
        (user,) = db.execute(
            "SELECT user_id FROM events GROUP BY user_id ORDER BY COUNT(*) DESC LIMIT 1"
        ).fetchone()
    return user


def test_docs_render_the_endpoint_list_with_no_network(server, browser, shots):
    page, outside = _offline_page(browser, server)
    page.goto(server.url + "/docs")
    page.wait_for_selector(".opblock", timeout=30_000)
    operations = page.locator(".opblock").count()
    assert operations >= 10, operations
    assert page.get_by_text("/api/v1/recommendations", exact=True).count() >= 1
    page.screenshot(path=str(shots / "docs.png"), full_page=False)
    assert outside == []


def test_a_wrong_key_is_refused(server, browser):
    page, _ = _offline_page(browser, server)
    _log_in(page, server, "not-the-key")
    assert page.locator("#error").inner_text() == "wrong key"
    _log_in(page, server, USER)  # an API key that is not an admin key
    assert page.locator("#error").inner_text() == "wrong key"
    page.goto(server.url + "/console/viewer")
    assert page.url.endswith("/console/login")  # no cookie, no console
    assert httpx.get(server.url + "/console/data/metrics").status_code == 401


def test_console_pages_show_live_data(server, browser, shots):
    page, outside = _offline_page(browser, server)
    _log_in(page, server, ADMIN)
    assert page.url.rstrip("/").endswith("/console"), page.url
    assert "key" not in page.url
    headers = {"Authorization": f"Bearer {ADMIN}"}
    user = _heavy_viewer(server)
    body = {"user_id": user, "limit": 10}
    for _ in range(20):  # traffic for the live charts
        httpx.post(server.url + "/api/v1/recommendations", json=body, headers=headers, timeout=120)
    page.wait_for_timeout(4500)  # two polls: rates need a difference
    assert _charts_with_data(page) == 4
    assert page.locator("#model-version").inner_text().strip().isdigit()
    page.screenshot(path=str(shots / "overview.png"), full_page=True)

    # a viewer page lists what the API answers for the same request
    api = httpx.post(
        server.url + "/api/v1/recommendations", json=body, headers=headers, timeout=120
    ).json()
    page.goto(f"{server.url}/console/viewer?user_id={user}&device_type=tv&time_of_day=evening")
    listed = page.locator("#list-plain tr[data-content-id]").evaluate_all(
        "rows => rows.map(r => r.dataset.contentId)"
    )
    assert listed == [r["content_id"] for r in api["recommendations"]]
    assert page.locator("#list-in_context tr[data-content-id]").count() == 10
    assert _charts_with_data(page) == 4  # genres, hours, two component bars
    assert page.locator("#history tr").count() > 1
    # both lists are ten long, so MMR brings in as many as it pushes out
    assert (
        page.locator("#mmr-changes tr.brought-in").count()
        == page.locator("#mmr-changes tr.pushed-out").count()
    )
    page.screenshot(path=str(shots / "viewer.png"), full_page=True)
    watched = page.locator("#history tr a").first.get_attribute("href")

    # the same viewer with a filter typed into the page: the top item's first genre left out
    genre = httpx.get(
        f"{server.url}/api/v1/content/{listed[0]}", headers=headers, timeout=60
    ).json()["genres"][0]
    page.goto(f"{server.url}/console/viewer?user_id={user}")
    page.fill("input[name=genres_none]", genre)
    page.click("#show")
    page.wait_for_selector("#filter-summary")
    shown = page.locator("#list-plain tr[data-content-id]").evaluate_all(
        "rows => rows.map(r => r.dataset.contentId)"
    )
    assert len(shown) == 10 and listed[0] not in shown
    for content_id in shown:
        item = httpx.get(f"{server.url}/api/v1/content/{content_id}", headers=headers).json()
        assert genre not in item["genres"]
    removed = page.locator("#mmr-changes tr.filtered-out a").evaluate_all(
        "links => links.map(a => a.getAttribute('href').split('/').pop())"
    )
    assert listed[0] in removed
    page.screenshot(path=str(shots / "viewer_filtered.png"), full_page=True)

    # an item page: a listed item counts its lists; a watched one charts its views per day
    page.goto(f"{server.url}/console/item/{listed[0]}")
    assert page.locator("#item-title").inner_text()
    assert page.locator("#similar tr").count() == 11
    assert int(page.locator("#times-listed-all").inner_text()) >= 20  # the requests above
    page.goto(server.url + watched)
    assert _charts_with_data(page) == 3  # similar, popularity, views per day
    page.screenshot(path=str(shots / "item.png"), full_page=True)

    # experiments: one created through the API shows its variants; pause from the page
    experiment = httpx.post(
        server.url + "/api/v1/experiments",
        json={
            "name": f"console-{uuid.uuid4()}",
            "variants": [
                {"name": "control", "traffic": 0.5},
                {"name": "graph", "traffic": 0.5, "config": {"fusion": {"graph_based": 0.6}}},
            ],
        },
        headers=headers,
        timeout=60,
    ).json()
    for i in range(30):
        viewer = {"user_id": str(uuid.UUID(int=i + 1)), "limit": 5}
        httpx.post(
            server.url + "/api/v1/recommendations", json=viewer, headers=headers, timeout=120
        )
    page.goto(server.url + "/console/experiments")
    section = page.locator(f"#experiment-{experiment['id']}")
    assert section.get_attribute("data-status") == "running"
    assert _charts_with_data(page, f"#experiment-{experiment['id']} .js-plotly-plot") == 1
    viewers = section.locator("table tr td:nth-child(3)").all_inner_texts()
    assert sum(int(v) for v in viewers) == 30
    page.screenshot(path=str(shots / "experiments.png"), full_page=True)
    section.locator("button.action-paused").click()
    page.wait_for_load_state()
    read = httpx.get(f"{server.url}/api/v1/experiments/{experiment['id']}", headers=headers)
    assert read.json()["status"] == "paused"
    assert outside == []
