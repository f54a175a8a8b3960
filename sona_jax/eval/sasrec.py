"""SASRec (Kang & McAuley 2018) as a `sona eval` baseline, in flax, with the full-softmax
cross-entropy loss over every item at every position (Klenitskiy & Vasilev 2023 find this
variant stronger than the paper's sampled binary loss) and ranking over the whole catalogue.

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

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from sona_jax.data.schema import EventLog

PADDING = 0  # item index + 1 in sequences; 0 pads


@dataclass(frozen=True)
class SASRecSettings:
    dim: int = 64
    blocks: int = 2
    heads: int = 1
    max_len: int = 50  # ML-100K viewers have a median of 65 ratings
    dropout: float = 0.2
    learning_rate: float = 3e-3  # 1e-3 had not converged after 60 epochs on ML-100K P1
    batch: int = 128  # windows per step
    max_epochs: int = 40
    eval_every: int = 2
    patience: int = 3  # validation checks without a better NDCG before stopping
    score_batch: int = 256  # viewers per scoring call
    seed: int = 0


class SASRecNet(nn.Module):
    """(batch, max_len) item sequences -> (batch, max_len, dim) causal hidden states."""

    n_items: int
    settings: SASRecSettings

    def setup(self):
        s = self.settings
        self.items = nn.Embed(self.n_items + 1, s.dim)
        self.positions = nn.Embed(s.max_len, s.dim)
        self.attention = [
            nn.MultiHeadDotProductAttention(s.heads, dropout_rate=s.dropout)
            for _ in range(s.blocks)
        ]
        self.hidden = [nn.Dense(s.dim) for _ in range(s.blocks)]
        self.out = [nn.Dense(s.dim) for _ in range(s.blocks)]
        self.norms = [nn.LayerNorm() for _ in range(2 * s.blocks + 1)]
        self.drop = nn.Dropout(s.dropout)

    def __call__(self, sequence: jnp.ndarray, train: bool) -> jnp.ndarray:
        s, deterministic = self.settings, not train
        present = sequence != PADDING
        x = self.items(sequence) * jnp.sqrt(s.dim) + self.positions(jnp.arange(s.max_len))
        x = self.drop(x, deterministic=deterministic) * present[..., None]
        mask = nn.combine_masks(
            nn.make_causal_mask(sequence), nn.make_attention_mask(present, present)
        )
        for b in range(s.blocks):
            h = self.norms[2 * b](x)
            x = x + self.attention[b](h, h, mask=mask, deterministic=deterministic)
            h = self.norms[2 * b + 1](x)
            h = self.drop(nn.gelu(self.hidden[b](h)), deterministic=deterministic)
            x = (x + self.drop(self.out[b](h), deterministic=deterministic)) * present[..., None]
        return self.norms[-1](x)

    def logits(self, hidden: jnp.ndarray) -> jnp.ndarray:
        """(..., dim) -> (..., items + 1) scores against the shared item embeddings."""
        return self.items.attend(hidden)


def user_sequences(log: EventLog, mask: np.ndarray, n_users: int) -> list[np.ndarray]:
    """Each user's items (+1) in the log's order of the events in ``mask``."""
    index = np.flatnonzero(mask)
    order = index[np.lexsort((log.timestamp[index], log.user[index]))]
    bounds = np.searchsorted(log.user[order], np.arange(n_users + 1))
    items = log.item[order].astype(np.int32) + 1
    return [items[bounds[u] : bounds[u + 1]] for u in range(n_users)]


def training_windows(sequences: list[np.ndarray], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(windows, max_len) inputs and next-item targets, left-padded, cut from each sequence's
    end so that every item after the first is a target exactly once."""
    inputs, targets = [], []
    for sequence in sequences:
        for end in range(len(sequence), 1, -max_len):
            start = max(1, end - max_len)
            pad = max_len - (end - start)
            inputs.append(np.pad(sequence[start - 1 : end - 1], (pad, 0)))
            targets.append(np.pad(sequence[start:end], (pad, 0)))
    return np.asarray(inputs, np.int32).reshape(-1, max_len), np.asarray(targets, np.int32).reshape(
        -1, max_len
    )


def last_windows(sequences: list[np.ndarray], users: np.ndarray, max_len: int) -> np.ndarray:
    """(len(users), max_len) each user's latest ``max_len`` items, left-padded."""
    rows = np.zeros((len(users), max_len), np.int32)
    for row, user in enumerate(users):
        tail = sequences[user][-max_len:]
        if len(tail):
            rows[row, max_len - len(tail) :] = tail
    return rows


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
        self.sequences, self.net = sequences, SASRecNet(n_items, s)
        self._score = _score_fn(self.net)
        inputs, targets = training_windows(sequences, s.max_len)
        key = jax.random.PRNGKey(s.seed)
        key, init_key = jax.random.split(key)
        self.params = self.net.init(init_key, inputs[:1], train=False)
        optimiser = optax.adam(s.learning_rate)
        state = optimiser.init(self.params)
        step = _train_step(self.net, optimiser)
        rng = np.random.default_rng(s.seed)
        epochs = s.max_epochs if validate is not None else int(self.epochs)
        best, best_params, best_epoch, misses = -np.inf, self.params, 0, 0
        for epoch in range(1, epochs + 1):
            order = rng.permutation(len(inputs))
            order = np.concatenate([order, order[: (-len(order)) % s.batch]])  # whole batches
            for start in range(0, len(order), s.batch):
                rows = order[start : start + s.batch]
                key, dropout_key = jax.random.split(key)
                self.params, state = step(
                    self.params, state, inputs[rows], targets[rows], dropout_key
                )
            if validate is not None and (epoch % s.eval_every == 0 or epoch == epochs):
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
            parts.append(np.asarray(self._score(self.params, padded))[: len(chunk)])
        return np.concatenate(parts)[:, 1:]  # drop the padding item's column


def _train_step(net: SASRecNet, optimiser):
    @jax.jit
    def step(params, state, inputs, targets, dropout_key):
        def loss_fn(params):
            hidden = net.apply(params, inputs, train=True, rngs={"dropout": dropout_key})
            logits = net.apply(params, hidden, method=SASRecNet.logits)
            logits = logits.at[..., PADDING].set(-jnp.inf)
            losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
            present = targets != PADDING
            return jnp.sum(jnp.where(present, losses, 0.0)) / jnp.maximum(present.sum(), 1)

        grads = jax.grad(loss_fn)(params)
        updates, state = optimiser.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


def _score_fn(net: SASRecNet):
    @jax.jit
    def score(params, windows):
        hidden = net.apply(params, windows, train=False)[:, -1]
        return net.apply(params, hidden, method=SASRecNet.logits)

    return score
