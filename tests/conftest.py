"""Shared fixtures: small datasets, configs, and the location of MovieLens 100K."""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads BLAS: implicit's advice
from pathlib import Path

import jax
import pytest

from sona_jax.config import SonaConfig
from sona_jax.data import generate_synthetic

jax.config.update("jax_platforms", "cpu")

ML100K = Path(
    os.environ.get(
        "SONA_ML100K",
        Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "ml-100k",
    )
)


@pytest.fixture(scope="session")
def ml100k_path() -> Path:
    if not (ML100K / "u.data").is_file():
        pytest.skip(f"MovieLens 100K not found at {ML100K} (set SONA_ML100K to its folder)")
    return ML100K


@pytest.fixture(scope="session")
def config() -> SonaConfig:
    return SonaConfig()


@pytest.fixture(scope="session")
def small_config() -> SonaConfig:
    """Defaults with d = 64 so tests stay fast."""
    return SonaConfig().with_overrides({"model": {"embedding_dim": 64}})


@pytest.fixture(scope="session")
def synthetic_small():
    return generate_synthetic(n_users=300, n_items=400, events_per_user=30, seed=1)
