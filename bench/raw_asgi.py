"""The stack's own limit for `bench/throughput.py`: a bare ASGI callable answering every request with a
canned recommendations body, on the same uvicorn settings as `sona serve` (uvloop, httptools).

    python -m bench.raw_asgi PORT
"""

from __future__ import annotations

import sys

import orjson
import uvicorn

BODY = orjson.dumps(
    {
        "recommendations": [
            {
                "content_id": f"item-{i}",
                "confidence_score": 0.5,
                "recommendation_type": "collaborative",
                "based_on": None,
                "explanation": "Popular with viewers like you",
            }
            for i in range(20)
        ],
        "generated_at": "2026-12-03T00:00:00+00:00",
        "ttl_seconds": 0,
    }
)
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )
