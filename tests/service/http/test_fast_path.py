"""The ASGI fast path on its own: what it answers, what it leaves to the app behind it, and
callers that hang up."""

import asyncio

import pytest
from pydantic import BaseModel

from service.errors import ApiError
from service.http.fast_path import FastPath, HotRoute

pytestmark = pytest.mark.asyncio


class Body(BaseModel):
    n: int


def _scope(content_type=b"application/json", body=b'{"n": 2}', path="/hot"):
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())],
    }


def _messages(body, then_disconnect_after=None):
    queue = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        if queue:
            return queue.pop(0)
        if then_disconnect_after is None:
            await asyncio.sleep(3600)
        await asyncio.sleep(then_disconnect_after)
        return {"type": "http.disconnect"}

    return receive


def _fast_path(handler, fallback_calls, records):
    async def fallback(scope, receive, send):
        message = await receive()
        fallback_calls.append(message["body"])
        await send({"type": "http.response.start", "status": 418, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def authorise(method, path, header):
        if header == "Bearer bad":
            raise ApiError(401, "unauthorized", "no", headers={"WWW-Authenticate": "Bearer"})

    return FastPath(
        fallback,
        {"/hot": HotRoute(Body, handler, "/hot")},
        1000,
        16,
        authorise,
        lambda endpoint, status, seconds: records.append((endpoint, status)),
        lambda error: ApiError(503, "overloaded", str(error)),
    )


async def test_answers_well_formed_requests_and_leaves_the_rest_to_the_app():
    async def handler(data: Body) -> bytes:
        return b'{"twice": %d}' % (2 * data.n)

    fallback_calls, records, sent = [], [], []

    async def send(message):
        sent.append(message)

    app = _fast_path(handler, fallback_calls, records)
    await app(_scope(), _messages(b'{"n": 2}'), send)
    assert sent[0]["status"] == 200 and sent[1]["body"] == b'{"twice": 4}'
    assert records == [("/hot", 200)] and fallback_calls == []

    for scope, body in (
        (_scope(body=b'{"n": "x"}'), b'{"n": "x"}'),  # invalid: app words it
        (_scope(content_type=b"application/jsonx"), b'{"n": 2}'),
        (_scope(content_type=b"text/plain"), b'{"n": 2}'),
        (_scope(path="/other"), b'{"n": 2}'),
    ):
        sent.clear()
        await app(scope, _messages(body), send)
        assert sent[0]["status"] == 418 and fallback_calls[-1] == body  # replayed in full
    assert len(fallback_calls) == 4 and records == [("/hot", 200)]


async def test_errors_are_answered_as_json_and_counted():
    async def handler(data: Body) -> bytes:
        raise RuntimeError("queue full")

    records, sent = [], []

    async def send(message):
        sent.append(message)

    app = _fast_path(handler, [], records)
    await app(_scope(), _messages(b'{"n": 2}'), send)
    assert sent[0]["status"] == 503 and b'"error":"overloaded"' in sent[1]["body"]
    scope = _scope()
    scope["headers"].append((b"authorization", b"Bearer bad"))
    sent.clear()
    await app(scope, _messages(b'{"n": 2}'), send)
    assert sent[0]["status"] == 401 and (b"www-authenticate", b"Bearer") in sent[0]["headers"]
    assert records == [("/hot", 503), ("/hot", 401)]


async def test_a_caller_that_hangs_up_is_not_answered_and_its_work_is_cancelled():
    cancelled = asyncio.Event()

    async def handler(data: Body) -> bytes:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return b"{}"

    records, sent = [], []

    async def send(message):
        sent.append(message)

    app = _fast_path(handler, [], records)
    await asyncio.wait_for(
        app(_scope(), _messages(b'{"n": 2}', then_disconnect_after=0.05), send), 2
    )
    assert cancelled.is_set() and sent == [] and records == []
