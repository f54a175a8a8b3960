"""A/A experiments through the real service: simulated viewers ask the HTTP API for
recommendations, watch a listed item with a fixed probability (posting the view with the
list's recommendation_id, or without it so the attribution window must find it), and an
analyst reads every experiment's results through the API every day, stopping at its first
decision.

    python -m bench.ab_http      # 200 A/A experiments live at once, 14 days of 500 viewers

Everything between the viewer and the decision is the service's own: hashed assignment,
exposures written to the store, attribution in the store's query, the sticky sequential
decision. The experiments run at the same time on the same viewers, each with its own salt,
so their splits are independent but their outcomes are shared: the false-positive rate is
unbiased, its interval (exact binomial) treats them as independent. Power against a planted
lift needs each experiment's viewers to answer by their arm in that experiment alone, so it
comes from `bench/ab_sim.py` (the same statistics code, 200 experiments of 7,000 viewers per
arm) rather than from 200 runs of this one.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from quart.testing.app import TestApp as QuartTestApp

from bench import RESULTS
from bench.ab_sim import exact_interval
from bench.report import write_results
from service.app import Settings, create_app
from service.settings import ServingSettings
from service.state import app_state
from sona_jax.config import SonaConfig

CONCURRENT = 64  # viewers in flight at once (the micro-batcher gathers them)


async def _viewer(client, rng: np.random.Generator, rate: float, by_id: float) -> None:
    user = str(uuid.UUID(int=int(rng.integers(0, 2**62))))
    response = await client.post("/api/v1/recommendations", json={"user_id": user, "limit": 5})
    body = await response.get_json()
    if response.status_code != 200:
        raise RuntimeError(body)
    if rng.random() >= rate or not body["recommendations"]:
        return
    event = {
        "content_id": body["recommendations"][
            int(rng.integers(0, 5)) % len(body["recommendations"])
        ]["content_id"],
        "timestamp": datetime.now(UTC).isoformat(),
        "completion_rate": float(rng.uniform(0.2, 1.0)),
    }
    if rng.random() < by_id:
        event["recommendation_id"] = body["recommendation_id"]
    response = await client.post(
        "/api/v1/profile/update", json={"user_id": user, "viewing_events": [event]}
    )
    if response.status_code != 200:
        raise RuntimeError(await response.get_json())


async def run(args: argparse.Namespace) -> dict:
    rng = np.random.default_rng(args.seed)
    settings = Settings(
        config=SonaConfig().with_overrides({"model": {"embedding_dim": 32}}),
        serving=ServingSettings(
            warm_up=False, compilation_cache=False, max_wait_ms=0.0, recommendation_ttl_seconds=0
        ),
        data_dir=Path(tempfile.mkdtemp(prefix="sona-ab-")),
        demo="synthetic",
        demo_users=150,
        demo_items=300,
    )
    app = create_app(settings)
    async with QuartTestApp(app, startup_timeout=300, shutdown_timeout=120) as test_app:
        await app_state(app).started()
        client = test_app.test_client()
        ids = []
        for k in range(args.experiments):
            response = await client.post(
                "/api/v1/experiments",
                json={
                    "name": f"aa-{k}",
                    "variants": [{"name": "a", "traffic": 0.5}, {"name": "b", "traffic": 0.5}],
                    "expected_rate": args.rate,
                    "relative_effect": args.lift,
                },
            )
            ids.append((await response.get_json())["id"])
        decided_on: dict[str, int] = {}
        naive: set[str] = set()
        mismatched: set[str] = set()
        started = time.perf_counter()
        for day in range(1, args.days + 1):
            for start in range(0, args.users_per_day, CONCURRENT):
                n = min(CONCURRENT, args.users_per_day - start)
                await asyncio.gather(
                    *(_viewer(client, rng, args.rate, args.by_id) for _ in range(n))
                )
            for eid in ids:
                result = (await (await client.get(f"/api/v1/experiments/{eid}")).get_json())[
                    "results"
                ]
                comparison = result["comparisons"][0]
                if comparison["decision"] != "continue" and eid not in decided_on:
                    decided_on[eid] = day
                low, high = comparison["ci95"]
                if low > 0 or high < 0:
                    naive.add(eid)  # a fixed-horizon interval read every day
                if result["sample_ratio"]["mismatch"]:
                    mismatched.add(eid)
            print(
                f"day {day}: {len(decided_on)} of {len(ids)} decided (sequential), "
                f"{len(naive)} by a daily z-test",
                flush=True,
            )
        users = [v["users"] for v in result["variants"]]
        rates = [v["conversion_rate"] for v in result["variants"]]
        seconds = time.perf_counter() - started
    n = args.experiments
    return {
        "settings": vars(args) | {"out": str(args.out)},
        "aa_false_positive_rate": len(decided_on) / n,
        "aa_false_positive_rate_95ci": exact_interval(len(decided_on), n),
        "aa_peeking_z_test_false_positive_rate": len(naive) / n,
        "aa_peeking_z_test_95ci": exact_interval(len(naive), n),
        "aa_sample_ratio_false_alarms": len(mismatched) / n,
        "last_experiment_users_per_arm": users,
        "last_experiment_conversion_rates": rates,
        "viewers": args.days * args.users_per_day,
        "seconds": round(seconds, 1),
        "command": "python -m bench.ab_http",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=200)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--users-per-day", type=int, default=500)
    parser.add_argument("--rate", type=float, default=0.30, help="chance a viewer watches")
    parser.add_argument("--lift", type=float, default=0.10, help="the effect the test is tuned for")
    parser.add_argument("--by-id", type=float, default=0.5, help="views that carry the list id")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "ab_http.json")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    lines = ["| measure | value | 95 % interval | bar |", "| --- | --- | --- | --- |"]
    lines.append(
        f"| A/A false positives, sequential rule read daily | "
        f"{result['aa_false_positive_rate']:.3f} | {result['aa_false_positive_rate_95ci']} | "
        "<= 0.05 |"
    )
    lines.append(
        f"| A/A false positives, z-test read daily | "
        f"{result['aa_peeking_z_test_false_positive_rate']:.3f} | "
        f"{result['aa_peeking_z_test_95ci']} | - |"
    )
    lines.append(
        f"| A/A sample-ratio false alarms (p < 0.001) | "
        f"{result['aa_sample_ratio_false_alarms']:.3f} | - | ~0.001 |"
    )
    table = "\n".join(lines) + (
        f"\n\n{args.experiments} A/A experiments live at once through the HTTP API (Quart test "
        f"client, embedded store), {args.days} days of {args.users_per_day} new viewers, each "
        f"watching a listed item with probability {args.rate} ({args.by_id:.0%} of views carry "
        f"the list id); one experiment's viewers per arm at the end: "
        f"{result['last_experiment_users_per_arm']}. Command: `python -m bench.ab_http` "
        f"({result['seconds']} s).\n"
    )
    write_results(args.out, result, table)


if __name__ == "__main__":
    main()
