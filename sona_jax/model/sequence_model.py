"""The self-attentive sequence model (SASRec, Kang & McAuley 2018) in flax: the network, the
training windows cut from viewers' sequences and the full-softmax training loop.

One implementation for both of its uses: `sona_jax.eval.sasrec` (the `sona eval` baseline,
epochs chosen by early stopping) and the hybrid's ``transformer`` source (`train_model` fits it
on every event of the train log when ``transformer.epochs`` > 0; `sources.transformer_scores`
reads it). Cross-entropy over every item at every position (Klenitskiy & Vasilev 2023 find this
variant stronger than the paper's sampled binary loss).

Sequences hold item index + 1; 0 pads. Parameters travel as flax's nested dict, or flattened
to ``{"params.items.embedding": array, ...}`` (`flat_params`) where a model version stores them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from sona_jax.config import SonaConfig
from sona_jax.data.schema import EventLog

PADDING = 0
PARAM_SEPARATOR = "."


class NetworkShape(NamedTuple):
    """What the network's parameters are shaped by (besides the catalogue); the defaults are
    `TransformerConfig`'s, the one place they are written (`network_shape`)."""

    dim: int
    blocks: int
    heads: int
    max_len: int
    dropout: float


def network_shape(cfg: SonaConfig) -> NetworkShape:
    """The network shape ``cfg``'s transformer source trains and serves."""
    t = cfg.transformer
    return NetworkShape(t.dim, t.blocks, t.heads, t.max_len, t.dropout)


class TrainingSettings(NamedTuple):
    """How the network trains (`TransformerConfig`'s learning rate and batch, the model seed)."""

    learning_rate: float
    batch: int  # windows per step
    seed: int


class SASRecNet(nn.Module):
    """(batch, max_len) item sequences (+1, left-padded with 0) -> (batch, max_len, dim)
    causal hidden states; `logits` scores them against the shared item embeddings."""

    n_items: int
    shape: NetworkShape

    def setup(self):
        s = self.shape
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
        s, deterministic = self.shape, not train
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


def network_items(params: dict) -> int:
    """The catalogue size the parameters were trained for (static under jit)."""
    return params["params"]["items"]["embedding"].shape[0] - 1


def next_item_logits(params: dict, windows: jnp.ndarray, shape: NetworkShape) -> jnp.ndarray:
    """(users, items) scores of every item as the next one after each window (users, max_len)
    (items + 1, left-padded; the padding item's column dropped)."""
    net = SASRecNet(network_items(params), shape)
    hidden = net.apply(params, windows, train=False)[:, -1]
    return net.apply(params, hidden, method=SASRecNet.logits)[:, 1:]


def user_sequences(log: EventLog, mask: np.ndarray, n_users: int) -> list[np.ndarray]:
    """Each user's items (+1) in the log's order of the events in ``mask`` (same-second
    events in log order)."""
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


def known_items(recent_items: jnp.ndarray, n_items: int) -> jnp.ndarray:
    """(users, Lh) which of the recent items (-1 padded) the network of ``n_items`` knows."""
    return (recent_items >= 0) & (recent_items < n_items)


def recent_windows(recent_items: jnp.ndarray, n_items: int, max_len: int) -> jnp.ndarray:
    """(users, max_len) network input from a viewer's recent items (users, Lh) newest first,
    -1 padded: the latest ``max_len`` items the network knows, oldest first, left-padded.
    Items it was not trained on (added since) are skipped, not read as padding: a padded
    last position would give every such viewer the same logits."""
    known = known_items(recent_items, n_items)
    order = jnp.argsort(~known, axis=1, stable=True)  # known items first, newest first
    recent = jnp.take_along_axis(recent_items, order, axis=1)[:, :max_len]
    kept = jnp.take_along_axis(known, order, axis=1)[:, :max_len]
    window = jnp.where(kept, recent + 1, PADDING)[:, ::-1]
    missing = max_len - window.shape[1]
    return jnp.pad(window, ((0, 0), (missing, 0))) if missing > 0 else window


def train_epochs(
    sequences: list[np.ndarray],
    n_items: int,
    shape: NetworkShape,
    settings: TrainingSettings,
    epochs: int,
) -> Iterator[tuple[int, dict]]:
    """Train on every window of ``sequences`` (`user_sequences`); yields (epoch, parameters)
    after each of ``epochs`` epochs, so a caller may check them and stop early."""
    net = SASRecNet(n_items, shape)
    inputs, targets = training_windows(sequences, shape.max_len)
    key = jax.random.PRNGKey(settings.seed)
    key, init_key = jax.random.split(key)
    params = net.init(init_key, jnp.zeros((1, shape.max_len), jnp.int32), train=False)
    if len(inputs) == 0:
        return
    optimiser = optax.adam(settings.learning_rate)
    state = optimiser.init(params)
    step = _train_step(net, optimiser)
    rng = np.random.default_rng(settings.seed)
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(inputs))
        order = np.concatenate([order, order[: (-len(order)) % settings.batch]])  # whole batches
        order = np.resize(order, max(len(order), settings.batch))
        for start in range(0, len(order), settings.batch):
            rows = order[start : start + settings.batch]
            key, dropout_key = jax.random.split(key)
            params, state = step(params, state, inputs[rows], targets[rows], dropout_key)
        yield epoch, params


def fit(
    sequences: list[np.ndarray],
    n_items: int,
    shape: NetworkShape,
    settings: TrainingSettings,
    epochs: int,
) -> dict:
    """The parameters after ``epochs`` epochs (`train_epochs`)."""
    trained = {}
    for _, trained in train_epochs(sequences, n_items, shape, settings, epochs):  # noqa: B007
        continue
    return trained


def flat_params(params: dict) -> dict[str, np.ndarray]:
    """flax's nested parameters as ``{"params.items.embedding": array, ...}`` host arrays."""
    flat = traverse_util.flatten_dict(params, sep=PARAM_SEPARATOR)
    return {name: np.asarray(value) for name, value in flat.items()}


def nested_params(flat: dict[str, np.ndarray]) -> dict:
    """`flat_params` back to flax's nested dict (device arrays); {} stays {}."""
    return traverse_util.unflatten_dict(
        {name: jnp.asarray(value) for name, value in flat.items()}, sep=PARAM_SEPARATOR
    )


def _train_step(net: SASRecNet, optimiser) -> Callable:
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
