"""Scale benchmark: training cost over viewer counts, stored bytes per viewer, the serving
engine's memory, approximate nearest viewers against exact search, and the computed
recommendation p50 at a large catalogue against the default demo's, all in one run.

    python -m bench.scale            # viewers 10 k -> 1 M x 100 k items (long; see the file)
    python -m bench.scale --quick    # a couple of minutes: 5 k -> 20 k viewers x 20 k items

Writes bench/results/scale.json (or --out) and a markdown table next to it; the JSON says which
sizes made it (``sizes``).
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench import RESULTS
from bench.report import write_results

FULL = {"viewers": [10_000, 100_000, 1_000_000], "items": 100_000, "events_per_viewer": 30}
QUICK = {"viewers": [5_000, 10_000, 20_000], "items": 20_000, "events_per_viewer": 30}
DEMO_ITEMS, LARGE_ITEMS, P50_VIEWERS = 3_000, 100_000, 2_000
NEIGHBOURS = 50  # collaborative.neighbours
EXACT_CHUNK = 50_000_000  # query x viewer scores per chunk of exact search (200 MB)


def current_rss() -> int:
    """This process's resident bytes now."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def resident_parts() -> dict:
    """This process's resident bytes now by kind: ``anon`` (its own heap: what it needs) and
    ``file`` (pages of memory-mapped files, the model's viewer tables: the kernel's cache,
    dropped under memory pressure and read again on use)."""
    parts = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("RssAnon", "RssFile"):
                parts[name[3:].lower()] = int(value.split()[0]) * 1024
    return parts


