"""The input boundary against a real `sona serve` on SQLite and on PostgreSQL: schemathesis
generates valid and invalid requests from `/openapi.json` and runs every check it has (server
errors, status codes, response schemas, headers, valid data accepted, invalid data refused);
hypothesis sends raw bodies (random bytes, broken UTF-8, deep nesting, NUL, duplicate keys,
numbers too large for a double). Zero 5xx and zero findings on both stores."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.service.servers import ServerProcess, drop_postgres_database, fresh_postgres_database

DEMO = ("--demo", "--demo-users", "150", "--demo-items", "200")
KEYS = {"SONA_API_KEYS": "reader-key", "SONA_ADMIN_KEYS": "admin-key"}
ADMIN = {"Authorization": "Bearer admin-key"}
POST_ROUTES = [
    "/api/v1/recommendations",
    "/api/v1/recommendations/similar",
    "/api/v1/personalization/score",
    "/api/v1/personalization/score/batch",
    "/api/v1/profile/update",
    "/api/v1/lora/train",
    "/api/v1/content",
]
FUZZ = settings(
    max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request, tmp_path_factory):
    env = dict(KEYS)
    database = None
    if request.param == "postgres":
        database = asyncio.run(fresh_postgres_database())
        env["SONA_DATABASE_URL"] = database
    process = ServerProcess(tmp_path_factory.mktemp(f"fuzz-{request.param}"), *DEMO, env=env)
    yield process.start()
    log = (process.data_dir / f"server-{process.port}.log").read_text()
    process.stop()
    if database:
        asyncio.run(drop_postgres_database(database))
    assert "unhandled error" not in log, log[log.find("unhandled error") :][:3000]


def _insufficient_training_data(response) -> bool:
    """SPEC 5's 400 for a viewer with fewer than lora.min_events events: a rule about the store,
    which no schema of the request can state."""
    return response.status_code == 400 and response.json().get("error") == (
        "Insufficient training data"
    )


def _experiment_rule(response) -> bool:
    """A 400 for a rule across an experiment's fields (shares summing to 1, unique variant
    names, what a variant may change, shipping names a variant): no schema states them."""
    return response.status_code == 400 and response.json().get("error") == "invalid_experiment"


def test_schemathesis_finds_nothing(server):
    import schemathesis
    from schemathesis import GenerationMode
    from schemathesis.checks import CHECKS

    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    schema.config.generation.update(modes=list(GenerationMode))
    positive = CHECKS.get_by_names(["positive_data_acceptance"])
    findings, statuses = [], []
    for result in schema.get_all_operations():
        operation = result.ok()

        @FUZZ
        @given(case=operation.as_strategy())
        def check(case):
            response = case.call(base_url=server.url, headers=ADMIN, timeout=30)
            statuses.append(response.status_code)
            excluded = (
                positive
                if _insufficient_training_data(response) or _experiment_rule(response)
                else []
            )
            try:
                case.validate_response(response, excluded_checks=excluded)
            except Exception as failure:  # noqa: BLE001 - each finding is collected
                findings.append((case.method, case.path, response.status_code, str(failure)[:800]))

        check()
    assert not findings, findings[:3]
    assert not [s for s in statuses if s >= 500]
    assert len(statuses) > 200 and sum(s < 300 for s in statuses) > 50  # it exercised the API


def _raw(url: str, path: str, body: bytes, content_type: str = "application/json"):
    return httpx.post(
        url + path, content=body, headers={**ADMIN, "Content-Type": content_type}, timeout=30
    )


def _refused_naming_a_field(response) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    body = response.json()
    assert body["error"] and body["message"]


VALID = {
    "/api/v1/recommendations": {"user_id": str(uuid.uuid4()), "limit": 5},
    "/api/v1/profile/update": {
        "user_id": str(uuid.uuid4()),
        "viewing_events": [
            {
                "content_id": str(uuid.uuid4()),
                "timestamp": "2026-10-01T21:00:00Z",
                "completion_rate": 0.5,
            }
        ],
    },
    "/api/v1/content": {"items": [{"content_id": str(uuid.uuid4()), "title": "A title"}]},
}


@st.composite
def broken_bodies(draw) -> bytes:
    """A valid body made invalid in one of the ways the stores or parsers trip on."""
    path = draw(st.sampled_from(sorted(VALID)))
    text = json.dumps(VALID[path])
    how = draw(st.sampled_from(["bytes", "utf8", "nest", "nul", "duplicate", "huge", "nan"]))
    if how == "bytes":
        return draw(st.binary(max_size=300))
    if how == "utf8":
        at = draw(st.integers(0, len(text)))
        bad = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80"]))
        return text.encode()[:at] + bad + text.encode()[at:]
    if how == "nest":
        depth = draw(st.integers(17, 20_000))
        return (text[:-1] + ', "x": ' + "[" * depth + "]" * depth + "}").encode()
    if how == "nul":
        return (
            text.replace('"A title"', '"A\\u0000title"').replace('"2026', '"\\u00002026').encode()
        )
    if how == "duplicate":
        key = next(iter(VALID[path]))
        return (text[:-1] + f', "{key}": {json.dumps(VALID[path][key])}}}').encode()
    if how == "huge":
        return text.replace("0.5", "1e309").replace("5}", "1e400}").encode()
    return text.replace("0.5", "NaN").replace("5}", "Infinity}").encode()


def test_raw_bodies_are_refused_with_a_4xx_never_a_5xx(server):
    @FUZZ
    @given(path=st.sampled_from(POST_ROUTES), body=broken_bodies())
    def check(path, body):
        response = _raw(server.url, path, body)
        assert response.status_code < 500, (path, body[:200], response.text[:300])

    check()


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/recommendations", b'{"user_id": "\xff"}', "body"),
        ("/api/v1/content", b"[" * 10_000 + b"]" * 10_000, "body"),
        ("/api/v1/recommendations", b'{"user_id": "a", "user_id": "b"}', "body"),
        ("/api/v1/recommendations", b'{"user_id": "%s", "limit": NaN}', "limit"),
        ("/api/v1/profile/update", b'{"user_id": "%s", "x": [1, 2e999]}', "x.1"),
        (
            "/api/v1/content",
            b'{"items": [{"content_id": "%s", "title": "a\\u0000"}]}',
            "items.0.title",
        ),
        ("/api/v1/recommendations", b'{"user_id": "%s", "limit": false}', "limit"),
        ("/api/v1/recommendations", b'{"user_id": "%s", "exclude_watched": 1}', "exclude_watched"),
    ],
)
def test_each_malformed_body_names_what_is_wrong(server, path, body, field):
    if b"%s" in body:
        body = body.replace(b"%s", str(uuid.uuid4()).encode())
    response = _raw(server.url, path, body)
    _refused_naming_a_field(response)
    assert response.status_code == 400
    assert response.json()["message"].startswith(f"{field}:"), response.json()


def test_a_unix_timestamp_and_a_nul_series_id_are_refused_and_nothing_is_stored(server):
    content = httpx.get(f"{server.url}/api/v1/content?limit=1", headers=ADMIN).json()["items"]
    user = str(uuid.uuid4())
    event = {"content_id": content[0]["content_id"], "timestamp": 0, "completion_rate": 0.5}
    response = httpx.post(
        f"{server.url}/api/v1/profile/update",
        json={"user_id": user, "viewing_events": [event]},
        headers=ADMIN,
    )
    assert response.status_code == 400
    assert response.json()["message"].startswith("viewing_events.0.timestamp:")
    item = {"content_id": str(uuid.uuid4()), "title": "T", "series_id": "s\x00"}
    response = httpx.post(f"{server.url}/api/v1/content", json={"items": [item]}, headers=ADMIN)
    assert response.status_code == 400
    assert (
        httpx.get(f"{server.url}/api/v1/content/{item['content_id']}", headers=ADMIN).status_code
        == 404
    )


def test_a_405_says_which_methods_are_allowed(server):
    response = httpx.put(f"{server.url}/api/v1/recommendations", headers=ADMIN)
    assert response.status_code == 405
    assert "POST" in response.headers["Allow"]


def test_the_document_describes_the_api(server):
    document = httpx.get(f"{server.url}/openapi.json").json()
    item = document["components"]["schemas"]["ContentItem"]["properties"]
    embedding = item["embedding"]["anyOf"][0]
    assert embedding["minItems"] == embedding["maxItems"] == 32  # the served model's dimension
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if path.startswith("/api/"):
                assert operation["security"] == [{"bearer": []}], (method, path)
                assert {"400", "401"} <= set(operation["responses"]), (method, path)
    update = document["paths"]["/api/v1/profile/update"]["post"]
    assert {"404", "413"} <= set(update["responses"]) and update["requestBody"]["required"]
    score = document["paths"]["/api/v1/personalization/score"]["post"]["responses"]["200"]
    answer = score["content"]["application/json"]["schema"]["properties"]
    assert answer["content_id"]["format"] == answer["user_id"]["format"] == "uuid"
