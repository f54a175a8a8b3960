"""Benchmarks: each prints ratios measured in one run and writes JSON and markdown under
``bench/results/``. Run from the repository root as modules, e.g. ``python -m bench.growth``."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
