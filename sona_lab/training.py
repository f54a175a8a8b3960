"""`sona train`'s host side: the engine's `train_model` with a progress bar and phase timings."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator

from sona_jax.config import SonaConfig
from sona_jax.data import Dataset
from sona_jax.model.adapters import viewer_mesh
from sona_jax.model.train import TrainHooks, train_model
from sona_jax.model.version import TrainedModel


def _progress_bar(iterable: Iterable, description: str, total: int) -> Iterable:
    from tqdm import tqdm

    return tqdm(iterable, desc=description, total=total, unit="chunk")


def train_timed(
    dataset: Dataset,
    cfg: SonaConfig,
    version: int = 1,
    now: float | None = None,
    progress: bool = False,
    devices: int | None = None,
) -> TrainedModel:
    """`train_model`, with the seconds of each phase in ``report["timings"]`` (and a tqdm bar
    over the adapter chunks when ``progress``); adapters split by viewer over ``devices``
    local devices when more than one (None: one)."""
    timings: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(name: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        timings[f"{name}_s"] = time.perf_counter() - started

    hooks = TrainHooks(phase=phase, **({"progress": _progress_bar} if progress else {}))
    mesh = viewer_mesh(devices) if devices and devices > 1 else None
    model = train_model(dataset, cfg, version=version, now=now, hooks=hooks, mesh=mesh)
    model.report["timings"] = timings
    model.report["devices"] = 1 if mesh is None else mesh.size
    return model
