"""Experiments through the HTTP API (issue 15), on the embedded store: creation refuses what a
variant may not change (naming the field), assignment is sticky and honours the traffic shares
(chi-square on 10 k viewers) and agrees across processes, lists carry their id and variant,
views are attributed by id and by window, and shipping a variant changes the served default."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jax
import numpy as np
import pytest
import pytest_asyncio
from quart.testing.app import TestApp as QuartTestApp
from scipy import stats

from service.app import Settings, create_app
from service.experiments.statistics import assign
from service.learning.versions import train_from_store
from service.settings import ServingSettings
from service.state import app_state
from sona_jax.config import SonaConfig
from sona_jax.serve.batch import Query

pytestmark = pytest.mark.asyncio(loop_scope="module")
SMALL = SonaConfig().with_overrides({"model": {"embedding_dim": 32}})
SERVING = ServingSettings(
    max_body_bytes=200_000,
    warm_up=False,
    tables_refresh_seconds=3600,
    compilation_cache=False,
    recommendation_ttl_seconds=0,
    max_wait_ms=0.0,  # programs compile as the first batches of each size arrive
    max_variant_models=1,
)
GRAPH_ONLY = {
    "fusion": {"collaborative": 0.0, "content_based": 0.0, "graph_based": 1.0, "context": 0.0},
    "diversity": {"mmr_lambda": 1.0},
}
ROOT = Path(__file__).resolve().parents[3]
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


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


async def _create(client, name, variants, **extra):
    response = await client.post(
        "/api/v1/experiments", json={"name": name, "variants": variants, **extra}
    )
    return response.status_code, await response.get_json()


async def _status(client, experiment_id, status, variant=None):
    body = {"status": status} | ({"variant": variant} if variant else {})
    response = await client.post(f"/api/v1/experiments/{experiment_id}/status", json=body)
    return response.status_code, await response.get_json()


async def _recommend(client, user, limit=10):
    response = await client.post("/api/v1/recommendations", json={"user_id": user, "limit": limit})
    body = await response.get_json()
    assert response.status_code == 200, body
    return body


async def _score(client, user, content_ids):
    """The batch score answer's scores, by content id."""
    response = await client.post(
        "/api/v1/personalization/score/batch", json={"user_id": user, "content_ids": content_ids}
    )
    body = await response.get_json()
    assert response.status_code == 200, body
    return {row["content_id"]: row["score"] for row in body["scores"]}


async def _heavy_users(app, n):
    events = await app_state(app).store.all_events()
    counts = {}
    for e in events:
        counts[e.user_id] = counts.get(e.user_id, 0) + 1
    return sorted(counts, key=counts.get, reverse=True)[:n]


@pytest.mark.parametrize(
    ("variants", "field"),
    [
        ([{"name": "a", "traffic": 0.5}, {"name": "b", "traffic": 0.4}], "variants"),
        (
            [
                {"name": "a", "traffic": 0.5},
                {"name": "b", "traffic": 0.5, "config": {"lora": {"rank": 4}}},
            ],
            "variants.1.config.lora",
        ),
        (
            [
                {"name": "a", "traffic": 0.5},
                {"name": "b", "traffic": 0.5, "config": {"cold_start": {"most_exploration": 1}}},
            ],
            "variants.1.config.cold_start.most_exploration",
        ),
        (
            [
                {"name": "a", "traffic": 0.5},
                {"name": "b", "traffic": 0.5, "config": {"cold_start": {"exploration_start": 0.9}}},
            ],
            "variants.1.config",
        ),
        (
            [
                {"name": "a", "traffic": 0.5},
                {"name": "b", "traffic": 0.5, "config": {"diversity": {"mmr_lambda": 3}}},
            ],
            "variants.1.config",
        ),
        ([{"name": "a", "traffic": 0.5}, {"name": "a", "traffic": 0.5}], "variants.1.name"),
        (
            [{"name": "a", "traffic": 0.5}, {"name": "b", "traffic": 0.5, "model_version": 99}],
            "variants.1.model_version",
        ),
        ([{"name": "a", "traffic": 0.5}, {"name": "b", "traffic": 0.5, "colour": 1}], "colour"),
    ],
)
async def test_bad_experiments_get_a_400_naming_the_field(api, variants, field):
    client, _ = api
    status, body = await _create(client, f"bad-{uuid.uuid4()}", variants)
    assert status == 400, body
    assert field in body["message"], body


