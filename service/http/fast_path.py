"""A lean ASGI path for the two hot endpoints (recommendations and personalization score).

Quart's request cycle (request/response objects, hooks, context locals, schema decorators) costs
more per request than the micro-batched engine call does per user, so under load the event loop,
not the engine, was the limit. `FastPath` wraps the Quart app: a well-formed JSON POST to a hot
route is authenticated, parsed by the *same* input boundary (`service.http.body`), validated with the
*same* pydantic model, answered by the *same* handler
function the Quart route uses, and recorded in the same metrics, without entering Quart.

Anything unusual goes to Quart unchanged (its body replayed), so there is one source of truth for
every error answer: a body that fails validation, a wrong content type, an oversized or chunked
body, a missing key. The fast path only ever answers the requests it fully understands.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pydantic import BaseModel, ValidationError

from service.errors import ApiError
from service.http.body import parse_json
from service.serving.admission import mark_started

JSON_HEADERS = [(b"content-type", b"application/json")]


@dataclass(frozen=True)
class HotRoute:
    """A POST route served by the fast path: its request model, the handler both paths share
    (validated request -> JSON body) and the endpoint label the metrics use."""

    model: type[BaseModel]
    handler: Callable[[BaseModel], Awaitable[bytes]]
    endpoint: str


class FastPath:
    """ASGI middleware: ``routes`` by path; ``authorise(method, path, header)`` raises `ApiError`
    for a request it refuses; ``record(endpoint, status, seconds)`` counts it."""

    def __init__(
        self,
        app,
        routes: dict[str, HotRoute],
        max_body_bytes: int,
        max_json_depth: int,
        authorise: Callable[[str, str, str], None],
        record: Callable[[str, int, float], None],
        on_error: Callable[[Exception], ApiError],
    ):
        self.app, self.routes, self.max_body = app, routes, max_body_bytes
        self.max_depth = max_json_depth
        self.authorise, self.record, self.on_error = authorise, record, on_error

    async def __call__(self, scope, receive, send) -> None:
        route = (
            self.routes.get(scope["path"])
            if scope["type"] == "http" and scope["method"] == "POST"
            else None
        )
        if route is None:
            return await self.app(scope, receive, send)
        mark_started()
        started = time.perf_counter()
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name, value)  # the first of repeated headers, as Quart reads them
        length = headers.get(b"content-length")
        media_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if (
            media_type != b"application/json"
            or length is None
            or not length.isdigit()
            or int(length) > self.max_body
        ):
            return await self.app(scope, receive, send)
        body = await _read_body(receive)
        try:
            self.authorise(
                "POST", scope["path"], headers.get(b"authorization", b"").decode("latin-1")
            )
            data = route.model.model_validate(parse_json(body, self.max_depth))
        except ApiError as refused:
            return await self._refuse(send, route, started, refused)
        except ValidationError:  # Quart words the 400 (field names and messages)
            return await self.app(scope, _replay(body, receive), send)
        try:
            payload = await _unless_disconnected(route.handler(data), receive)
        except ClientGone:
            return  # nobody to answer; the batcher skipped the cancelled request
        except Exception as error:  # noqa: BLE001 - answered like Quart's error handlers
            return await self._refuse(send, route, started, self.on_error(error))
        await self._answer(send, route, started, 200, payload, {})

    async def _refuse(self, send, route: HotRoute, started: float, error: ApiError) -> None:
        await self._answer(send, route, started, error.status, error.body(), error.headers)

    async def _answer(
        self, send, route: HotRoute, started: float, status: int, body: bytes, extra: dict[str, str]
    ) -> None:
        headers = [*JSON_HEADERS, (b"content-length", str(len(body)).encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in extra.items()]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        self.record(route.endpoint, status, time.perf_counter() - started)


class ClientGone(Exception):
    """The caller hung up before its answer was ready."""


async def _unless_disconnected(work, receive):
    """Await ``work``, cancelled if the client disconnects first (as Quart does): a cancelled
    request waiting in a micro-batcher is then skipped, not computed. One watcher task per
    request, which cancels this one (cheaper than racing two tasks with `asyncio.wait`)."""
    loop = asyncio.get_running_loop()  # once: each lookup by asyncio costs a getpid() call
    current = asyncio.current_task(loop)
    hung_up = loop.create_future()
    watcher = loop.create_task(_cancel_on_disconnect(receive, current, hung_up))
    try:
        return await work
    except asyncio.CancelledError:
        if not hung_up.done():
            raise  # cancelled from outside (shutdown): not ours to swallow
        current.uncancel()
        raise ClientGone from None
    finally:
        watcher.cancel()


async def _cancel_on_disconnect(receive, task: asyncio.Task, hung_up: asyncio.Future) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    hung_up.set_result(True)
    task.cancel()


async def _read_body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive):
    """A receive callable that hands Quart the already-read body first."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay():
        return pending.pop() if pending else await receive()

    return replay
