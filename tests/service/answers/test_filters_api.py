"""Request filters and "not interested" through the HTTP API (issue 15), on the embedded store:
lists hold only what the filters let through and stay full, unknown fields and genres get a
400 naming them, and a dismissal takes effect on the next request."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_asyncio
from quart.testing.app import TestApp as QuartTestApp

from service.app import Settings, create_app
from service.settings import ServingSettings
from service.state import app_state
from sona_jax.config import SonaConfig

pytestmark = pytest.mark.asyncio(loop_scope="module")
SMALL = SonaConfig().with_overrides({"model": {"embedding_dim": 32}})
SERVING = ServingSettings(
    max_body_bytes=200_000,
    warm_up=False,
    tables_refresh_seconds=3600,
    compilation_cache=False,
    max_wait_ms=0.0,  # programs compile as the first requests of each shape arrive
)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(tmp_path_factory):
    settings = Settings(
        config=SMALL,
        serving=SERVING,
        data_dir=Path(tmp_path_factory.mktemp("sona")),
        demo="synthetic",
        demo_users=150,
        demo_items=300,
    )
    app = create_app(settings)
    async with QuartTestApp(app, startup_timeout=180, shutdown_timeout=60) as test_app:
        await app_state(app).started()
        yield test_app.test_client(), app


async def _setting(app):
    """A viewer with events, and the catalogue's metadata by content id."""
    store = app_state(app).store
    events = await store.all_events()
    user = max({e.user_id for e in events}, key=lambda u: sum(e.user_id == u for e in events))
    items = {str(c.content_id): c for c in await store.list_content(500, None)}
    return user, items


async def _recommend(client, user, filters, limit=10, **extra):
    response = await client.post(
        "/api/v1/recommendations",
        json={"user_id": user, "limit": limit, "filters": filters, **extra},
    )
    body = await response.get_json()
    assert response.status_code == 200, body
    return [r["content_id"] for r in body["recommendations"]]


async def test_filtered_lists_hold_only_what_passes_and_stay_full(api):
    client, app = api
    user, items = await _setting(app)
    plain = await _recommend(client, user, None)
    genre = items[plain[0]].genres[0]
    years = sorted(c.release_year for c in items.values() if c.release_year is not None)
    low, high = years[len(years) // 4], years[3 * len(years) // 4]
    filters = {
        "genres_any": [genre],
        "release_year_min": low,
        "release_year_max": high,
        "exclude_content_ids": plain[:3],
    }
    listed = await _recommend(client, user, filters)
    assert len(listed) == 10, listed  # hundreds of items qualify
    for content_id in listed:
        item = items[content_id]
        assert genre in item.genres and low <= item.release_year <= high, item
    assert not set(listed) & set(plain[:3])
    assert (
        await _recommend(client, user, {"release_year_min": 2000, "release_year_max": 1990}) == []
    )
    none = await _recommend(client, user, {"genres_none": [genre]})
    assert len(none) == 10 and all(genre not in items[c].genres for c in none)
    # the kept candidates of the unfiltered list are untouched: it comes back the same
    assert await _recommend(client, user, None) == plain


async def test_one_per_series(api):
    client, app = api
    user, items = await _setting(app)
    plain = await _recommend(client, user, None, limit=40)
    one = await _recommend(client, user, {"one_per_series": True}, limit=40)
    series = [items[c].series_id for c in one if items[c].series_id is not None]
    assert len(series) == len(set(series)), series
    before = [items[c].series_id for c in plain if items[c].series_id is not None]
    assert len(before) > len(set(before)), "the demo lists several items of a series unfiltered"


@pytest.mark.parametrize(
    ("filters", "field"),
    [
        ({"genre_any": ["Drama"]}, "filters.genre_any"),
        ({"duration_min": -5}, "filters.duration_min"),
        ({"exclude_content_ids": ["not-a-uuid"]}, "filters.exclude_content_ids.0"),
    ],
)
async def test_bad_filters_get_a_400_naming_the_field(api, filters, field):
    client, app = api
    user, _ = await _setting(app)
    response = await client.post(
        "/api/v1/recommendations", json={"user_id": user, "limit": 5, "filters": filters}
    )
    body = await response.get_json()
    assert response.status_code == 400, body
    assert field in body["message"], body


async def test_unknown_genres_are_ignored_and_named(api):
    client, app = api
    user, items = await _setting(app)
    genre = next(iter(items.values())).genres[0]
    response = await client.post(
        "/api/v1/recommendations",
        json={
            "user_id": user,
            "limit": 5,
            "filters": {"genres_any": [genre.upper(), "No Such Genre"]},
        },
    )
    body = await response.get_json()
    assert response.status_code == 200, body
    assert body["ignored_filters"] == {"genres_any": ["No Such Genre"]}
    assert len(body["recommendations"]) == 5
    assert all(genre in items[r["content_id"]].genres for r in body["recommendations"])


async def test_similar_items_and_batch_scores_apply_the_filters(api):
    client, app = api
    user, items = await _setting(app)
    anchor = next(iter(items))
    genre = items[anchor].genres[0]
    response = await client.post(
        "/api/v1/recommendations/similar",
        json={"content_id": anchor, "limit": 10, "filters": {"genres_none": [genre]}},
    )
    similar = [s["content_id"] for s in (await response.get_json())["similar_content"]]
    assert len(similar) == 10 and all(genre not in items[c].genres for c in similar)
    ids = list(items)[:40]
    response = await client.post(
        "/api/v1/personalization/score/batch",
        json={"user_id": user, "content_ids": ids, "filters": {"genres_any": [genre]}},
    )
    body = await response.get_json()
    assert response.status_code == 200, body
    scored = {s["content_id"] for s in body["scores"]}
    assert scored and all(genre in items[c].genres for c in scored)
    assert set(body["filtered_content_ids"]) == {c for c in ids if genre not in items[c].genres}


async def test_not_interested_takes_effect_on_the_next_request(api):
    client, app = api
    user, _ = await _setting(app)
    before = await _recommend(client, user, None, limit=20, diversity_threshold=0.0)
    event = {
        "content_id": before[0],
        "timestamp": "2026-12-01T20:00:00Z",
        "completion_rate": 0.0,
        "dismissed": True,
    }
    response = await client.post(
        "/api/v1/profile/update", json={"user_id": user, "viewing_events": [event]}
    )
    assert response.status_code == 200
    after = await _recommend(client, user, None, limit=20, diversity_threshold=0.0)
    assert before[0] not in after
    engine = app_state(app).runtime.engine
    vectors = engine.state.item_diversity
    index = engine.item_index
    closest = max(before[1:], key=lambda c: float(vectors[index[c]] @ vectors[index[before[0]]]))
    cosine = float(vectors[index[closest]] @ vectors[index[before[0]]])
    if cosine > SMALL.filters.dismissal_min_similarity:  # its neighbour fell (or left)
        assert closest not in after or after.index(closest) >= before.index(closest) - 1