async def test_lists_carry_their_id_and_variant_and_views_are_attributed(api):
    client, app = api
    status, experiment = await _create(
        client,
        "attribution",
        [
            {"name": "control", "traffic": 0.5},
            {"name": "graph", "traffic": 0.5, "config": GRAPH_ONLY},
        ],
        attribution_window_minutes=60,
    )
    assert status == 201, experiment
    assert (await _create(client, "attribution", experiment["variants"]))[0] == 409
    eid = experiment["id"]
    record = await app_state(app).store.experiment(eid)
    users = await _heavy_users(app, 8)
    shown = {}
    for user in users:
        body = await _recommend(client, user)
        uuid.UUID(body["recommendation_id"])
        variant = ["control", "graph"][assign(record.salt, user, (0.5, 0.5))]
        assert (body["experiment"], body["variant"]) == (eid, variant)
        assert body["experiments"] == [{"experiment": eid, "variant": variant}]
        again = await _recommend(client, user)
        assert again["variant"] == variant  # sticky
        assert again["recommendation_id"] != body["recommendation_id"]
        shown[user] = body
    # An operator looking at a viewer in the console is not an exposure (nor a listed item).
    listed_before = sum(app_state(app).metrics.item_listed.values())
    assert (await client.get(f"/console/viewer?user_id={users[0]}")).status_code == 200
    assert sum(app_state(app).metrics.item_listed.values()) == listed_before
    now = datetime.now(UTC)
    by_id, by_window, too_late, dismissing = users[:4]

    async def view(user, content_id, at, **extra):
        event = {"content_id": content_id, "timestamp": at.isoformat(), "completion_rate": 0.95}
        response = await client.post(
            "/api/v1/profile/update",
            json={"user_id": user, "viewing_events": [event | extra]},
        )
        assert response.status_code == 200, await response.get_json()

    first = {u: shown[u]["recommendations"][0]["content_id"] for u in users}
    await view(
        by_id,
        first[by_id],
        now + timedelta(hours=5),
        recommendation_id=shown[by_id]["recommendation_id"],
    )
    await view(by_window, first[by_window], now + timedelta(minutes=5))
    await view(too_late, first[too_late], now + timedelta(hours=5))
    await view(dismissing, first[dismissing], now, completion_rate=0.0, dismissed=True)
    response = await client.get(f"/api/v1/experiments/{eid}")
    result = (await response.get_json())["results"]
    by_name = {v["name"]: v for v in result["variants"]}
    arm = {u: shown[u]["variant"] for u in users}
    for name in ("control", "graph"):
        members = [u for u in users if arm[u] == name]
        assert by_name[name]["users"] == len(members)
        assert by_name[name]["lists"] == 2 * len(members)
        clicked = [u for u in (by_id, by_window) if arm[u] == name]
        assert by_name[name]["conversions"] == len(clicked), (name, result)
        assert by_name[name]["dismissals"] == (arm[dismissing] == name)
    assert [c["variant"] for c in result["comparisons"]] == ["graph"]
    comparison = result["comparisons"][0]
    low, high = comparison["ci95"]
    assert low <= comparison["difference"] <= high
    assert comparison["decision"] == "continue"  # eight viewers decide nothing
    assert await _status(client, eid, "stopped") == (
        200,
        (await _status(client, eid, "stopped"))[1],
    )


