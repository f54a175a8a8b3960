"""The markdown table `sona eval` prints (and the README shows) from its JSON result."""

from __future__ import annotations


def format_table(result: dict) -> str:
    """Markdown table of a `sona eval` result."""
    k = result.get("k", 10)
    columns = (
        [f"hr@{k}", f"ndcg@{k}"] if result["protocol"] == "p1" else [f"precision@{k}", f"ndcg@{k}"]
    ) + ["coverage", f"ild@{k}"]
    ties = result.get("tie_break")
    lines = [
        f"{result['data']} {result['protocol'].upper()} ({result['users']} users"
        + (f"; same-second events ordered: {ties}" if ties else "")
        + ")",
        "",
        "| model | kind | " + " | ".join(columns) + f" | hybrid − model NDCG@{k}, 95 % CI |",
        "| --- | --- |" + " --- |" * (len(columns) + 1),
    ]
    for row in result["rows"]:
        values = " | ".join(f"{row['metrics'][c]:.4f}" for c in columns)
        values += " | " + _interval(row)
        name = row["name"] + (
            f" (λ={row['mmr_lambda']}, tuned on validation)"
            if row.get("mmr_lambda", 1.0) != 1.0
            else ""
        )
        lines.append(f"| {name} | {row['kind']} | {values} |")
        if row["kind"] == "hybrid":
            for suffix, label in (
                ("_plain", "without MMR (λ=1)"),
                ("_mmr", f"with MMR λ={result['mmr_lambda']}"),
            ):
                if row["metrics"].get(f"ndcg@{k}" + suffix) is None:
                    continue
                values = " | ".join(f"{row['metrics'][c + suffix]:.4f}" for c in columns)
                values += " | "
                lines.append(f"| {row['name']} {label} | hybrid variant | {values} |")
    for tie_pass in result.get("random_ties", []):
        lines += [
            "",
            f"same-second events in random order (seed {tie_pass['seed']}), settings as above, "
            "nothing re-tuned:",
            "",
            f"| model | ndcg@{k} | hybrid − model, 95 % CI |",
            "| --- | --- | --- |",
        ]
        lines += [
            f"| {row['name']} | {row['metrics'][f'ndcg@{k}']:.4f} | {_interval(row)} |"
            for row in tie_pass["rows"]
        ]
    if "context" in result:
        c = result["context"]
        lines += [
            "",
            f"context (λ=1): NDCG@{k} {c[f'ndcg@{k}_with_context']:.4f} with the test "
            f"event's context vs {c[f'ndcg@{k}_without_context']:.4f} without",
        ]
    if "cold_start" in result:
        tuning = result.get("cold_start_tuning")
        lines += [
            "",
            "cold start"
            + (
                f" (genre strength {tuning['genre_strength']:g}, chosen on validation)"
                if tuning
                else ""
            )
            + ":",
            "",
            f"| first n events | hybrid NDCG@{k} as served | served − popularity, 95 % CI | "
            "hybrid without exploration | without exploration − popularity, 95 % CI | "
            f"popularity NDCG@{k} |",
            "| --- | --- | --- | --- | --- | --- |",
        ]

        def interval(point: dict, key: str) -> str:
            return "[{:+.4f}, {:+.4f}]".format(*point[key]) if key in point else ""

        lines += [
            f"| {p['events']} | {p[f'hybrid_ndcg@{k}']:.4f} | "
            f"{interval(p, 'served_minus_popularity_95ci')} | "
            f"{p.get(f'hybrid_no_exploration_ndcg@{k}', float('nan')):.4f} | "
            f"{interval(p, 'no_exploration_minus_popularity_95ci')} | "
            f"{p[f'popularity_ndcg@{k}']:.4f} |"
            for p in result["cold_start"]
        ]
    return "\n".join(lines)


def _interval(row: dict) -> str:
    """The hybrid's mean difference to ``row`` and its 95 % interval, or blank."""
    if "hybrid_minus_95ci" not in row:
        return ""
    low, high = row["hybrid_minus_95ci"]
    return f"{row['hybrid_minus']:+.4f} [{low:+.4f}, {high:+.4f}]"
