"""A/B simulation: the experiments' decision rule (`service.experiments.statistics`) on
simulated experiments, looked at every day.

    python -m bench.ab_sim            # 200 A/A and 200 A/B experiments of 14 days (seconds)

Viewers arrive each day, are assigned by the service's own hash (`assign`, 50/50), and convert
(watch a recommended item) with a fixed probability; the B variant of the A/B experiments has a
planted +10 % relative lift. Every day the analyst reads the sequential rule and stops at its
first decision. Reported: the false-positive rate of A/A experiments with its exact 95 %
interval, the same for a fixed-horizon z-test read every day (what peeking does to a test that
is not built for it), the power against the planted lift, the sample-ratio check's false alarms.
What is not simulated yet: viewers answering real recommendation lists through the HTTP API
(the experiments API itself is still to come).
"""

from __future__ import annotations

import argparse
import time
import uuid
from pathlib import Path

import numpy as np
from scipy import stats

from bench import RESULTS
from bench.report import write_results
from service.experiments.statistics import ALPHA, Counts, assign, compare, sample_ratio


def simulate(
    n: int, days: int, users_per_day: int, rate: float, lift: float, seed: int
) -> dict[str, float]:
    """``n`` experiments; returns the share that decided (sequential, peeking z-test, SRM)."""
    rng = np.random.default_rng(seed)
    decided = peeked = mismatched = 0
    days_to_decide = []
    for experiment in range(n):
        salt = f"sim-{seed}-{experiment}"
        users = [0, 0]
        conversions = [0, 0]
        sequential_min_p, naive_hit, decided_on = 1.0, False, None
        for day in range(days):
            ids = (str(uuid.UUID(int=int(x))) for x in rng.integers(0, 2**63, users_per_day))
            arms = np.array([assign(salt, u, (0.5, 0.5)) for u in ids])
            for arm in (0, 1):
                count = int(np.sum(arms == arm))
                p = rate * (1.0 + lift) if arm == 1 else rate
                users[arm] += count
                conversions[arm] += int(rng.binomial(count, p))
            result = compare(
                Counts(users[0], conversions[0]),
                Counts(users[1], conversions[1]),
                mixing_sd=rate * max(lift, 0.1),
            )
            sequential_min_p = min(sequential_min_p, result.sequential_p)
            if decided_on is None and sequential_min_p <= ALPHA:
                decided_on = day + 1
            naive_hit |= result.low > 0 or result.high < 0  # the 95 % interval leaves 0
        decided += decided_on is not None
        peeked += naive_hit
        mismatched += sample_ratio(users, (0.5, 0.5)).mismatch
        if decided_on is not None:
            days_to_decide.append(decided_on)
    return {
        "decided": decided,
        "peeking_z_test_decided": peeked,
        "sample_ratio_alarms": mismatched,
        "median_days_to_decide": float(np.median(days_to_decide)) if days_to_decide else None,
    }


def exact_interval(k: int, n: int) -> list[float]:
    """The exact (Clopper-Pearson) 95 % interval of k successes in n, rounded."""
    ci = stats.binomtest(k, n).proportion_ci(0.95, method="exact")
    return [round(ci.low, 4), round(ci.high, 4)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=200)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--users-per-day", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=0.30, help="control conversion rate")
    parser.add_argument("--lift", type=float, default=0.10, help="relative lift of B in A/B")
    parser.add_argument("--out", type=Path, default=RESULTS / "ab_sim.json")
    args = parser.parse_args()
    started = time.perf_counter()
    n = args.experiments
    aa = simulate(n, args.days, args.users_per_day, args.rate, 0.0, seed=1)
    ab = simulate(n, args.days, args.users_per_day, args.rate, args.lift, seed=2)
    per_arm = args.days * args.users_per_day // 2
    result = {
        "settings": vars(args) | {"out": str(args.out)},
        "viewers_per_arm_at_the_end": per_arm,
        "aa_false_positive_rate": aa["decided"] / n,
        "aa_false_positive_rate_95ci": exact_interval(aa["decided"], n),
        "aa_peeking_z_test_false_positive_rate": aa["peeking_z_test_decided"] / n,
        "aa_peeking_z_test_95ci": exact_interval(aa["peeking_z_test_decided"], n),
        "aa_sample_ratio_false_alarms": aa["sample_ratio_alarms"] / n,
        "ab_power": ab["decided"] / n,
        "ab_power_95ci": exact_interval(ab["decided"], n),
        "ab_median_days_to_decide": ab["median_days_to_decide"],
        "seconds": round(time.perf_counter() - started, 1),
        "command": "python -m bench.ab_sim",
    }
    rows = [
        ("A/A false positives, sequential rule read daily", "aa_false_positive_rate", "<= 0.05"),
        ("A/A false positives, z-test read daily", "aa_peeking_z_test_false_positive_rate", "-"),
        ("A/B power (+10 % relative lift)", "ab_power", "reported"),
    ]
    intervals = ["aa_false_positive_rate_95ci", "aa_peeking_z_test_95ci", "ab_power_95ci"]
    lines = ["| measure | value | 95 % interval | bar |", "| --- | --- | --- | --- |"]
    for (label, key, bar), interval in zip(rows, intervals, strict=True):
        lines.append(f"| {label} | {result[key]:.3f} | {result[interval]} | {bar} |")
    lines.append(
        f"| A/A sample-ratio false alarms (p < 0.001) | "
        f"{result['aa_sample_ratio_false_alarms']:.3f} | - | ~0.001 |"
    )
    lines.append(
        f"| A/B median days to a decision | {result['ab_median_days_to_decide']} | - | - |"
    )
    table = "\n".join(lines) + (
        f"\n\n{n} experiments each, {args.days} days of {args.users_per_day} viewers (50/50, "
        f"{per_arm} per arm at the end), control conversion {args.rate}. "
        f"Command: `python -m bench.ab_sim` ({result['seconds']} s).\n"
    )
    write_results(args.out, result, table)


if __name__ == "__main__":
    main()