async def test_shipping_a_variant_changes_the_served_default(api):
    client, app = api
    state = app_state(app)
    user = (await _heavy_users(app, 1))[0]
    before = [r["content_id"] for r in (await _recommend(client, user, 20))["recommendations"]]
    scored_ids = before[:5] + [state.runtime.engine.item_ids[i] for i in range(3)]
    scores_before = await _score(client, user, scored_ids)
    status, experiment = await _create(
        client,
        "ship",
        [
            {"name": "control", "traffic": 0.5},
            {"name": "graph", "traffic": 0.5, "config": GRAPH_ONLY},
        ],
        status="paused",
    )
    assert status == 201, experiment
    eid = experiment["id"]
    paused = await _recommend(client, user, 20)
    assert "experiment" not in paused  # paused: nobody is in it
    assert (await _status(client, eid, "shipped"))[0] == 400  # which variant?
    status, shipped = await _status(client, eid, "shipped", "graph")
    assert status == 200 and shipped["shipped_variant"] == "graph", shipped
    after = await _recommend(client, user, 20)
    assert "experiment" not in after
    served = [r["content_id"] for r in after["recommendations"]]
    # what the engine serves under the variant's config, asked directly
    engine = state.runtime.engine.with_config(SMALL.with_overrides(GRAPH_ONLY))
    _, profile = await state.profiles.entry(user)
    lists, _ = engine.recommend_queries([Query(profile, 20, True, 1.0)])
    assert served == [engine.item_ids[i] for i in lists.items[0] if i >= 0]
    assert served != before
    # scores, which search re-ranks by, follow the shipped variant as lists do
    shipped_scores = await _score(client, user, scored_ids)
    rows = np.array([state.runtime.engine.item_index[c] for c in scored_ids], np.int32)
    direct, _ = engine.score_queries([Query(profile, items=rows)])
    np.testing.assert_allclose(
        [shipped_scores[c] for c in scored_ids], direct[0].score, rtol=1e-5, atol=1e-6
    )
    assert shipped_scores != scores_before
    assert (await _status(client, eid, "running"))[0] == 409  # shipped: stop first
    assert (await _status(client, eid, "stopped"))[0] == 200  # the default is back
    back = [r["content_id"] for r in (await _recommend(client, user, 20))["recommendations"]]
    assert back == before
    assert await _score(client, user, scored_ids) == pytest.approx(scores_before, rel=1e-6)


async def test_a_cold_start_variant_serves_its_own_blend_and_exploration(api):
    """A variant that keeps every viewer in cold start's blend (β = 0) with one exploration
    slot in ten lists only cold-start and exploration items to its viewers; the control's
    heavy viewers get personal lists; nothing compiles beyond what the control compiled."""
    client, app = api
    slow = {
        "cold_start": {
            "min_events": 100_000,
            "blend_events": 100_000,
            "exploration_floor": 0.1,
            "exploration_start": 0.1,
        }
    }
    status, experiment = await _create(
        client,
        f"cold-{uuid.uuid4()}",
        [{"name": "control", "traffic": 0.5}, {"name": "slow", "traffic": 0.5, "config": slow}],
    )
    assert status == 201, experiment
    kinds = {"control": [], "slow": []}
    for user in await _heavy_users(app, 30):
        body = await _recommend(client, user)
        arm = next(e for e in body["experiments"] if e["experiment"] == experiment["id"])
        kinds[arm["variant"]].append([r["recommendation_type"] for r in body["recommendations"]])
    assert kinds["control"] and kinds["slow"], kinds
    for listed in kinds["slow"]:
        assert set(listed) <= {"cold_start", "exploration"}, listed
        assert listed.count("exploration") == 1, listed
    personal = {"collaborative", "content_based", "graph_based", "sequential", "context_aware"}
    assert all(personal & set(listed) for listed in kinds["control"]), kinds["control"]
    assert (await _status(client, experiment["id"], "stopped"))[0] == 200


