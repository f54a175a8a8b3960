"""wrk and the requests around it, shared by the HTTP benchmarks (`bench/throughput.py`,
`bench/processes.py`): the Lua script (every request a different viewer; failures recorded by
status and body), one wrk run parsed, the median of saturated runs, and priming every viewer.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx

LUA = """
local users = {%(users)s}
local contents = {%(contents)s}
local counter = 0
local mode = "%(mode)s"
local pause = %(pause)s
request = function()
  counter = counter + 1
  local user = users[(counter %% #users) + 1]
  local body
  if mode == "recs" then
    body = '{"user_id":"' .. user .. '","limit":20,"context":{"device_type":"tv"}}'
    return wrk.format("POST", "/api/v1/recommendations", {["Content-Type"]="application/json"}, body)
  end
  local content = contents[(counter %% #contents) + 1]
  body = '{"user_id":"' .. user .. '","content_id":"' .. content .. '"}'
  return wrk.format("POST", "/api/v1/personalization/score", {["Content-Type"]="application/json"}, body)
end
delay = function()
  return pause
end
local threads = {}
setup = function(thread)
  table.insert(threads, thread)
  thread:set("id", #threads - 1)
end
init = function(args)
  failures = {}
  -- each wrk thread starts at its own share of the viewers, so no viewer is asked twice at once
  counter = id * math.floor(#users / 2)
end
response = function(status, headers, body)
  if status >= 300 then
    local key = tostring(status) .. " " .. string.gsub(string.sub(body, 1, 120), "%%s+", " ")
    failures[key] = (failures[key] or 0) + 1
  end
end
done = function(summary, latency, requests)
  io.write(string.format("P95_US %%d\\n", latency:percentile(95.0)))
  for _, thread in ipairs(threads) do
    for key, count in pairs(thread:get("failures")) do
      io.write(string.format("FAILED %%d %%s\\n", count, key))
    end
  end
end
"""


def _seconds(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s|m)", text)
    value, unit = float(match.group(1)), match.group(2)
    return value * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]


def run_wrk(url: str, script: Path, connections: int, seconds: int, threads: int = 2) -> dict:
    done = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    out = done.stdout
    if "P95_US" not in out:  # the script did not run: wrk fell back to GET /
        raise RuntimeError(f"wrk script {script} failed: {done.stderr[-2000:]}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non_2xx = 0
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        non_2xx = int(match.group(1))
    errors = non_2xx
    if match := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    ):
        errors += sum(int(x) for x in match.groups())
    failures = {key: int(n) for n, key in re.findall(r"FAILED (\d+) (.*)", out)}
    latency = {p: _seconds(v) * 1e3 for p, v in re.findall(r"\s+(\d+)%\s+([\d.]+\w+)", out)}
    if match := re.search(r"P95_US (\d+)", out):
        latency["95"] = int(match.group(1)) / 1e3
    mean = re.search(r"Latency\s+([\d.]+\w+)", out)
    return {
        "rps": rps,
        "requests": total,
        "errors": errors,
        "non_2xx": non_2xx,
        "failures": failures,  # "status body-start" -> count
        "p50_ms": latency.get("50"),
        "p90_ms": latency.get("90"),
        "p95_ms": latency.get("95"),
        "p99_ms": latency.get("99"),
        "mean_ms": _seconds(mean.group(1)) * 1e3,
        "raw": out,
    }


def saturated_runs(
    url: str, script: Path, seconds: int, repeats: int = 3, connections: int = 64
) -> dict:
    """64 connections without pauses, ``repeats`` back-to-back runs sharing ``seconds``: the
    run with the median rate is reported (this 2-core machine's speed drifts by about 10 %
    from minute to minute), with every run's rate beside it."""
    runs = [run_wrk(url, script, connections, max(1, seconds // repeats)) for _ in range(repeats)]
    runs.sort(key=lambda run: run["rps"])
    middle = runs[len(runs) // 2]
    return middle | {
        "errors": sum(run["errors"] for run in runs),
        "non_2xx": sum(run["non_2xx"] for run in runs),
        "rps_runs": [run["rps"] for run in runs],
    }


def write_script(folder: Path, name: str, users, contents, mode: str, pause_ms: float) -> Path:
    path = folder / f"{name}.lua"
    path.write_text(
        LUA
        % {
            "users": ",".join(f'"{u}"' for u in users),
            "contents": ",".join(f'"{c}"' for c in contents),
            "mode": mode,
            "pause": f"{pause_ms:.1f}",
        }
    )
    return path


def prime(url: str, users: list[str]) -> None:
    """One recommendation request per viewer, four at a time: profiles and candidates cached
    (as for any viewer seen in the last hour), so the runs measure computed lists, not cold
    store reads. The list cache stays off."""
    from concurrent.futures import ThreadPoolExecutor

    with httpx.Client(timeout=60) as client:

        def ask(user: str) -> int:
            body = {"user_id": user, "limit": 20, "context": {"device_type": "tv"}}
            return client.post(url + "/api/v1/recommendations", json=body).status_code

        with ThreadPoolExecutor(4) as pool:
            codes = list(pool.map(ask, users))
    failed = sum(code != 200 for code in codes)
    if failed:
        print(f"priming: {failed} of {len(users)} requests were not answered 200", flush=True)


def model_users(data_dir: Path) -> list[str]:
    from sona_lab.model_store import load_model

    return load_model(data_dir / "models").user_ids.tolist()
