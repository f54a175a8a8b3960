"""Engine benchmark: the SPEC 8 engine bars, measured as ratios within one run.

    python -m bench.engine            # full run (trains synthetic 100 k users x 50 k items)
    python -m bench.engine --quick    # under a minute; same keys, smaller end-to-end set

Writes bench/results/engine.json (or --out) and a markdown table next to it.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from bench import RESULTS
from sona_jax.config import SonaConfig
from sona_jax.data import generate_synthetic
from sona_jax.model import lora
from sona_lab.training import train_timed


def _timed(fn, repeats: int) -> np.ndarray:
    """Milliseconds of ``repeats`` calls of ``fn`` (each blocked until ready), after warm-up."""
    jax.block_until_ready(fn())
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        samples.append((time.perf_counter() - start) * 1e3)
    return np.array(samples)


def _random_base(n_items: int, cfg: SonaConfig, seed: int = 0) -> lora.BaseTier:
    rng = np.random.default_rng(seed)
    d, r = cfg.model.embedding_dim, cfg.lora.rank
    embeddings = rng.standard_normal((n_items, d)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    factor = np.linalg.qr(rng.standard_normal((d, r)))[0].T.astype(np.float32)
    return lora.make_base_tier(embeddings, 8.0 * np.eye(d, dtype=np.float32), -2.0, factor)


def _users(n: int, cfg: SonaConfig, seed: int = 1):
    rng = np.random.default_rng(seed)
    p = rng.standard_normal((n, cfg.model.embedding_dim)).astype(np.float32)
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    b = (0.01 * rng.standard_normal((n, cfg.model.embedding_dim, cfg.lora.rank))).astype(np.float16)
    return jnp.asarray(p), jnp.asarray(b)


def bench_single_score(cfg: SonaConfig, repeats: int) -> dict:
    """One user, 100 candidates: fold + score, as the score endpoint does in process."""
    base = _random_base(10_000, cfg)
    p, b = _users(1, cfg)
    candidates = jnp.asarray(np.random.default_rng(2).integers(0, 10_000, (1, 100)), jnp.int32)
    ms = _timed(lambda: lora.personalised_scores(base, p, b, candidates, cfg.lora.scale), repeats)
    return {
        "score_p50_ms": float(np.percentile(ms, 50)),
        "score_p95_ms": float(np.percentile(ms, 95)),
    }


def bench_catalogue(cfg: SonaConfig, repeats: int) -> dict:
    """64 users x 10 k items: our fold-and-score vs a bare jnp.dot of the same shapes."""
    base = _random_base(10_000, cfg)
    p, b = _users(64, cfg)
    items_t = jnp.asarray(base.item_embeddings.T)
    bare = jax.jit(jnp.dot)
    # Interleave so both see the same machine state.
    ours_ms, bare_ms = [], []
    for _ in range(3):
        ours_ms.append(_timed(lambda: lora.score_catalogue(base, p, b, cfg.lora.scale), repeats))
        bare_ms.append(_timed(lambda: bare(p, items_t), repeats))
    ours, plain = (
        float(np.median(np.concatenate(ours_ms))),
        float(np.median(np.concatenate(bare_ms))),
    )
    flops = 2 * 64 * cfg.model.embedding_dim * 10_000
    return {
        "catalogue_fraction_of_matmul": plain / ours,
        "catalogue_ms": ours,
        "bare_matmul_ms": plain,
        "bare_matmul_gflops": flops / plain / 1e6,
    }


def bench_training(cfg: SonaConfig, n_users: int = 1_000) -> dict:
    """vmapped training of n users vs a per-user loop of the same jitted step."""
    lcfg = cfg.lora
    base = _random_base(5_000, cfg)
    p, b = _users(n_users, cfg)
    rng = np.random.default_rng(3)
    length = lcfg.max_events + lcfg.negatives_per_user
    items = jnp.asarray(rng.integers(0, 5_000, (n_users, length)), jnp.int32)
    targets = jnp.asarray(
        np.concatenate(
            [rng.random((n_users, lcfg.max_events)), np.zeros((n_users, lcfg.negatives_per_user))],
            1,
        ),
        jnp.float32,
    )
    mask = jnp.ones((n_users, length), jnp.float32)
    prepare_ms = _timed(lambda: lora.prepare_training_batch(base, p, b, items, targets, mask), 5)
    batch = jax.block_until_ready(lora.prepare_training_batch(base, p, b, items, targets, mask))
    batched_ms = _timed(lambda: lora.train_adapters(batch, lcfg), 50)
    deltas = lora.train_adapters(batch, lcfg).delta
    apply_ms = _timed(lambda: lora.apply_adapter_updates(b, p, deltas), 10)

    step = jax.jit(lora.make_adapter_trainer(lcfg))
    per_user = [tuple(x[u] for x in batch) for u in range(n_users)]
    jax.block_until_ready(per_user)
    jax.block_until_ready(step(*per_user[0]))
    loop_ms = []
    for _ in range(5):
        start = time.perf_counter()
        outs = [step(*args) for args in per_user]
        jax.block_until_ready(outs)
        loop_ms.append((time.perf_counter() - start) * 1e3)
        batched_ms = np.concatenate(
            [batched_ms, _timed(lambda: lora.train_adapters(batch, lcfg), 10)]
        )
    batched, loop = float(np.median(batched_ms)), float(np.median(loop_ms))
    return {
        "vmap_train_speedup": loop / batched,
        "vmap_train_ms": batched,
        "loop_train_ms": loop,
        "prepare_batch_ms": float(np.median(prepare_ms)),
        "apply_updates_ms": float(np.median(apply_ms)),
        "train_users": n_users,
    }


def bench_end_to_end(sizes: list[tuple[int, int]], cfg: SonaConfig) -> dict:
    """Generate and train synthetic sets; the last size is the headline figure."""
    curve = []
    for n_users, n_items in sizes:
        clock = time.perf_counter()
        data = generate_synthetic(n_users=n_users, n_items=n_items, events_per_user=30, seed=0)
        generated = time.perf_counter() - clock
        clock = time.perf_counter()
        model = train_timed(data, cfg)
        trained = time.perf_counter() - clock
        curve.append(
            {
                "users": n_users,
                "items": n_items,
                "events": len(data.events),
                "generate_s": generated,
                "train_s": trained,
                "train_us_per_event": trained / len(data.events) * 1e6,
                "stages_s": model.report["timings"],
                "fraction_improved": model.report.get("fraction_improved"),
            }
        )
        print(
            f"  {n_users:>7} users x {n_items:>6} items, {len(data.events):>8} events: "
            f"generate {generated:6.1f}s, train {trained:6.1f}s "
            f"({curve[-1]['train_us_per_event']:.1f} us/event)",
            flush=True,
        )
    return {
        "train_100k_seconds": curve[-1]["train_s"],
        "scale_curve": curve,
        "bytes_per_user": model.users.stored_bytes_per_user(),
    }


def markdown(result: dict) -> str:
    bars = [
        ("score_p50_ms", "one score of 100 candidates, p50 (ms)", "< 0.5"),
        ("score_p95_ms", "one score of 100 candidates, p95 (ms)", ""),
        (
            "catalogue_fraction_of_matmul",
            "64 users x 10 k items, fraction of bare jnp.dot",
            ">= 0.8",
        ),
        (
            "vmap_train_speedup",
            "vmapped training of 1,000 users vs per-user loop (XLA on 1 thread, as served)",
            ">= 20x",
        ),
        (
            "vmap_train_speedup_all_threads",
            "  the same, XLA on one thread per core (offline `sona train`)",
            "-",
        ),
        ("bytes_per_user", "stored bytes per user", "<= 10240"),
        ("train_100k_seconds", "train synthetic set end to end (s)", "runs"),
    ]
    lines = ["| measure | value | bar |", "| --- | --- | --- |"]
    lines += [f"| {label} | {result[key]:.4g} | {bar} |" for key, label, bar in bars]
    size = result["scale_curve"][-1]
    lines.append(
        f"\nEnd-to-end set: {size['users']} users x {size['items']} items, "
        f"{size['events']} events. Command: `{result['command']}`."
    )
    lines.append(
        "\n| users | items | events | train s | us / event |\n| --- | --- | --- | --- | --- |"
    )
    lines += [
        f"| {c['users']} | {c['items']} | {c['events']} | {c['train_s']:.1f} | "
        f"{c['train_us_per_event']:.1f} |"
        for c in result["scale_curve"]
    ]
    return "\n".join(lines) + "\n"


def served_training() -> dict:
    """`bench_training` in a child process whose XLA computes on one thread, as in `sona serve`,
    where the learner retrains viewers' adapters as their events arrive (the main process keeps
    XLA's default pool: one thread per core). With two threads on this 2-core machine, the
    batched steps, which run one after another, pay the pool's hand-offs on every step."""
    with tempfile.TemporaryDirectory() as folder:
        part = Path(folder) / "training.json"
        subprocess.run([sys.executable, __file__, "--training-part", str(part)], check=True)
        return json.loads(part.read_text()) | {"train_xla_threads": 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small end-to-end set (< 1 min)")
    parser.add_argument("--out", type=Path, default=RESULTS / "engine.json")
    # internal: adapter training alone, XLA on one thread (`served_training`)
    parser.add_argument("--training-part", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    cfg = SonaConfig()
    if args.training_part:
        from service.serving.threads import limit_xla_threads

        limit_xla_threads(1)
        args.training_part.write_text(json.dumps(bench_training(cfg)))
        return
    result = {
        "command": "python -m bench.engine" + (" --quick" if args.quick else ""),
        "quick": args.quick,
        "device": str(jax.devices()[0]),
        "machine": platform.machine(),
        "jax": jax.__version__,
    }
    print("single score ...", flush=True)
    result |= bench_single_score(cfg, repeats=300 if args.quick else 2000)
    print("catalogue scoring ...", flush=True)
    result |= bench_catalogue(cfg, repeats=10 if args.quick else 30)
    print("adapter training ...", flush=True)
    result |= served_training()
    result |= {f"{k}_all_threads": v for k, v in bench_training(cfg).items()}
    print("end to end ...", flush=True)
    sizes = (
        [(2_000, 2_000), (4_000, 4_000)]
        if args.quick
        else [(12_500, 6_250), (25_000, 12_500), (50_000, 25_000), (100_000, 50_000)]
    )
    result |= bench_end_to_end(sizes, cfg)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    table = markdown(result)
    args.out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