async def test_shares_on_ten_thousand_viewers_and_assignment_in_another_process(api):
    client, app = api
    shares = [0.1] * 10  # ten variants live, each its own fusion weights
    variants = [
        {
            "name": f"v{i}",
            "traffic": share,
            "config": {
                "fusion": {"graph_based": 0.1 + 0.1 * i},
                "diversity": {"mmr_lambda": 0.5 + 0.05 * i},
            },
        }
        for i, share in enumerate(shares)
    ]
    status, experiment = await _create(client, "ten", variants)
    assert status == 201, experiment
    eid = experiment["id"]
    users = [
        str(uuid.UUID(int=int(x))) for x in np.random.default_rng(3).integers(0, 2**62, 10_000)
    ]
    served = {}
    for start in range(0, len(users), 100):
        part = users[start : start + 100]
        bodies = await asyncio.gather(*(_recommend(client, u, 3) for u in part))
        served.update({u: b["variant"] for u, b in zip(part, bodies, strict=True)})
    observed = np.array([sum(v == f"v{i}" for v in served.values()) for i in range(10)])
    assert stats.chisquare(observed, np.array(shares) * len(users)).pvalue > 0.001, observed
    result = (await (await client.get(f"/api/v1/experiments/{eid}")).get_json())["results"]
    assert [v["users"] for v in result["variants"]] == observed.tolist()
    assert not result["sample_ratio"]["mismatch"]
    # another process reading the same store assigns every viewer the same variant
    sample = users[:500]
    script = (
        "import asyncio, json, sys\n"
        "from service.experiments.live import Experiments\n"
        "from service.storage import open_store\n"
        "from sona_jax.config import SonaConfig\n"
        "async def main():\n"
        "    store = open_store(None, sys.argv[1]); await store.open()\n"
        "    live = Experiments(store, SonaConfig(), 1.0, 1.0); await live.refresh()\n"
        "    users = json.loads(sys.stdin.read())\n"
        "    print(json.dumps({u: [a.tag() for a in live.assignment(u).arms] for u in users}))\n"
        "    await store.close()\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(app_state(app).settings.data_dir)],
        input=json.dumps(sample),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=True,
    )
    elsewhere = json.loads(done.stdout)
    for user in sample:
        tags = {t["experiment"]: t["variant"] for t in elsewhere[user]}
        assert tags[eid] == served[user]
    assert (await _status(client, eid, "stopped"))[0] == 200


async def _wait_for(condition, seconds=120.0):
    for _ in range(int(seconds * 10)):
        if condition():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("timed out")


