"""An experiment's results as the API answers them: per-variant metrics from the attributed
counts (`Store.experiment_counts`), each variant against control with the statistics of
`service.experiments.statistics`, the sample-ratio check, and the decision.

The decision of the sequential test is sticky: once a variant's always-valid p-value has
fallen below α it stays decided (``looks``, kept in the store), as the test's guarantee
assumes someone who stops at the first crossing.
"""

from __future__ import annotations

import time
from typing import Any

from service.experiments.statistics import ALPHA, Counts, compare, sample_ratio
from service.storage import ExperimentRecord, VariantCounts

RATE_FLOOR = 0.01  # the smallest conversion rate the mixing spread is scaled by


def conversions(counts: VariantCounts, metric: str) -> int:
    """Viewers who converted under ``metric``: watched a listed item (click_through), or
    watched one to the completion bar (completion)."""
    return counts.clicked_users if metric == "click_through" else counts.completed_users


def variant_metrics(name: str, traffic: float, counts: VariantCounts, metric: str) -> dict:
    users = counts.users
    return {
        "name": name,
        "traffic": traffic,
        "users": users,
        "lists": counts.lists,
        "conversions": conversions(counts, metric),
        "conversion_rate": conversions(counts, metric) / users if users else 0.0,
        "click_through": counts.clicked_users / users if users else 0.0,
        "attributed_views": counts.views,
        "mean_completion": counts.completion_sum / counts.views if counts.views else None,
        "dismissals": counts.dismissals,
        "dismissal_rate": counts.dismissing_users / users if users else 0.0,
    }


def results(
    record: ExperimentRecord, counts: list[VariantCounts]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The results of ``record`` from its ``counts``, and the looks to store (updated)."""
    definition = record.definition
    variants, metric = definition["variants"], definition["metric"]
    by_variant = {c.variant: c for c in counts}
    filled = [by_variant.get(i, VariantCounts(i)) for i in range(len(variants))]
    per_variant = [
        variant_metrics(v["name"], v["traffic"], c, metric)
        for v, c in zip(variants, filled, strict=True)
    ]
    control = Counts(filled[0].users, conversions(filled[0], metric))
    expected = definition.get("expected_rate") or max(control.rate, RATE_FLOOR)
    mixing_sd = expected * definition["relative_effect"]
    looks = dict(record.looks)
    comparisons = []
    for index in range(1, len(variants)):
        name = variants[index]["name"]
        result = compare(
            control, Counts(filled[index].users, conversions(filled[index], metric)), mixing_sd
        )
        seen = looks.get(name, {"min_p": 1.0, "decision": "continue", "decided_at": None})
        seen = dict(seen, min_p=min(seen["min_p"], result.sequential_p))
        if seen["decision"] == "continue" and result.decision != "continue":
            seen.update(decision=result.decision, decided_at=time.time())
        looks[name] = seen
        comparisons.append(
            {
                "variant": name,
                "difference": result.difference,
                "ci95": [result.low, result.high],
                "always_valid_ci95": [result.sequential_low, result.sequential_high],
                "always_valid_p": seen["min_p"],
                "decision": seen["decision"],
                "decided_at": seen["decided_at"],
            }
        )
    ratio = sample_ratio([c.users for c in filled], [v["traffic"] for v in variants])
    return {
        "metric": metric,
        "alpha": ALPHA,
        "mixing_sd": mixing_sd,
        "variants": per_variant,
        "comparisons": comparisons,
        "sample_ratio": {"p_value": ratio.p_value, "mismatch": ratio.mismatch},
        "decision": _decision(comparisons, ratio.mismatch),
    }, looks


def _decision(comparisons: list[dict], mismatch: bool) -> str:
    """One line for the whole experiment."""
    if mismatch:
        return (
            "sample ratio mismatch: the split does not match the traffic shares; check "
            "assignment before reading the results"
        )
    better = [c["variant"] for c in comparisons if c["decision"] == "variant better"]
    if better:
        best = max(
            (c for c in comparisons if c["variant"] in better), key=lambda c: c["difference"]
        )
        return f"{best['variant']} better than control"
    if comparisons and all(c["decision"] == "control better" for c in comparisons):
        return "control better than every variant"
    return "continue: no variant decided yet"
