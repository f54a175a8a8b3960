"""Growth benchmark: a live server whose catalogue grows, day 30 rather than minute 1.

    python -m bench.growth            # default demo; 5,200 items: 50 writes of 100, 200 single writes
    python -m bench.growth --quick    # 1,040 items: 10 writes of 100, 40 single writes

`sona serve --demo` (2,000 viewers x 3,000 items, its own data dir and compilation cache)
answers recommendation traffic from new viewers at about ``--rate`` (200) requests/s (wrk, each
request one of ``--viewers`` (1,000) viewers the model never saw, at random: their profiles and
candidates are cached once, so resident memory shows what the catalogue's steps cost, not a
cache filling) while this script posts the items: a write of 100, then four single-item
writes, ``--pause`` (0.5 s) apart. Items come in pairs with nearly the same
embedding, so an item is *served* once a personalization score of it answers 200 and it appears
among its partner's similar items (one tracked pair per write; each check is two requests).

Printed and written (bench/results/growth.json and .md): write latency p50 / p99; seconds from a
write's acknowledgement to its item being served, p50 / p99; errors and 5xx of the traffic and
of the writes; and at each capacity step the item capacity, memory mappings of the server
process, its resident memory and the compiled programs alive. Bars: the process never
dies, 0 5xx, write p99 <= 250 ms, write to served p99 <= 60 s, mappings and resident memory
after the last step <= 1.3 x after the first.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import numpy as np

from bench import RESULTS
from bench.report import write_results
from bench.servers import ServerProcess

CONFIG = """
[serving]
recommendation_ttl_seconds = 0   # every request reaches the engine
"""
DIM = 512  # the default model's embedding_dim
LUA = """
math.randomseed(os.time())
local hex = "0123456789abcdef"
local function uuid4()
  local out = {}
  for i = 1, 32 do
    local n = math.random(1, 16)
    if i == 13 then n = 5 end
    out[i] = string.sub(hex, n, n)
  end
  local s = table.concat(out)
  return string.sub(s, 1, 8) .. "-" .. string.sub(s, 9, 12) .. "-" .. string.sub(s, 13, 16)
    .. "-" .. string.sub(s, 17, 20) .. "-" .. string.sub(s, 21, 32)
