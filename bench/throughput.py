"""HTTP benchmark: the SPEC 8 serving bars, driven by wrk from a separate process.

    python -m bench.throughput                  # the default demo (synthetic 2,000 x 3,000)
    python -m bench.throughput --data ml-100k   # MovieLens 100K as the demo
    python -m bench.throughput --quick    # under a minute

Starts `sona serve` on the demo data, creates a few hundred users with histories through the
API, asks once for every viewer (profiles and candidates cached, as for anyone seen within the
hour; the recommendation-list cache stays off), then runs wrk (Lua scripts: every request names a different user) saturated (64
connections, no pause) and paced (connections pause so that about 1,500 requests/s are offered),
for recommendations and scores, with micro-batching on and off. The recommendation-list cache is
off (TTL 0) so every request reaches the engine. Writes bench/results/http.json and http.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import numpy as np

from bench import RESULTS, ROOT
from bench.load import (
    model_users,
    prime,
    run_wrk,
    saturated_runs,
    write_script,
)
from bench.report import write_results
from bench.servers import ServerProcess, free_port

ML100K = ROOT.parent / "shared" / "datasets" / "ml-100k"
BENCH_CONFIG = """
[serving]
recommendation_ttl_seconds = 0   # every request reaches the engine
max_queue = 4096
max_batch = 64                   # 64 connections never fill more (and 128 need not compile)
"""


def create_users(url: str, contents: list[str], n_users: int, events: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    users = []
    with httpx.Client(timeout=60) as client:
        for _ in range(n_users):
            user = str(uuid.uuid4())
            picked = rng.choice(len(contents), events, replace=False)
            body = {
                "user_id": user,
                "viewing_events": [
                    {
                        "content_id": contents[i],
                        "timestamp": f"2026-11-{1 + k % 25:02d}T20:00:00Z",
                        "completion_rate": float(rng.uniform(0.3, 1.0)),
                        "rating": int(rng.integers(1, 6)),
                    }
                    for k, i in enumerate(picked)
                ],
            }
            response = client.post(url + "/api/v1/profile/update", json=body)
            response.raise_for_status()
            users.append(user)
    return users


def paced(
    url: str,
    folder: Path,
    users,
    contents,
    mode: str,
    rate: float,
    seconds: int,
    pilots: int = 2,
    pilot_seconds: int = 2,
):
    """Connections with pauses so that about ``rate`` requests/s are offered.

    Each connection sends, waits for the answer, pauses, sends again: it offers
    1 / (pause + latency) requests/s. A short pilot run measures the latency at this load, and
    the pause is set from it so the offered rate is ``rate``, not less.
    """
    connections = 32
    cycle_ms = connections / rate * 1000.0
    pause_ms = max(cycle_ms - 1.0, 0.0)
    for _ in range(pilots):  # pilot, then the calibrated pause
        script = write_script(folder, f"{mode}_paced", users, contents, mode, pause_ms)
        pilot = run_wrk(url, script, connections, pilot_seconds)
        pause_ms = max(cycle_ms - pilot["mean_ms"], 0.0)
    script = write_script(folder, f"{mode}_paced", users, contents, mode, pause_ms)
    return run_wrk(url, script, connections, seconds) | {"pause_ms": pause_ms}


def adapter_load_times(server: ServerProcess, users: list[str]) -> dict:
    """Time to get one user's adapter: from the cache (decode included) and from PostgreSQL."""
    from bench.servers import drop_postgres_database, fresh_postgres_database
    from service.serving.cache import LocalCache
    from service.serving.profile_codec import decode_adapter, profile_from_bytes, profile_to_bytes
    from sona_jax.serve.batch import ViewerProfile

    result = {}

    async def measure():
        import asyncpg

        from service.storage import UserStateRow
        from service.storage.postgres import PostgresStore

        dim, rank = 512, 8
        rng = np.random.default_rng(0)
        profile_bytes = profile_to_bytes(
            ViewerProfile(
                preference=rng.standard_normal(dim).astype(np.float32),
                adapter=rng.standard_normal((dim, rank)).astype(np.float16),
                recent_items=np.arange(256, dtype=np.int32),
                recent_weights=np.ones(256, np.float32),
                seen=np.arange(100, dtype=np.int32),
                dismissed=np.zeros(0, np.int32),
                genre_affinity=np.ones(19, np.float32),
                hourly=np.ones(24, np.float32),
                qualifying=10.0,
                events=10,
                pool_index=-1,
            )
        )
        cache = LocalCache(10_000, 300)
        for user in users:
            await cache.set(f"profile:{user}", profile_bytes, 300)
        clock = time.perf_counter()
        for user in users:
            profile_from_bytes(await cache.get(f"profile:{user}")).adapter  # noqa: B018
        result["adapter_load_cache_ms"] = (time.perf_counter() - clock) / len(users) * 1e3
        try:
            url = await fresh_postgres_database()
        except BaseException as error:  # noqa: BLE001 - skipped when PostgreSQL is absent
            result["adapter_load_postgres_ms"] = None
            result["postgres_note"] = f"PostgreSQL not reachable: {error}"
            return
        store = PostgresStore(url)
        await store.open()
        state = (
            np.concatenate([rng.standard_normal(dim), rng.standard_normal(dim * rank)])
            .astype(np.float16)
            .tobytes()
        )
        for user in users:
            await store.save_user_state(UserStateRow(user, state, 0, None))
        clock = time.perf_counter()
        for user in users:
            row = await store.load_user_state(user)
            decode_adapter(row.state, dim, rank)
        result["adapter_load_postgres_ms"] = (time.perf_counter() - clock) / len(users) * 1e3
        await store.close()
        await drop_postgres_database(url)
        del asyncpg

    asyncio.run(measure())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--data",
        default="synthetic",
        choices=("synthetic", "ml-100k"),
        help="the default demo (synthetic 2,000 viewers x 3,000 items: the SPEC bar) or ML-100K",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "http.json")
    parser.add_argument(
        "--xla-cache",
        type=Path,
        default=ROOT / "bench" / ".xla-cache",
        help="JAX persistent compilation cache (kept between runs)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    seconds = 3 if args.quick else 15
    pilots = (1, 1) if args.quick else (2, 2)
    warm_up = 1 if args.quick else 2
    n_users = 100 if args.quick else 300
    folder = Path(tempfile.mkdtemp(prefix="sona-http-"))
    demo = ["--demo", "--demo-data", args.data]
    if args.data == "ml-100k":
        demo += ["--demo-path", str(ML100K)]
    result = {
        "command": "python -m bench.throughput"
        + (" --quick" if args.quick else "")
        + (f" --data {args.data}" if args.data != "synthetic" else ""),
        "data": args.data,
        "cores": os.cpu_count(),
        "seconds_per_run": seconds,
    }
    runs: dict[tuple[str, str, str], dict] = {}
    # One data folder for every server (the later ones find the demo store and model in place)
    # and one persistent XLA cache, kept between runs: compiling the serving and training
    # programs is most of a first start.
    data_dir = folder / "store"
    env = {
        "SONA_COMPILATION_CACHE_DIR": str(args.xla_cache),
    }
    # The servers, in this order (same config but for what the name says): SONA; the same
    # server with the engine call answered by a canned result of the same shape (the ceiling);
    # SONA without micro-batching.
    variants = {
        "sona": ([], BENCH_CONFIG),
        "canned": ([], BENCH_CONFIG + "canned_engine = true\n"),
        "no_batching": (["--no-batching"], BENCH_CONFIG),
    }
    everyone: list[str] = []
    for name, (flags, config_text) in variants.items():
        server = ServerProcess(data_dir, *demo, *flags, env=env, config_text=config_text)
        server.start(timeout=900)
        try:
            contents = [
                c["content_id"]
                for c in httpx.get(server.url + "/api/v1/content?limit=500", timeout=30).json()[
                    "items"
                ]
            ]
            if name == "sona":
                clock = time.perf_counter()
                users = create_users(server.url, contents, n_users, 15)
                result["create_users_seconds"] = time.perf_counter() - clock
                # every request a different viewer: the model's viewers and the new ones
                everyone = users + model_users(data_dir)
                result["viewers_cycled"] = len(everyone)
            prime(server.url, everyone)
            modes = ("recs", "score") if name != "no_batching" else ("recs",)
            for mode in modes:
                script = write_script(folder, f"{mode}_sat", everyone, contents, mode, 0.0)
                run_wrk(server.url, script, 64, warm_up)  # warm-up: caches, connections
                runs[(name, mode, "saturated")] = saturated_runs(server.url, script, seconds)
                if name != "no_batching":
                    runs[(name, mode, "paced")] = paced(
                        server.url, folder, everyone, contents, mode, 1500.0, seconds, *pilots
                    )
            if name == "sona":
                result |= adapter_load_times(server, users)
        finally:
            server.stop()
    runs[("raw_asgi", "recs", "saturated")] = raw_asgi_run(folder, everyone, seconds, warm_up)
    result |= engine_throughput(data_dir, everyone, seconds)
    for mode in ("recs", "score"):
        saturated, pace = runs[("sona", mode, "saturated")], runs[("sona", mode, "paced")]
        result |= {
            f"{mode}_saturated_rps": saturated["rps"],
            f"{mode}_saturated_errors": saturated["errors"],
            f"{mode}_saturated_non_2xx": saturated["non_2xx"],
            f"{mode}_saturated_rps_runs": saturated["rps_runs"],
            f"{mode}_saturated_p50_ms": saturated["p50_ms"],
            f"{mode}_paced_rps": pace["rps"],
            f"{mode}_paced_p50_ms": pace["p50_ms"],
            f"{mode}_paced_p90_ms": pace["p90_ms"],
            f"{mode}_paced_p95_ms": pace["p95_ms"],
            f"{mode}_paced_p99_ms": pace["p99_ms"],
            f"{mode}_paced_errors": pace["errors"],
            f"{mode}_paced_pause_ms": pace["pause_ms"],
        }
    canned = runs[("canned", "recs", "saturated")]
    result |= {
        "ceiling_rps": canned["rps"],
        "ceiling_errors": canned["errors"],
        "ceiling_rps_runs": canned["rps_runs"],
        "ceiling_paced_p50_ms": runs[("canned", "recs", "paced")]["p50_ms"],
        "ceiling_paced_p95_ms": runs[("canned", "recs", "paced")]["p95_ms"],
        "score_ceiling_rps": runs[("canned", "score", "saturated")]["rps"],
        "fraction_of_ceiling": result["recs_saturated_rps"] / canned["rps"],
        "raw_asgi_rps": runs[("raw_asgi", "recs", "saturated")]["rps"],
        "raw_asgi_errors": runs[("raw_asgi", "recs", "saturated")]["errors"],
        "recs_no_batching_rps": runs[("no_batching", "recs", "saturated")]["rps"],
        "recs_no_batching_errors": runs[("no_batching", "recs", "saturated")]["errors"],
        "recs_no_batching_non_2xx": runs[("no_batching", "recs", "saturated")]["non_2xx"],
    }
    result["score_fraction_of_ceiling"] = (
        result["score_saturated_rps"] / result["score_ceiling_rps"]
    )
    result["batching_speedup"] = result["recs_saturated_rps"] / result["recs_no_batching_rps"]
    result["wrk_output"] = {"_".join(key): run["raw"] for key, run in runs.items()}
    write_results(args.out, result, markdown(result))
    shutil.rmtree(folder, ignore_errors=True)


def raw_asgi_run(folder: Path, users: list[str], seconds: int, warm_up: int) -> dict:
    """Saturated recommendations against `bench/raw_asgi.py` (a canned body, no framework)."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "bench.raw_asgi", str(port)], cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        script = write_script(folder, "raw_sat", users, ["x"], "recs", 0.0)
        run_wrk(url, script, 64, warm_up)
        return saturated_runs(url, script, seconds)
    finally:
        process.terminate()
        process.wait(10)


def engine_throughput(data_dir: Path, users: list[str], seconds: int) -> dict:
    """The engine's batched recommend without HTTP, as the server runs it (one XLA thread,
    64-viewer batches of the model's viewers, limit 20, a device context): users/s ranking
    with each viewer's kept candidates (a served request), and retrieving them too."""
    from dataclasses import replace

    from service.serving.threads import limit_xla_threads

    limit_xla_threads(1)
    from sona_jax.serve import viewers
    from sona_jax.serve.batch import Query
    from sona_jax.serve.engine import ServingEngine
    from sona_lab.model_store import load_model

    model = load_model(data_dir / "models")
    engine = ServingEngine.load(model).with_headroom()
    batch = 64
    queries = [
        Query(
            viewers.model_profile(engine, u), 20, True, engine.cfg.diversity.mmr_lambda, 0, seed=i
        )
        for i, u in enumerate(model.user_ids.tolist())
    ][: (len(model.user_ids) // batch) * batch]

    def users_per_second(chunks: list[list[Query]]) -> float:
        engine.recommend_queries(chunks[0])  # compile
        served, start, at = 0, time.perf_counter(), 0
        while time.perf_counter() - start < max(2, seconds // 3):
            engine.recommend_queries(chunks[at % len(chunks)])
            at, served = at + 1, served + batch
        return served / (time.perf_counter() - start)

    chunks = [queries[i : i + batch] for i in range(0, len(queries), batch)]
    full = users_per_second(chunks)
    kept = []
    for chunk in chunks:
        _, found = engine.recommend_queries(chunk)
        kept.append([replace(q, candidates=c) for q, c in zip(chunk, found, strict=True)])
    return {
        "engine_users_per_second": users_per_second(kept),
        "engine_retrieve_and_rank_users_per_second": full,
        "engine_batch": batch,
    }


def markdown(r: dict) -> str:
    def runs(key: str) -> str:
        return " / ".join(f"{x:.0f}" for x in r[key])

    rows = [
        (
            "recommendations saturated (64 conn), req/s (median of 3 runs)",
            r["recs_saturated_rps"],
            ">= 3000, no errors",
        ),
        ("  the 3 runs, req/s", runs("recs_saturated_rps_runs"), "-"),
        (
            "  errors (non-2xx of them)",
            f"{r['recs_saturated_errors']} ({r['recs_saturated_non_2xx']})",
            "0",
        ),
        ("ceiling: the same server, canned engine result, req/s", r["ceiling_rps"], "-"),
        ("  the 3 runs, req/s", runs("ceiling_rps_runs"), "-"),
        ("  errors", r["ceiling_errors"], "0"),
        ("fraction of the ceiling", r["fraction_of_ceiling"], ">= 0.5"),
        ("raw ASGI callable, canned body, req/s (the stack's limit)", r["raw_asgi_rps"], "-"),
        (
            "engine alone, users/s (64 a call): ranking kept candidates / retrieving too",
            f"{r['engine_users_per_second']:.0f} / "
            f"{r['engine_retrieve_and_rank_users_per_second']:.0f}",
            "-",
        ),
        ("recommendations paced at 1,500/s: served req/s", r["recs_paced_rps"], "~1500"),
        (
            "  p50 / p95 / p99 ms",
            f"{r['recs_paced_p50_ms']:.2f} / {r['recs_paced_p95_ms']:.2f} / "
            f"{r['recs_paced_p99_ms']:.2f}",
            "<= 2 / 5 / -",
        ),
        ("  errors", r["recs_paced_errors"], "0"),
        (
            "  ceiling paced p50 / p95 ms",
            f"{r['ceiling_paced_p50_ms']:.2f} / {r['ceiling_paced_p95_ms']:.2f}",
            "-",
        ),
        ("score saturated, req/s (median of 3 runs)", r["score_saturated_rps"], "better than recs"),
        ("  errors", r["score_saturated_errors"], "0"),
        ("  score ceiling (canned), req/s", r["score_ceiling_rps"], "-"),
        (
            "score paced p50 / p95 / p99 ms",
            f"{r['score_paced_p50_ms']:.2f} / {r['score_paced_p95_ms']:.2f} / "
            f"{r['score_paced_p99_ms']:.2f}",
            "better than recs",
        ),
        (
            "no micro-batching: recs saturated, req/s (errors, non-2xx)",
            f"{r['recs_no_batching_rps']:.0f} ({r['recs_no_batching_errors']}, "
            f"{r['recs_no_batching_non_2xx']})",
            "-",
        ),
        ("batching speedup (recs saturated, on / off)", r["batching_speedup"], "> 1"),
        ("adapter load from cache, ms", r["adapter_load_cache_ms"], "< 1"),
        ("adapter load from PostgreSQL, ms", r.get("adapter_load_postgres_ms"), "< 10"),
    ]

    def fmt(value):
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| measure | value | bar |", "| --- | --- | --- |"]
    lines += [f"| {name} | {fmt(value)} | {bar} |" for name, value, bar in rows]
    lines.append(
        f"\nData: {r['data']} demo; every request a different viewer ({r['viewers_cycled']} "
        f"cycled), recommendation-list cache off; {r['cores']} cores shared with wrk; "
        f"{r['seconds_per_run']} s per run. Command: `{r['command']}`."
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
