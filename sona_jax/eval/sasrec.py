"""SASRec as a `sona eval` baseline: the network and training loop of
`sona_jax.model.sequence_model` (the hybrid's ``transformer`` source is the same model), ranking
over the whole catalogue.

A viewer's train events, in the log's order (`splits.order_ties` fixes same-second events),
become windows of ``max_len`` (input, next item) pairs cut from the end of the sequence, so
every event is a target once per epoch. The number of epochs is chosen on the validation split
(`fit` with ``validate``: every ``eval_every`` epochs, stop after ``patience`` checks without a
better NDCG) and the best check's parameters are kept; `sona eval` then ranks test viewers from
their whole train sequences (`reading`) without a refit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import jax
import numpy as np

from sona_jax.config import TransformerConfig
from sona_jax.model.sequence_model import (
    NetworkShape,
    TrainingSettings,
    last_windows,
    next_item_logits,
    train_epochs,
)

_SOURCE = TransformerConfig()  # the baseline trains the network the transformer source serves
# What the baseline and the source share (`eval.engines.transformer_from` copies them across).
SHARED_WITH_SOURCE = ("dim", "blocks", "heads", "max_len", "dropout", "learning_rate", "batch")


@dataclass(frozen=True)
class SASRecSettings:
    dim: int = _SOURCE.dim
    blocks: int = _SOURCE.blocks
    heads: int = _SOURCE.heads
    max_len: int = _SOURCE.max_len
    dropout: float = _SOURCE.dropout
    learning_rate: float = _SOURCE.learning_rate
    batch: int = _SOURCE.batch
    max_epochs: int = 40
    eval_every: int = 2
    patience: int = 3  # validation checks without a better NDCG before stopping
    score_batch: int = 256  # viewers per scoring call
    seed: int = 0

    @property
    def shape(self) -> NetworkShape:
        return NetworkShape(self.dim, self.blocks, self.heads, self.max_len, self.dropout)

    @property
    def training(self) -> TrainingSettings:
        return TrainingSettings(self.learning_rate, self.batch, self.seed)


class SASRec:
    name = "sasrec"

    def __init__(self, settings: SASRecSettings = SASRecSettings(), epochs: int | None = None):
        self.config, self.epochs = settings, epochs

    def settings(self) -> dict:
        return asdict(self.config) | {"epochs": self.epochs}

    def fit(
        self,
        sequences: list[np.ndarray],
        n_items: int,
        validate: Callable[[SASRec], float] | None = None,
    ) -> SASRec:
        """Train on ``sequences`` (`user_sequences`) for ``self.epochs``, or, with
        ``validate`` (this model -> validation NDCG), up to ``max_epochs`` keeping the best
        check's epoch count in ``self.epochs`` and its parameters."""
        s = self.config
        self.sequences = sequences
        epochs = s.max_epochs if validate is not None else int(self.epochs)
        best, best_params, best_epoch, misses = -np.inf, None, 0, 0
        for epoch, self.params in train_epochs(sequences, n_items, s.shape, s.training, epochs):
            if validate is None or not (epoch % s.eval_every == 0 or epoch == epochs):
                continue
            found = validate(self)
            if found > best:
                best, best_params, best_epoch, misses = found, self.params, epoch, 0
            else:
                misses += 1
                if misses >= s.patience:
                    break
        if validate is not None:
            self.params, self.epochs, self.validation_ndcg = best_params, best_epoch, best
        return self

    def reading(self, sequences: list[np.ndarray]) -> SASRec:
        """Score from these sequences from now on (e.g. the whole train split's)."""
        self.sequences = sequences
        return self

    def scores(self, users: np.ndarray) -> np.ndarray:
        """(len(users), items) scores from each user's latest window."""
        s = self.config
        windows = last_windows(self.sequences, users, s.max_len)
        parts = []
        for start in range(0, len(users), s.score_batch):
            chunk = windows[start : start + s.score_batch]
            padded = np.pad(chunk, ((0, s.score_batch - len(chunk)), (0, 0)))
            parts.append(np.asarray(_score(self.params, padded, s.shape))[: len(chunk)])
        return np.concatenate(parts)


_score = jax.jit(next_item_logits, static_argnames=("shape",))
