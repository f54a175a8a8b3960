"""Resilience benchmark: how fast `sona serve` comes back, and how long answered
requests wait under a burst.

    python -m bench.resilience            # the default synthetic demo (2,000 viewers, 3,000 items)
    python -m bench.resilience --quick    # a smaller demo, a smaller burst

1. Restarts. A cold start (empty data dir and compilation cache: seed the demo, train the first
   model, compile every program), warm restarts after SIGTERM and after SIGKILL (the model and
   the saved programs under the data dir), and a second process of the same host (its own data
   dir, the first one's store and compilation cache), each timed from process start to
   `/health` 200 and to `/ready` 200.
2. A burst: ``--burst`` requests (2,000) sent at once on as many connections, every one a
   different viewer, list cache off, against the same server with admission by waiting time
   (``serving.max_wait_ms`` = 250) and by queue length alone (``max_wait_ms`` = 0, the previous
   behaviour), in the same run. Reported: answered (200) count and latency percentiles, 503s
   with Retry-After, the slowest answer, and the engine's batch time as the "one batch" bound.

Writes bench/results/resilience.json and resilience.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from bench import RESULTS, ROOT
from bench.servers import ServerProcess

CONFIG = """
[serving]
recommendation_ttl_seconds = 0   # every request reaches the engine
max_queue = 4096                 # the burst fits: admission is the deadline's job
max_wait_ms = {max_wait}
"""


def _timed_start(server: ServerProcess) -> dict:
    """Start ``server``; seconds from the process start to /health 200 and to /ready 200."""
    started = time.monotonic()
    log = open(server.data_dir / f"server-{server.port}.log", "ab")  # noqa: SIM115
    server.process = subprocess.Popen(
        server.command, cwd=ROOT, env=server.env, stdout=log, stderr=subprocess.STDOUT
    )
    health = None
    while True:
        if server.process.poll() is not None:
            raise RuntimeError("server exited during start-up")
        try:
            if health is None and httpx.get(server.url + "/health", timeout=1).status_code == 200:
                health = time.monotonic() - started
            ready = httpx.get(server.url + "/ready", timeout=1)
            if ready.status_code == 200:
                return {
                    "health_s": round(health, 2),
                    "ready_s": round(time.monotonic() - started, 2),
                    "programs": ready.json()["model"]["served_programs"],
                }
        except httpx.HTTPError:
            pass
        time.sleep(0.1)


def restarts(folder: Path, demo: tuple[str, ...]) -> dict:
    """Cold start on an empty data dir (its own compilation cache: nothing compiled before),
    warm restarts after SIGTERM and SIGKILL, and a second process of the same host: its own
    data dir, the first one's store and compilation cache."""
    cache = folder / "compiled"
    env = {"SONA_COMPILATION_CACHE_DIR": str(cache)}
    server = ServerProcess(folder, *demo, env=env, config_text=CONFIG.format(max_wait=250))
    out = {"cold": _timed_start(server)}
    server.stop()
    out["warm_after_sigterm"] = _timed_start(server)
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(10)
    out["warm_after_sigkill"] = _timed_start(server)
    second = ServerProcess(
        folder / "second",
        "--database-url",
        f"sqlite:///{folder / 'sona.db'}",
        env=env,
        config_text=CONFIG.format(max_wait=250),
    )
    out["second_process"] = _timed_start(second)
    second.stop()
    server.stop()
    return out