def train_curve(sizes: dict) -> tuple[list[dict], object]:
    """Train a synthetic model at each viewer count; returns the curve and the largest model."""
    from sona_jax.config import SonaConfig
    from sona_jax.data import generate_synthetic
    from sona_lab.training import train_timed

    cfg, curve, model = SonaConfig(), [], None
    for viewers in sizes["viewers"]:
        model = None  # the previous size's model is not kept while the next one trains
        data = generate_synthetic(
            viewers, sizes["items"], events_per_user=sizes["events_per_viewer"], seed=0
        )
        clock = time.perf_counter()
        model = train_timed(data, cfg)
        seconds = time.perf_counter() - clock
        curve.append(
            {
                "viewers": viewers,
                "items": sizes["items"],
                "events": len(data.events),
                "train_seconds": seconds,
                "us_per_event": seconds / len(data.events) * 1e6,
                "bytes_per_user": model.users.stored_bytes_per_user(),
                "timings": model.report.get("timings", {}),
                "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            }
        )
        print(json.dumps(curve[-1]), flush=True)
        del data
    return curve, model


def ann_recall(
    preferences: np.ndarray, index=None, queries: int = 2_000, k: int = NEIGHBOURS
) -> dict:
    """faiss HNSW over viewers' preference vectors (inner product) against exact search:
    ``index`` is the serving engine's own when it has one (built from the same vectors and
    settings), else one is built here."""

    vectors = np.ascontiguousarray(preferences, np.float32)  # no copy of float32 rows
    rng = np.random.default_rng(0)
    asked = vectors[rng.choice(len(vectors), min(queries, len(vectors)), replace=False)]
    clock = time.perf_counter()
    exact = np.concatenate(
        [  # in chunks: 2,000 queries x 1 M viewers at once would be 8 GB of scores
            np.argpartition(-(chunk @ vectors.T), k, axis=1)[:, :k]
            for chunk in np.array_split(asked, max(1, len(asked) * len(vectors) // EXACT_CHUNK))
        ]
    )
    exact_ms = (time.perf_counter() - clock) / len(asked) * 1e3
    out = {"ann_viewers": len(vectors), "exact_ms_per_query": exact_ms}
    if index is None:
        from sona_jax.config import SonaConfig
        from sona_jax.serve.neighbours import ViewerIndex

        clock = time.perf_counter()  # the engine's own index at the served settings
        index = ViewerIndex.build(vectors, SonaConfig().collaborative).index
        out["ann_build_s"] = time.perf_counter() - clock
    served_ef = index.hnsw.efSearch
    for ef in (64, 128, 256):
        index.hnsw.efSearch = ef
        clock = time.perf_counter()
        _, found = index.search(asked, k)
        ms = (time.perf_counter() - clock) / len(asked) * 1e3
        recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(exact, found, strict=True)])
        out[f"ef{ef}"] = {"recall_at_k": float(recall), "ms_per_query": ms}
    best = max(
        (v for key, v in out.items() if key.startswith("ef")), key=lambda v: v["recall_at_k"]
    )
    out["ann_recall_at_k"] = best["recall_at_k"]
    index.hnsw.efSearch = served_ef
    return out


def served_p50(n_items: int, repeats: int = 200) -> dict:
    """p50 of one served recommend call for a viewer whose candidates are kept, and of one
    that retrieves them too, at ``n_items`` (one XLA thread, as `sona serve`)."""
    from sona_jax.config import SonaConfig
    from sona_jax.data import generate_synthetic
    from sona_jax.model.train import train_model
    from sona_jax.serve import viewers
    from sona_jax.serve.batch import Query
    from sona_jax.serve.engine import ServingEngine

    model = train_model(generate_synthetic(P50_VIEWERS, n_items, seed=1), SonaConfig())
    engine = ServingEngine.load(model).with_headroom()
    profiles = [viewers.model_profile(engine, u) for u in model.user_ids.tolist()[:repeats]]
    queries = [Query(p, 20, True, 0.8, device=0, seed=i) for i, p in enumerate(profiles)]
    engine.recommend_queries(queries[:1])
    kept, full = [], []
    for query in queries:
        clock = time.perf_counter()
        _, found = engine.recommend_queries([query])
        full.append(time.perf_counter() - clock)
        with_candidates = replace(query, candidates=found[0])
        engine.recommend_queries([with_candidates])  # first call of this shape mix: warm
        clock = time.perf_counter()
        engine.recommend_queries([with_candidates])
        kept.append(time.perf_counter() - clock)
    return {
        "items": n_items,
        "kept_p50_ms": float(np.median(kept) * 1e3),
        "retrieve_and_rank_p50_ms": float(np.median(full) * 1e3),
    }


def pool_p50(model, engine, repeats: int = 50) -> dict:
    """p50 of retrieving and ranking one first-seen viewer against the largest model's whole
    kNN pool: the exact search, and the HNSW index the engine switches to past
    ``collaborative.approximate_from`` viewers; and how many of the exact lists' items the
    approximate ones keep."""
    from sona_jax.serve import viewers
    from sona_jax.serve.batch import Query

    cfg = model.config
    # One engine's device state for both: the exact one is the same engine without its index.
    exact = engine.with_config(cfg.with_overrides({"collaborative": {"approximate_from": 0}}))
    out = {"pool_viewers": model.n_users}
    approximate = engine
    if engine.viewer_search is None:  # a pool below approximate_from: build one to compare
        clock = time.perf_counter()
        approximate = engine.with_config(
            cfg.with_overrides({"collaborative": {"approximate_from": 1}})
        )
        out["index_build_s"] = time.perf_counter() - clock
    users = model.user_ids.tolist()[:repeats]
    lists = {}
    for name, engine in (("exact", exact), ("hnsw", approximate)):
        queries = [
            Query(viewers.model_profile(engine, u), 20, True, 1.0, seed=i)
            for i, u in enumerate(users)
        ]
        engine.recommend_queries(queries[:1])
        times, items = [], []
        for query in queries:
            clock = time.perf_counter()
            found, _ = engine.recommend_queries([query])
            times.append(time.perf_counter() - clock)
            items.append(set(found.items[0][found.items[0] >= 0].tolist()))
        out[f"{name}_retrieve_and_rank_p50_ms"] = float(np.median(times) * 1e3)
        lists[name] = items
    out["hnsw_list_overlap"] = float(
        np.mean(
            [
                len(a & b) / max(1, len(a))
                for a, b in zip(lists["exact"], lists["hnsw"], strict=True)
            ]
        )
    )
    return out


def train_phase(sizes: dict, model_dir: Path) -> dict:
    """The training curve, the largest model saved to ``model_dir`` (in its own process: what
    training leaves in the heap is not what a server holds)."""
    from sona_lab.model_store import save_model

    curve, model = train_curve(sizes)
    clock = time.perf_counter()
    save_model(model, model_dir)
    per_event = [c["us_per_event"] for c in curve]
    return {
        "curve": curve,
        "train_1m_seconds": curve[-1]["train_seconds"],  # the largest size of `sizes`
        "train_largest_viewers": curve[-1]["viewers"],
        "cost_per_event_ratio_largest_vs_smallest": per_event[-1] / per_event[0],
        "bytes_per_user": curve[-1]["bytes_per_user"],
        "train_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "save_seconds": time.perf_counter() - clock,
    }


def serve_phase(model_dir: Path) -> dict:
    """What a server process holds for the largest model, loaded from disk as `sona serve`
    loads a version (the model's tables and the engine's, with its HNSW index when the pool
    needs one), then nearest-viewer recall and the first-seen viewer's p50 against its pool."""
    from sona_jax.serve.engine import ServingEngine
    from sona_lab.model_store import load_model

    clock = time.perf_counter()
    model = load_model(model_dir)
    gc.collect()
    out = {"model_load_s": time.perf_counter() - clock, "model_rss_bytes": current_rss()}
    out["model_rss_parts"] = resident_parts()
    clock = time.perf_counter()
    engine = ServingEngine.load(model).with_headroom()
    out["engine_load_s"] = time.perf_counter() - clock  # with its HNSW index, if any
    gc.collect()
    out["server_rss_bytes"] = current_rss()
    out["server_rss_parts"] = resident_parts()
    print(json.dumps(out), flush=True)
    out["serve_peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    search = engine.viewer_search
    out |= ann_recall(np.asarray(model.users.preference), None if search is None else search.index)
    if search is not None:
        out["ann_build_s"] = out["engine_load_s"]
    out["served_pool"] = pool_p50(model, engine)
    return out


def in_child(phase: str, sizes: dict, model_dir: Path) -> dict:
    """Run one phase in a fresh process of this script; its JSON result."""
    part = model_dir.parent / f"{phase}.json"
    command = [sys.executable, __file__, "--phase", phase, "--model-dir", str(model_dir)]
    command += ["--part", str(part), "--viewers", *map(str, sizes["viewers"])]
    command += ["--items", str(sizes["items"])]
    subprocess.run(command, check=True)
    return json.loads(part.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "scale.json")
    parser.add_argument(
        "--viewers", type=int, nargs="+", help="the curve's viewer counts (default: the mode's)"
    )
    parser.add_argument("--items", type=int, help="catalogue size (default: the mode's)")
    parser.add_argument(
        "--keep",
        type=Path,
        help="keep the largest model and the phases' results in this folder (default: a "
        "temporary one); when it holds a finished training phase, that one is reused",
    )
    # internal: one phase in a child process (`in_child`)
    parser.add_argument("--phase", choices=("train", "serve"), help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--part", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    from service.serving.threads import limit_xla_threads

    limit_xla_threads(1)  # as `sona serve` runs the engine
    sizes = dict(QUICK if args.quick else FULL)
    if args.viewers:
        sizes["viewers"] = sorted(args.viewers)
    if args.items:
        sizes["items"] = args.items
    if args.phase:
        run = train_phase if args.phase == "train" else serve_phase
        result = run(sizes, args.model_dir) if args.phase == "train" else run(args.model_dir)
        args.part.write_text(json.dumps(result))
        return
    result = {
        "command": "python -m bench.scale"
        + (" --quick" if args.quick else "")
        + (" --viewers " + " ".join(map(str, args.viewers)) if args.viewers else "")
        + (f" --items {args.items}" if args.items else "")
        + (f" --keep {args.keep}" if args.keep else "")
        + (f" --out {args.out}" if args.out != RESULTS / "scale.json" else ""),
        "sizes": sizes,
    }
    with tempfile.TemporaryDirectory(prefix="sona-scale-") as folder:
        model_dir = (args.keep or Path(folder)) / "models"
        trained = model_dir.parent / "train.json"
        if args.keep and trained.is_file():
            result |= json.loads(trained.read_text()) | {"train_reused_from": str(trained)}
        else:
            result |= in_child("train", sizes, model_dir)
        result |= in_child("serve", sizes, model_dir)
    small, large = served_p50(DEMO_ITEMS), served_p50(LARGE_ITEMS if not args.quick else 30_000)
    result["p50"] = [small, large]
    result["p50_ratio_100k_vs_3k"] = large["kept_p50_ms"] / small["kept_p50_ms"]
    result["retrieve_p50_ratio_100k_vs_3k"] = (
        large["retrieve_and_rank_p50_ms"] / small["retrieve_and_rank_p50_ms"]
    )
    write_results(args.out, result, markdown(result))


def markdown(r: dict) -> str:
    small, large = r["p50"]
    rows = [
        (
            f"train {r['train_largest_viewers']:,} viewers x {r['sizes']['items']:,} items, s",
            r["train_1m_seconds"],
            "runs (1 M in the full run)",
        ),
        (
            "cost per event, largest / smallest size",
            r["cost_per_event_ratio_largest_vs_smallest"],
            "~1 (linear)",
        ),
        ("stored bytes per viewer", r["bytes_per_user"], "<= 10240"),
        (
            "server process RSS with the largest model loaded from disk, bytes",
            r["server_rss_bytes"],
            "fits the box",
        ),
        ("  of which the model's tables (RSS after loading it), bytes", r["model_rss_bytes"], "-"),
        (
            "  of which its own heap / pages of the memory-mapped model files, bytes",
            " / ".join(str(r.get("server_rss_parts", {}).get(k, "-")) for k in ("anon", "file")),
            "-",
        ),
        ("  its peak while loading, bytes", r["serve_peak_rss_bytes"], "-"),
        ("  peak RSS while training (its own process), bytes", r["train_peak_rss_bytes"], "-"),
        (
            "  model load / engine load (with its HNSW index when the pool needs one), s",
            f"{r['model_load_s']:.1f} / {r['engine_load_s']:.1f}",
            "-",
        ),
        (
            f"faiss HNSW recall@{NEIGHBOURS} of nearest viewers vs exact ({r['ann_viewers']:,})",
            r["ann_recall_at_k"],
            ">= 0.95",
        ),
        ("  exact search, ms per query", r["exact_ms_per_query"], "-"),
        (
            f"first-seen viewer against {r['served_pool']['pool_viewers']:,} pool viewers: "
            "retrieve + rank p50, exact / HNSW, ms",
            f"{r['served_pool']['exact_retrieve_and_rank_p50_ms']:.2f} / "
            f"{r['served_pool']['hnsw_retrieve_and_rank_p50_ms']:.2f}",
            "-",
        ),
        ("  list items kept with HNSW", r["served_pool"]["hnsw_list_overlap"], "-"),
        (
            f"served p50, candidates kept: {small['items']:,} / {large['items']:,} items, ms",
            f"{small['kept_p50_ms']:.2f} / {large['kept_p50_ms']:.2f}",
            "-",
        ),
        ("  ratio", r["p50_ratio_100k_vs_3k"], "<= 2"),
        (
            "served p50, retrieving too, ms",
            f"{small['retrieve_and_rank_p50_ms']:.2f} / {large['retrieve_and_rank_p50_ms']:.2f}",
            "-",
        ),
    ]

    def fmt(value):
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| measure | value | bar |", "| --- | --- | --- |"]
    lines += [f"| {name} | {fmt(value)} | {bar} |" for name, value, bar in rows]
    lines += ["", "| viewers | items | events | train s | us / event | bytes / viewer |"]
    lines += ["| --- | --- | --- | --- | --- | --- |"]
    lines += [
        f"| {c['viewers']:,} | {c['items']:,} | {c['events']:,} | {c['train_seconds']:.1f} | "
        f"{c['us_per_event']:.1f} | {c['bytes_per_user']:.0f} |"
        for c in r["curve"]
    ]
    for name, value in r.items():
        if name.startswith("ef"):
            lines.append(
                f"\nfaiss HNSW (M 32, float16 vectors) efSearch {name[2:]}: recall {value['recall_at_k']:.4f}, "
                f"{value['ms_per_query']:.3f} ms per query"
            )
    lines.append(f"\nCommand: `{r['command']}`; sizes: {json.dumps(r['sizes'])}.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
