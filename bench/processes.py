"""Serving past one process: 1, 2 and 4 stateless `sona serve` processes on
one PostgreSQL + Redis, each on its own port, measured together in one run.

    python -m bench.processes           # 1, 2, 4 processes; 3 x 5 s saturated runs each
    python -m bench.processes --quick   # 1 and 2 processes, shorter runs

The first process seeds the default demo (synthetic 2,000 x 3,000) into a fresh PostgreSQL
database and trains; the others start on the same store and load that model version from it.
For each process count, one wrk per process (64 connections shared between them, every request
a different viewer, the list cache off) runs at the same time; the sum is the throughput. Then:
* the same warm viewers' lists are asked from every process: they must be identical (same
  model version, same profile from the store, no exploration for a warm viewer);
* an event posted to the first process must be honoured by every other one (the watched item
  leaves the viewer's list): seconds until it is, everywhere.

On this 2-core machine wrk takes one core and every process shares the other, so the count
shows what the processes cost each other here, not what more hosts would add. Needs PostgreSQL
and Redis (exits naming what is missing). Writes bench/results/processes.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from bench import RESULTS
from bench.load import model_users, prime, run_wrk, write_script
from bench.report import write_results
from bench.servers import (
    REDIS_URL,
    ServerProcess,
    drop_postgres_database,
    fresh_postgres_database,
)

CONNECTIONS = 64
CONFIG = """
[serving]
recommendation_ttl_seconds = 0   # every request reaches the engine
max_queue = 4096
max_batch = 64
tables_refresh_seconds = 1.0
"""
CONSISTENCY_VIEWERS = 50
EVENT_BOUND_SECONDS = 30.0


def store_env() -> tuple[dict, str]:
    """Environment naming a fresh PostgreSQL database and Redis, and the database URL."""
    import redis

    try:
        redis.from_url(REDIS_URL, socket_timeout=2).ping()
        database = asyncio.run(fresh_postgres_database())
    except BaseException as error:  # noqa: BLE001 - the helper's skip() is a BaseException
        sys.exit(f"this bench needs PostgreSQL and Redis ({error})")
    return {"SONA_DATABASE_URL": database, "SONA_REDIS_URL": REDIS_URL}, database


def together(servers: list[ServerProcess], folder: Path, users, contents, seconds: int) -> dict:
    """One wrk per server at the same time (connections split between them, each walking its
    own rotation of the viewers); rates summed."""
    n = len(servers)
    scripts = []
    for k, _ in enumerate(servers):
        shift = k * len(users) // n
        rotated = users[shift:] + users[:shift]
        scripts.append(write_script(folder, f"recs_{n}_{k}", rotated, contents, "recs", 0.0))
    with ThreadPoolExecutor(n) as pool:
        runs = list(
            pool.map(
                lambda pair: run_wrk(pair[0].url, pair[1], CONNECTIONS // n, seconds, threads=1),
                zip(servers, scripts, strict=True),
            )
        )
    return {
        "rps": sum(r["rps"] for r in runs),
        "per_process_rps": [r["rps"] for r in runs],
        "errors": sum(r["errors"] for r in runs),
        "non_2xx": sum(r["non_2xx"] for r in runs),
        "p50_ms": max(r["p50_ms"] for r in runs),
        "failures": [r["failures"] for r in runs if r["failures"]],
    }


def lists(server: ServerProcess, user: str, client: httpx.Client) -> list[str]:
    body = {"user_id": user, "limit": 20}
    answer = client.post(server.url + "/api/v1/recommendations", json=body)
    answer.raise_for_status()
    return [r["content_id"] for r in answer.json()["recommendations"]]


def settled_viewers(server: ServerProcess, users: list[str], n: int) -> list[str]:
    """The first ``n`` viewers whose list ``server`` answers twice the same (viewers still
    blended with cold start get exploration slots drawn per request)."""
    found = []
    with httpx.Client(timeout=30) as client:
        for user in users:
            if lists(server, user, client) == lists(server, user, client):
                found.append(user)
            if len(found) == n:
                break
    return found


def consistency(servers: list[ServerProcess], users: list[str]) -> dict:
    """How many of ``users`` get the same list from every process."""
    with httpx.Client(timeout=30) as client:
        same = sum(
            len({tuple(lists(server, user, client)) for server in servers}) == 1 for user in users
        )
    return {"viewers": len(users), "identical_lists": same}


def event_everywhere(servers: list[ServerProcess], user: str) -> dict:
    """Post a watch of the viewer's top item to the first process; seconds until no process
    lists it (exclude_watched), and whether their lists then agree."""
    with httpx.Client(timeout=30) as client:
        item = lists(servers[0], user, client)[0]
        event = {
            "content_id": item,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "completion_rate": 1.0,
        }
        body = {"user_id": user, "viewing_events": [event]}
        client.post(servers[0].url + "/api/v1/profile/update", json=body).raise_for_status()
        acknowledged = time.monotonic()
        seen: dict[int, float] = {}
        while len(seen) < len(servers) and time.monotonic() - acknowledged < EVENT_BOUND_SECONDS:
            for k, server in enumerate(servers):
                if k not in seen and item not in lists(server, user, client):
                    seen[k] = time.monotonic() - acknowledged
            time.sleep(0.02)
        agree = len({tuple(lists(server, user, client)) for server in servers}) == 1
    return {
        "seconds_per_process": [seen.get(k) for k in range(len(servers))],
        "honoured_everywhere": len(seen) == len(servers),
        "lists_agree_after": agree,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "processes.json")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    counts = (1, 2) if args.quick else (1, 2, 4)
    seconds = 3 if args.quick else 5
    repeats = 1 if args.quick else 3
    folder = Path(tempfile.mkdtemp(prefix="sona-processes-"))
    env, database = store_env()
    env["SONA_COMPILATION_CACHE_DIR"] = str(folder / "xla")  # the processes share programs
    result: dict = {
        "command": "python -m bench.processes" + (" --quick" if args.quick else ""),
        "cores": os.cpu_count(),
        "seconds_per_run": seconds,
        "connections": CONNECTIONS,
    }
    servers: list[ServerProcess] = []
    try:
        first = ServerProcess(folder / "p0", "--demo", env=env, config_text=CONFIG)
        servers.append(first.start(timeout=900))
        contents = [
            c["content_id"]
            for c in httpx.get(first.url + "/api/v1/content?limit=500", timeout=30).json()["items"]
        ]
        users = model_users(folder / "p0")
        settled = settled_viewers(first, users, CONSISTENCY_VIEWERS + len(counts) + 1)
        result["settled_viewers"] = len(settled)
        rows = []
        for count in counts:
            while len(servers) < count:
                clock = time.perf_counter()
                server = ServerProcess(folder / f"p{len(servers)}", env=env, config_text=CONFIG)
                servers.append(server.start(timeout=900))
                result.setdefault("join_seconds", []).append(time.perf_counter() - clock)
                prime(server.url, users)
            if count == 1:
                prime(first.url, users)
            together(servers, folder, users, contents, 1)  # warm-up
            runs = sorted(
                (together(servers, folder, users, contents, seconds) for _ in range(repeats)),
                key=lambda run: run["rps"],
            )
            row = runs[len(runs) // 2] | {
                "processes": count,
                "rps_runs": [run["rps"] for run in runs],
                "errors": sum(run["errors"] for run in runs),
                "non_2xx": sum(run["non_2xx"] for run in runs),
            }
            if count > 1:
                row["consistency"] = consistency(servers, settled[:CONSISTENCY_VIEWERS])
                row["event"] = event_everywhere(servers, settled[CONSISTENCY_VIEWERS + count - 1])
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "failures"}), flush=True)
        result["rows"] = rows
        base = rows[0]["rps"]
        for row in rows[1:]:
            result[f"scaling_{row['processes']}_vs_1"] = row["rps"] / base
    finally:
        for server in servers:
            server.stop()
        asyncio.run(drop_postgres_database(database))
        shutil.rmtree(folder, ignore_errors=True)
    write_results(args.out, result, markdown(result))


def markdown(r: dict) -> str:
    lines = [
        "| processes | req/s (runs) | per process | errors | identical lists | event honoured "
        "everywhere, s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in r["rows"]:
        runs = " / ".join(f"{x:,.0f}" for x in row["rps_runs"])
        per = " / ".join(f"{x:,.0f}" for x in row["per_process_rps"])
        same = row.get("consistency")
        event = row.get("event")
        lines.append(
            f"| {row['processes']} | {row['rps']:,.0f} ({runs}) | {per} | {row['errors']} | "
            + (f"{same['identical_lists']} / {same['viewers']}" if same else "-")
            + " | "
            + (
                ", ".join("-" if s is None else f"{s:.2f}" for s in event["seconds_per_process"])
                if event
                else "-"
            )
            + " |"
        )
    scaling = ", ".join(
        f"{key.split('_')[1]} vs 1: {value:.2f}x"
        for key, value in r.items()
        if key.startswith("scaling_")
    )
    return (
        "\n".join(lines)
        + f"\n\nScaling: {scaling}. Command: `{r['command']}`; {r['cores']} cores shared with "
        f"wrk; {r['connections']} connections split between the processes; a new process "
        f"joined in {', '.join(f'{s:.0f}' for s in r.get('join_seconds', []))} s.\n"
    )


if __name__ == "__main__":
    main()