async def test_a_model_version_variant_serves_that_version_and_shipping_pins_it(api):
    """A variant naming the version served now keeps serving it after a newer one arrives (its
    viewers' lists are that version's, the control's the newer one's); the store keeps it past
    ``keep_versions``; shipping it makes it the default until the experiment stops; a version
    the served config cannot serve, or one over ``serving.max_variant_models``, gets a 400."""
    client, app = api
    state = app_state(app)
    old = state.runtime.version
    status, experiment = await _create(
        client,
        f"model-{uuid.uuid4()}",
        [{"name": "newest", "traffic": 0.5}, {"name": "old", "traffic": 0.5, "model_version": old}],
    )
    assert status == 201, experiment
    eid = experiment["id"]
    users = await _heavy_users(app, 24)
    catalogue = sorted({e.content_id for e in await state.store.all_events()})
    for user in users[:12]:  # new history, so that the next version differs from this one
        events = [
            {"content_id": c, "timestamp": datetime.now(UTC).isoformat(), "completion_rate": 1.0}
            for c in catalogue[-40::4]
        ]
        response = await client.post(
            "/api/v1/profile/update", json={"user_id": user, "viewing_events": events}
        )
        assert response.status_code == 200
    newer = await train_from_store(state.store, state.cfg, state.settings.model_dir, keep=1)
    assert await state.store.model_record(old) is not None  # named by a running experiment
    await state.swap_to_wanted()
    assert state.runtime.version == newer.version > old
    await _wait_for(lambda: state.model_arms.status(old) != "loading")
    assert state.model_arms.status(old) == "serving"
    arm = state.model_arms.serving_version(old)
    lam = state.cfg.diversity.mmr_lambda
    seen, differs, compiled = {"newest": 0, "old": 0}, False, []

    def count(name, *_, **__):
        if name == COMPILE_EVENT:
            compiled.append(name)

    jax.monitoring.register_event_duration_secs_listener(count)
    after_newest = 0  # compilations once the newest version has run the same viewer

    async def direct(runtime, profiles, user):
        _, profile = await profiles.entry(user)
        assert profile.model_version == runtime.version
        found, _ = runtime.engine.recommend_queries([Query(profile, 10, True, lam)])
        return [runtime.engine.item_ids[i] for i in found.items[0] if i >= 0]

    for user in users:
        newest = await direct(state.runtime, state.profiles, user)
        before = len(compiled)
        body = await _recommend(client, user, 10)
        old_list = await direct(arm.runtime, arm.profiles, user)
        after_newest += len(compiled) - before
        tag = next(t for t in body["experiments"] if t["experiment"] == eid)
        served = [r["content_id"] for r in body["recommendations"]]
        assert served == {"newest": newest, "old": old_list}[tag["variant"]], (tag, user)
        seen[tag["variant"]] += 1
        differs |= tag["variant"] == "old" and newest != old_list  # the arm is seen
        # the viewer's scores come from the version their list does
        runtime, profiles = {
            "newest": (state.runtime, state.profiles),
            "old": (arm.runtime, arm.profiles),
        }[tag["variant"]]
        _, profile = await profiles.entry(user)
        rows = np.array([runtime.engine.item_index[c] for c in served[:4]], np.int32)
        direct_scores, _ = runtime.engine.score_queries([Query(profile, items=rows)])
        got = await _score(client, user, served[:4])
        np.testing.assert_allclose(
            [got[c] for c in served[:4]], direct_scores[0].score, rtol=1e-5, atol=1e-6
        )
    assert seen["newest"] and seen["old"] and differs, seen
    jax.monitoring.unregister_event_duration_listener(count)
    assert after_newest == 0  # the old version has the newest one's shapes: its programs
    # the arm's viewer's own new events reach the arm's profile at once
    record = await state.store.experiment(eid)
    viewer = next(u for u in users if assign(record.salt, u, (0.5, 0.5)) == 1)
    before = (await arm.profiles.entry(viewer))[1].events
    event = {
        "content_id": catalogue[1],
        "timestamp": datetime.now(UTC).isoformat(),
        "completion_rate": 1.0,
    }
    response = await client.post(
        "/api/v1/profile/update", json={"user_id": viewer, "viewing_events": [event]}
    )
    assert response.status_code == 200
    served = [r["content_id"] for r in (await _recommend(client, viewer, 10))["recommendations"]]
    _, profile = await arm.profiles.entry(viewer)
    assert profile.events == before + 1
    assert served == await direct(arm.runtime, arm.profiles, viewer)
    detail = await (await client.get(f"/api/v1/experiments/{eid}")).get_json()
    assert detail["model_versions"] == {str(old): "serving"}
    # over the cap (one version for variants here), and beside a live model experiment
    status, body = await _create(
        client,
        "two-models",
        [
            {"name": "a", "traffic": 0.4},
            {"name": "b", "traffic": 0.3, "model_version": old},
            {"name": "c", "traffic": 0.3, "model_version": newer.version},
        ],
    )
    assert status == 400 and "variants.2.model_version" in body["message"], body
    assert "max_variant_models" in body["message"]

    async def refused(version: int, why: str) -> None:
        variants = [{"name": "a", "traffic": 0.5}, {"name": "b", "traffic": 0.5}]
        variants[1]["model_version"] = version
        status, body = await _create(client, f"refused-{version}", variants)
        assert status == 400 and "variants.1.model_version" in body["message"], body
        assert why in body["message"]

    await refused(newer.version, "one model experiment at a time")
    # shipping pins the default to the old version; stopping goes back to the newest
    assert (await _status(client, eid, "shipped", "old"))[0] == 200
    await _wait_for(lambda: state.runtime.version == old)  # swapped by the status change
    assert await state._events_since_model() == 0  # no scheduled rebuild while pinned
    assert not state.model_arms.live  # no running experiment names a version
    user = users[0]
    assert "experiment" not in await _recommend(client, user)
    assert (await _status(client, eid, "stopped"))[0] == 200
    await _wait_for(lambda: state.runtime.version == newer.version)
    # a version trained under other train-time settings cannot serve under this config
    other = await train_from_store(
        state.store, SMALL.with_overrides({"model": {"seed": 7}}), state.settings.model_dir, keep=4
    )
    await refused(other.version, "model.seed")


async def test_experiments_need_an_admin_key_when_keys_are_configured():
    from service.errors import ApiError
    from service.http.auth import KeyCheck

    check = KeyCheck(frozenset({"user"}), frozenset({"admin"}))
    check("GET", "/api/v1/experiments", "Bearer user")
    check("POST", "/api/v1/experiments", "Bearer admin")
    with pytest.raises(ApiError) as refused:
        check("POST", "/api/v1/experiments/x/status", "Bearer user")
    assert refused.value.status == 403
