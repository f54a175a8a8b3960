"""The hybrid's engines in evaluation: one trained model per train-time digest on a split's
train part (sharing the SASRec baseline's network with the transformer source), and the test
events' context a ranking reads."""

from __future__ import annotations

import numpy as np

from sona_jax.config import SonaConfig
from sona_jax.data.schema import Dataset
from sona_jax.eval.sasrec import SHARED_WITH_SOURCE, SASRec
from sona_jax.eval.splits import Split
from sona_jax.model.sequence_model import flat_params
from sona_jax.model.train import train_model
from sona_jax.serve.engine import ServingEngine


class TrainedEngines:
    """Engines for configs on one dataset, one trained model per train-time digest; a config
    that trains a transformer gets ``transformer`` (flattened parameters: `transformer_from`)
    instead of training one per model."""

    def __init__(self, dataset: Dataset, transformer: dict[str, np.ndarray] | None = None):
        self.dataset, self.models, self.transformer = dataset, {}, transformer

    def __call__(self, cfg: SonaConfig) -> ServingEngine:
        digest = cfg.train_digest()
        if digest not in self.models:
            given = self.transformer if cfg.transformer.epochs > 0 else None
            model = train_model(self.dataset, cfg, transformer=given)
            self.models[digest] = ServingEngine.load(model)
        return self.models[digest].with_config(cfg)


def transformer_from(cfg: SonaConfig, sasrec: SASRec) -> tuple[SonaConfig, dict[str, np.ndarray]]:
    """``cfg`` training the transformer source as ``sasrec`` was trained (its shape, settings
    and chosen epochs), and that network's flattened parameters: the source reads the baseline's
    network, so the run trains it once."""
    settings = {name: getattr(sasrec.config, name) for name in SHARED_WITH_SOURCE}
    settings["epochs"] = int(sasrec.epochs)
    return cfg.with_overrides({"transformer": settings}), flat_params(sasrec.params)


def context_arrays(split: Split, users: np.ndarray, use_context: bool):
    """The test events' (time_of_day, device) of ``users``, or (None, None)."""
    if not use_context:
        return None, None
    return split.test_time_of_day[users], split.test_device[users]