async def _one(port: int, body: bytes, go: asyncio.Event) -> tuple[int, float, bool]:
    """One request on its own connection, sent when ``go`` is set: (status, seconds,
    Retry-After present)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (
        b"POST /api/v1/recommendations HTTP/1.1\r\nHost: bench\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    await go.wait()
    started = time.perf_counter()
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    elapsed = time.perf_counter() - started
    status = int(head.split(b" ", 2)[1])
    writer.close()
    return status, elapsed, b"retry-after" in head.lower()


async def _burst(port: int, users: list[str], n: int) -> list[tuple[int, float, bool]]:
    go = asyncio.Event()
    bodies = [
        json.dumps({"user_id": users[i % len(users)], "limit": 20}).encode() for i in range(n)
    ]
    tasks = [asyncio.create_task(_one(port, body, go)) for body in bodies]
    await asyncio.sleep(2.0)  # every connection open before the burst
    go.set()
    return await asyncio.gather(*tasks)


def _percentiles(values: list[float]) -> dict:
    if not values:
        return {}
    ms = np.asarray(values) * 1000
    return {f"p{q}": round(float(np.percentile(ms, q)), 1) for q in (50, 90, 99)} | {
        "max": round(float(ms.max()), 1)
    }


def burst(folder: Path, demo: tuple[str, ...], n: int, max_wait: float) -> dict:
    server = ServerProcess(folder, *demo, config_text=CONFIG.format(max_wait=max_wait))
    server.start(timeout=600)
    try:
        from sona_lab.model_store import load_model

        users = load_model(folder / "models").user_ids.tolist()
        for user in users[:64]:  # the engine's batch cost is measured before the burst
            httpx.post(f"{server.url}/api/v1/recommendations", json={"user_id": user}, timeout=30)
        outcomes = asyncio.run(_burst(server.port, users, n))
        metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    finally:
        server.stop()
    answered = [t for status, t, _ in outcomes if status == 200]
    refused = [t for status, t, _ in outcomes if status == 503]
    return {
        "max_wait_ms": max_wait,
        "requests": n,
        "answered": len(answered),
        "refused_503": len(refused),
        "refused_with_retry_after": sum(1 for s, _, r in outcomes if s == 503 and r),
        "other_status": sorted({s for s, _, _ in outcomes} - {200, 503}),
        "answered_ms": _percentiles(answered),
        "refused_ms": _percentiles(refused),
        "largest_batch_ms": _largest_batch_ms(metrics),
    }


def _largest_batch_ms(metrics: str) -> float | None:
    """The slowest bucket boundary of the engine-time histogram that saw a batch."""
    bounds = []
    for line in metrics.splitlines():
        if line.startswith("sona_batch_seconds_bucket") and 'batcher="recommend"' in line:
            le = line.split('le="')[1].split('"')[0]
            bounds.append((float("inf") if le == "+Inf" else float(le), float(line.split()[-1])))
    seen, previous = None, 0.0
    for bound, count in sorted(bounds):
        if count > previous:
            seen = bound
        previous = count
    return None if seen is None else round(seen * 1000, 1)


def markdown(result: dict) -> str:
    lines = [
        "# Resilience: restarts and a burst",
        "",
        f"Command: `{result['command']}` ({result['machine']}).",
        "",
        "## Start to ready",
        "",
        f"Bars: cold start ready within 45 s (here {result['cold_start_seconds']} s); "
        f"a restart or a second process of the same host within 5 s (here at most "
        f"{result['warm_restart_seconds']} s).",
        "",
        "| start | /health after | /ready after | programs served |",
        "|---|---|---|---|",
    ]
    for name, row in result["restarts"].items():
        lines.append(f"| {name} | {row['health_s']} s | {row['ready_s']} s | {row['programs']} |")
    lines += [
        "",
        f"## {result['bursts'][0]['requests']:,} requests at once",
        "",
        "| admission | answered | 503 (with Retry-After) | answered p50 / p90 / p99 / max | "
        "503 p50 / max | slowest batch bucket |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["bursts"]:
        name = (
            f"waiting time ≤ {row['max_wait_ms']:.0f} ms" if row["max_wait_ms"] else "queue length"
        )
        a, r = row["answered_ms"], row["refused_ms"]
        lines.append(
            f"| {name} | {row['answered']} | {row['refused_503']} "
            f"({row['refused_with_retry_after']}) | "
            f"{a.get('p50')} / {a.get('p90')} / {a.get('p99')} / {a.get('max')} ms | "
            f"{r.get('p50', '-')} / {r.get('max', '-')} ms | ≤ {row['largest_batch_ms']} ms |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--burst", type=int, default=2000)
    parser.add_argument("--burst-only", action="store_true", help="skip the restarts")
    args = parser.parse_args()
    demo = ("--demo", "--demo-users", "300", "--demo-items", "500") if args.quick else ("--demo",)
    n = 500 if args.quick else args.burst
    with tempfile.TemporaryDirectory(prefix="sona-resilience-") as tmp:
        folder = Path(tmp)
        result = {
            "command": "python -m bench.resilience" + (" --quick" if args.quick else ""),
            "machine": f"{__import__('os').cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M')}",
        }
        if args.burst_only:
            prepare = ServerProcess(
                folder / "restarts", *demo, config_text=CONFIG.format(max_wait=0)
            )
            prepare.start(timeout=600).stop()  # seed, train, compile
        else:
            result["restarts"] = restarts(folder / "restarts", demo)
        # Both bursts on a warm data dir (the restarts' one): same model, same programs.
        result["bursts"] = [burst(folder / "restarts", demo, n, wait) for wait in (250, 0)]
    if args.burst_only:
        print(json.dumps(result["bursts"], indent=2))
        return
    starts = result["restarts"]
    result["cold_start_seconds"] = starts["cold"]["ready_s"]
    result["warm_restart_seconds"] = max(
        starts[name]["ready_s"]
        for name in ("warm_after_sigterm", "warm_after_sigkill", "second_process")
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "resilience.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "resilience.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
