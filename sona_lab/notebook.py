"""What the research notebooks use, in one namespace (``from sona_lab import notebook as ex``):
which data to use, the validation scorer and splits, what the service would serve, and the
plots."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from sona_jax.config import SonaConfig
from sona_jax.data import Dataset
from sona_jax.eval.ranking import ranked_lists
from sona_jax.eval.splits import first_events_mask
from sona_jax.model.version import TrainedModel
from sona_jax.search.scoring import Scorer, lambda_sweep, make_splits
from sona_jax.serve.engine import ServingEngine
from sona_lab.datasets import load_dataset
from sona_lab.plots import lambda_tradeoff_figure, weight_effects, weights_effect_figure

SMALL_DATA = {"n_users": 300, "n_items": 400, "events_per_user": 30}
FALLBACK_DATA = {"n_users": 2_000, "n_items": 3_000}


def notebook_small() -> bool:
    """True when ``SONA_NOTEBOOK_SMALL=1``: notebooks use small synthetic data (tests)."""
    return os.environ.get("SONA_NOTEBOOK_SMALL", "") not in ("", "0")


def ml100k_folder() -> Path:
    """``$SONA_ML100K``, else ``../shared/datasets/ml-100k`` beside the repository."""
    repo = Path(__file__).resolve().parents[1]
    return Path(os.environ.get("SONA_ML100K", repo.parent / "shared" / "datasets" / "ml-100k"))


def research_dataset(seed: int = 0) -> Dataset:
    """The notebooks' data: small synthetic (300 x 400) with ``SONA_NOTEBOOK_SMALL=1``, else
    MovieLens 100K when found (`ml100k_folder`), else synthetic 2 000 x 3 000."""
    if notebook_small():
        return load_dataset("synthetic", seed=seed, **SMALL_DATA)
    if (ml100k_folder() / "u.data").is_file():
        return load_dataset("ml-100k", str(ml100k_folder()))
    return load_dataset("synthetic", seed=seed, **FALLBACK_DATA)


def served(
    model: TrainedModel,
    cfg: SonaConfig,
    users: np.ndarray,
    mmr_lambda: float,
    time_of_day: np.ndarray | None = None,
    device: np.ndarray | None = None,
    k: int = 10,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the service would serve ``users`` (model rows): (users, k) items, (users, k) index
    into `fusion.KIND_NAMES` of why each was served, and (users, k, N_SOURCES + 1) each item's
    weighted relevance from each source and from cold start."""
    engine = ServingEngine.load(model, cfg)
    lists = ranked_lists(engine, users, None, mmr_lambda, time_of_day, device, k)
    return lists.items, lists.kinds, lists.contributions


__all__ = [
    "Scorer",
    "first_events_mask",
    "lambda_sweep",
    "lambda_tradeoff_figure",
    "make_splits",
    "ml100k_folder",
    "notebook_small",
    "research_dataset",
    "served",
    "weight_effects",
    "weights_effect_figure",
]