end
-- A pool of viewers the model never saw (their caches fill once, then hold steady)
local viewers = {}
for i = 1, %(viewers)d do viewers[i] = uuid4() end
request = function()
  local body = '{"user_id":"' .. viewers[math.random(1, #viewers)] .. '","limit":20}'
  return wrk.format("POST", "/api/v1/recommendations", {["Content-Type"]="application/json"}, body)
end
delay = function()
  return %(pause)d
end
local threads = {}
setup = function(thread)
  table.insert(threads, thread)
end
init = function(args)
  fivexx = 0
  fivexx_at = ""
  fivexx_body = ""
end
response = function(status, headers, body)
  if status >= 500 then
    fivexx = fivexx + 1
    fivexx_at = fivexx_at .. " " .. os.time()
    if fivexx_body == "" then fivexx_body = string.gsub(body, "%%c", " ") end
  end
end
done = function(summary, latency, requests)
  local total = 0
  local at = ""
  for _, thread in ipairs(threads) do
    total = total + thread:get("fivexx")
    at = at .. thread:get("fivexx_at")
    local body = thread:get("fivexx_body")
    if body ~= "" then io.write("FIVEXX_BODY " .. body .. "\\n") end
  end
  io.write(string.format("FIVEXX %%d\\n", total))
  io.write("FIVEXX_AT" .. at .. "\\n")
  io.write(string.format("P50_US %%d\\nP99_US %%d\\n", latency:percentile(50.0), latency:percentile(99.0)))
end
"""


def _process_memory(pid: int) -> dict:
    maps = sum(1 for _ in open(f"/proc/{pid}/maps"))  # noqa: SIM115
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
    return {"mappings": maps, "rss_mb": round(rss_kb / 1024, 1)}


def _pair(rng: np.random.Generator, prefix: str) -> list[dict]:
    """Two new items with nearly the same embedding (each the other's most similar item)."""
    base = rng.standard_normal(DIM)
    items = []
    for i in range(2):
        vector = base + 0.01 * rng.standard_normal(DIM)
        vector /= np.linalg.norm(vector)
        items.append(
            {
                "content_id": str(uuid.uuid4()),
                "title": f"{prefix} {i}",
                "genres": ["Drama"],
                "duration_minutes": 95,
                "release_year": 2026,
                "embedding": [round(float(x), 5) for x in vector],
            }
        )
    return items


async def _served(client: httpx.AsyncClient, url: str, pair: list[dict], viewer: str) -> bool:
    first, second = (item["content_id"] for item in pair)
    score = await client.post(
        url + "/api/v1/personalization/score", json={"user_id": viewer, "content_id": first}
    )
    if score.status_code != 200:
        return False
    similar = await client.post(
        url + "/api/v1/recommendations/similar", json={"content_id": second, "limit": 10}
    )
    return similar.status_code == 200 and first in {
        row["content_id"] for row in similar.json()["similar_content"]
    }


async def _grow(url: str, pid: int, writes: int, singles: int, pause: float) -> dict:
    rng = np.random.default_rng(0)
    viewer = str(uuid.uuid4())
    write_ms, statuses, served_s, steps = [], [], [], []
    pending: list[tuple[list[dict], float]] = []  # tracked pair, acknowledged at
    done = asyncio.Event()

    async with httpx.AsyncClient(timeout=120) as client:

        async def post(items: list[dict]) -> float:
            started = time.perf_counter()
            response = await client.post(url + "/api/v1/content", json={"items": items})
            acked = time.perf_counter()
            write_ms.append((acked - started) * 1000)
            statuses.append(response.status_code)
            return acked

        async def check() -> None:
            """One tracked pair at a time, round robin in the order they were acknowledged,
            pausing after a pair not yet served (about 20 requests/s beside the traffic) but
            not after one served: items are served in the order they were written, so when
            waiting items are served at a capacity step the rest follow at once rather than
            one pause each."""
            at = 0
            while not (done.is_set() and not pending):
                if not pending:
                    await asyncio.sleep(0.05)
                    continue
                at %= len(pending)
                pair, acked = pending[at]
                if await _served(client, url, pair, viewer):
                    served_s.append(time.perf_counter() - acked)
                    pending.pop(at)
                else:
                    at += 1
                    await asyncio.sleep(0.1)

        async def watch() -> None:  # the process at every capacity step
            capacity = None
            while not done.is_set() or pending:
                ready = (await client.get(url + "/ready")).json()["model"]
                if ready["item_capacity"] != capacity:
                    capacity = ready["item_capacity"]
                    steps.append(
                        {
                            "seconds": round(time.perf_counter() - began, 1),
                            "item_capacity": capacity,
                            "items_waiting": ready["items_waiting"],
                            "compiled_programs": ready["compiled_programs"],
                            "program_sets": ready["program_sets"],
                            **_process_memory(pid),
                        }
                    )
                await asyncio.sleep(0.5)

        began = time.perf_counter()
        checker, watcher = asyncio.create_task(check()), asyncio.create_task(watch())
        for w in range(writes):
            batch = [item for p in range(50) for item in _pair(rng, f"Grow {w}.{p}")]
            acked = await post(batch)
            pending.append((batch[:2], acked))
            for s in range(singles):
                await asyncio.sleep(pause)
                pair = _pair(rng, f"Single {w}.{s}")
                acked = await post(pair[:1])
                acked = max(acked, await post(pair[1:]))
                pending.append((pair, acked))
            await asyncio.sleep(pause)
        done.set()
        never_served = 0
        try:
            await asyncio.wait_for(checker, timeout=300)
        except TimeoutError:  # what is still not served after five minutes
            never_served = len(pending)
            pending.clear()
        await watcher
        final = (await client.get(url + "/ready")).json()["model"]
    settled = {**_process_memory(pid), "compiled_programs": final["compiled_programs"]}
    return {
        "write_ms": write_ms,
        "write_statuses": statuses,
        "served_s": served_s,
        "never_served": never_served,
        "steps": steps,
        "settled": settled | {"program_sets": final["program_sets"]},
        "served_programs": final["served_programs"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rate", type=float, default=200.0, help="recommendations per second")
    parser.add_argument("--pause", type=float, default=0.5, help="seconds between writes")
    parser.add_argument(
        "--viewers", type=int, default=1000, help="new viewers (unknown to the model) asking"
    )
    parser.add_argument("--server-log", type=Path, help="keep the server's log in this file")
    args = parser.parse_args()
    writes, singles = (10, 2) if args.quick else (50, 2)  # 2 pairs: 4 single-item writes
    connections = 16
    pause_ms = int(1000 * connections / args.rate)
    with tempfile.TemporaryDirectory(prefix="sona-growth-") as tmp:
        folder = Path(tmp)
        server = ServerProcess(
            folder, "--demo", config_text=CONFIG, env={"SONA_COMPILATION_CACHE_DIR": ""}
        )
        started = time.monotonic()
        server.start(timeout=900)
        ready_s = time.monotonic() - started
        pid = server.process.pid
        script = folder / "growth.lua"
        script.write_text(LUA % {"pause": pause_ms, "viewers": args.viewers})
        seconds = int(writes * (singles + 1) * (args.pause + 0.15) + 90)
        load_started = time.time()
        load = subprocess.Popen(
            [
                "wrk",
                "-t2",
                f"-c{connections}",
                f"-d{seconds}s",
                "--latency",
                "-s",
                str(script),
                server.url,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(2)
        grown = asyncio.run(_grow(server.url, pid, writes, singles, args.pause))
        load.send_signal(signal.SIGINT)  # wrk prints its summary and stops
        out, _ = load.communicate(timeout=30)
        alive = server.process.poll() is None
        if alive:
            server.stop()
        log_text = (folder / f"server-{server.port}.log").read_text()
        if args.server_log:
            args.server_log.write_text(log_text)
    rps = (
        float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        if "Requests/sec" in out
        else 0.0
    )
    total = int(re.search(r"(\d+) requests in", out).group(1)) if "requests in" in out else 0
    non_2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    socket_errors = (
        sum(int(x) for x in m.groups())
        if (
            m := re.search(
                r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
            )
        )
        else 0
    )
    write_ms, served = np.array(grown["write_ms"]), np.array(grown["served_s"] or [np.nan])
    steps = grown["steps"]
    first, last = steps[1] if len(steps) > 1 else steps[0], steps[-1]
    traffic_5xx = int(m.group(1)) if (m := re.search(r"FIVEXX (\d+)", out)) else -1
    fivexx = sum(1 for s in grown["write_statuses"] if s >= 500) + max(traffic_5xx, 0)
    latency = {q: int(v) / 1000 for q, v in re.findall(r"P(50|99)_US (\d+)", out)}
    at = m.group(1).split() if (m := re.search(r"FIVEXX_AT([ \d]*)", out)) else []
    fivexx_seconds = sorted(int(t) - int(load_started) for t in at)
    result = {
        "command": "python -m bench.growth" + (" --quick" if args.quick else ""),
        "machine": f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M')}",
        "ready_seconds": round(ready_s, 1),
        "items_posted": writes * 100 + writes * singles * 2,
        "writes": len(write_ms),
        "traffic": {
            "requests": total,
            "rps": rps,
            "p50_ms": latency.get("50"),
            "p99_ms": latency.get("99"),
            "non_2xx": non_2xx,
            "fivexx": traffic_5xx,
            "socket_errors": socket_errors,
        },
        "crashed": not alive,
        "fivexx": fivexx,
        "write_p50_ms": round(float(np.percentile(write_ms, 50)), 1),
        "write_p99_ms": round(float(np.percentile(write_ms, 99)), 1),
        "served_p50_s": round(float(np.nanpercentile(served, 50)), 2),
        "served_p99_s": round(float(np.nanpercentile(served, 99)), 2),
        "tracked_never_served": grown["never_served"],
        "maps_ratio_last_first": round(last["mappings"] / first["mappings"], 3),
        "rss_ratio_last_first": round(last["rss_mb"] / first["rss_mb"], 3),
        "programs_per_version": grown["served_programs"],
        "steps": steps,
        "settled": grown["settled"],
        "traffic_5xx_seconds": fivexx_seconds,  # since wrk started (1 s resolution)
        "traffic_5xx_reasons": re.findall(r"FIVEXX_BODY (.*)", out),  # the first per wrk thread
        "load_started": load_started,
        "capacity_log": [
            line for line in log_text.splitlines() if "item rows" in line or "wait for" in line
        ][:60],
        "log_errors": [
            line for line in log_text.splitlines() if " ERROR " in line or "CRITICAL" in line
        ][:20],
    }
    write_results(RESULTS / "growth.json", result, markdown(result))


def markdown(r: dict) -> str:
    bar = lambda ok: "yes" if ok else "**no**"  # noqa: E731
    lines = [
        "# Catalogue growth on a live server",
        "",
        f"Command: `{r['command']}` ({r['machine']}); `sona serve --demo` ready after "
        f"{r['ready_seconds']} s (cold: seed, train, compile). {r['items_posted']:,} items posted "
        f"in {r['writes']} writes while wrk asked for recommendations for new viewers at "
        f"{r['traffic']['rps']:.0f} req/s ({r['traffic']['requests']:,} requests).",
        "",
        "| measure | value | bar | met |",
        "|---|---|---|---|",
        f"| process died | {r['crashed']} | never | {bar(not r['crashed'])} |",
        f"| 5xx (traffic and writes) | {r['fivexx']} | 0 | {bar(r['fivexx'] == 0)} |",
        f"| traffic non-2xx / socket errors | {r['traffic']['non_2xx']} / {r['traffic']['socket_errors']} | | |",
        f"| write p50 / p99 | {r['write_p50_ms']} / {r['write_p99_ms']} ms | p99 <= 250 ms | "
        f"{bar(r['write_p99_ms'] <= 250)} |",
        f"| write to served p50 / p99 | {r['served_p50_s']} / {r['served_p99_s']} s | p99 <= 60 s | "
        f"{bar(r['served_p99_s'] <= 60)} |",
        f"| tracked items never served | {r['tracked_never_served']} | 0 | {bar(r['tracked_never_served'] == 0)} |",
        f"| mappings, last step / first | {r['maps_ratio_last_first']} | <= 1.3 | "
        f"{bar(r['maps_ratio_last_first'] <= 1.3)} |",
        f"| resident memory, last step / first | {r['rss_ratio_last_first']} | <= 1.3 | "
        f"{bar(r['rss_ratio_last_first'] <= 1.3)} |",
        f"| programs per served version | {r['programs_per_version']} | <= 16 | "
        f"{bar(r['programs_per_version'] <= 16)} |",
        "",
        "At each capacity step (the first row: the server before any write):",
        "",
        "| seconds | item capacity | waiting | programs alive (sets) | mappings | resident MB |",
        "|---|---|---|---|---|---|",
    ]
    for s in r["steps"]:
        lines.append(
            f"| {s['seconds']} | {s['item_capacity']:,} | {s['items_waiting']} | "
            f"{s['compiled_programs']} ({s['program_sets']}) | {s['mappings']:,} | {s['rss_mb']} |"
        )
    s = r["settled"]
    lines += [
        "",
        f"Settled after the last write: {s['compiled_programs']} programs alive in "
        f"{s['program_sets']} sets, {s['mappings']:,} mappings, {s['rss_mb']} MB resident.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
