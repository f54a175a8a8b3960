"""A catalogue that grows through several capacity steps on a live server (issue 35): every write
is acknowledged, every item is served, the server stays up, and the compiled programs and
memory mappings alive stay bounded however many shapes it went through."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.service.servers import ServerProcess

# Programs compiled before serving (warm_up), a small capacity step, two batch sizes (fewer
# programs per step: this test compiles five sets).
CONFIG = """
[model]
embedding_dim = 32
[catalogue]
capacity_min_step = 8
capacity_headroom = 0.5
[serving]
batch_window_ms = 1.0
batch_sizes = [1, 8]
catalogue_poll_seconds = 0.3
recommendation_ttl_seconds = 0
"""


def _mappings(pid: int) -> int:
    return len(Path(f"/proc/{pid}/maps").read_text().splitlines())


@pytest.mark.timeout(600)
def test_items_across_three_capacity_steps_are_all_served_with_bounded_programs(tmp_path):
    server = ServerProcess(
        tmp_path,
        "--demo",
        "--demo-users",
        "150",
        "--demo-items",
        "200",
        env={"SONA_COMPILATION_CACHE_DIR": ""},  # its own: these shapes compile here
        config_text=CONFIG,
    ).start(timeout=300)
    try:
        url, pid = server.url, server.process.pid
        ready = httpx.get(url + "/ready").json()["model"]
        per_set = ready["served_programs"]
        capacities, mappings, posted = [ready["item_capacity"]], [], []
        viewer = str(uuid.uuid4())
        with httpx.Client(timeout=60) as client:

            def settle() -> dict:
                """/ready's model once nothing waits for a capacity's programs."""
                deadline = time.monotonic() + 180
                while (ready := client.get(url + "/ready").json()["model"])["items_waiting"]:
                    assert time.monotonic() < deadline, f"{ready['items_waiting']} never served"
                    time.sleep(0.3)
                return ready

            while len(capacities) < 4:  # three steps
                items = [
                    {"content_id": str(uuid.uuid4()), "title": f"New {len(posted) + i}"}
                    for i in range(40)
                ]
                answer = client.post(url + "/api/v1/content", json={"items": items})
                assert answer.status_code == 200, answer.text  # stored, never refused
                posted += [item["content_id"] for item in items]
                # An item beyond the compiled capacity is not served yet, and says so.
                probe = client.post(
                    url + "/api/v1/recommendations/similar", json={"content_id": posted[-1]}
                )
                assert probe.status_code in (200, 404), probe.text
                if probe.status_code == 404:
                    assert probe.json()["error"] == "content_not_served_yet"
                    assert probe.headers["retry-after"]
                ready = client.get(url + "/ready").json()["model"]
                # Alive programs: the served set and the next capacity's, never more.
                assert ready["compiled_programs"] <= 2 * per_set
                if ready["items_waiting"]:
                    ready = settle()
                if ready["item_capacity"] != capacities[-1]:
                    capacities.append(ready["item_capacity"])
                    mappings.append(_mappings(pid))
                assert len(posted) < 3000, f"three capacity steps not reached: {capacities}"
            ready = settle()
            for start in range(0, len(posted), 1000):
                scored = client.post(
                    url + "/api/v1/personalization/score/batch",
                    json={"user_id": viewer, "content_ids": posted[start : start + 1000]},
                )
                assert scored.status_code == 200
                assert scored.json()["unknown_content_ids"] == []
        assert server.process.poll() is None  # never died
        # Each step compiled in a child process and was loaded here, nothing traced here.
        log = (tmp_path / f"server-{server.port}.log").read_text()
        steps = re.findall(r"\((\d+) loaded from a child's file, (\d+) compiled in this", log)
        assert steps and all(int(n) == per_set and m == "0" for n, m in steps), steps
        assert capacities == sorted(capacities) and len(capacities) >= 4
        assert ready["program_sets"] <= 2 and ready["served_programs"] == per_set
        # What a step adds is released with the shape it replaced.
        assert mappings[-1] <= 1.3 * mappings[0], mappings
    finally:
        server.stop()
