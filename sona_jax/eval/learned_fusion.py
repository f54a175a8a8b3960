"""The learned fusion: source weights and per-viewer gates (`FusionConfig`) fitted on the
validation split by a listwise loss over each viewer's real candidates.

The relevance it trains is the served one: candidates from `ServingEngine.candidate_rows`,
fused by `fusion.fit_blend` / `fusion.blended` with a (3, N_SOURCES) fusion matrix (weights,
history gate, context gate), so explanations (each item's top contributing source) keep
their meaning. Loss: the softmax cross-entropy of each viewer's held-out items among their
candidates (relevance / ``temperature``), plus ``l2`` times the squared distance of the log
weights from the fixed weights' and of the gates from zero; the strength is chosen by two-fold
cross-fitting over validation viewers (`choose_and_fit`). Evaluation serves the learned
fusion only where its cross-fitted validation NDCG beats the fixed weights' with a paired 95 %
interval above zero (`learn_on_validation`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.sparse as sp

from sona_jax.config import SonaConfig
from sona_jax.eval.metrics import held_out_hits, paired_bootstrap, per_user_ndcg
from sona_jax.eval.ranking import rank
from sona_jax.serve.batch import request_rows
from sona_jax.serve.engine import ServingEngine
from sona_jax.serve.fusion import N_SOURCES, SOURCE_NAMES, blended, cold_start_row, fit_blend
from sona_jax.serve.rank import RequestCandidates

WEIGHT_FLOOR = 1e-4  # fixed weights of zero start their log here


@dataclass(frozen=True)
class FusionFitSettings:
    steps: int = 300
    learning_rate: float = 0.05
    temperature: float = 0.05  # relevance lies in [0, 1]; logits are relevance / temperature
    l2_grid: tuple[float, ...] = (0.1, 1.0, 10.0)
    seed: int = 0


def fusion_matrix_of(params: dict) -> jnp.ndarray:
    """(3, N_SOURCES) fusion matrix of the fitted parameters."""
    return jnp.stack([jnp.exp(params["log_weights"]), params["history"], params["context"]])


@partial(jax.jit, static_argnames=("cfg", "steps"))
def _fit(
    table: RequestCandidates,
    positives: jnp.ndarray,
    qualifying: jnp.ndarray,
    start_log_weights: jnp.ndarray,
    l2: jnp.ndarray,
    learning_rate: jnp.ndarray,
    temperature: jnp.ndarray,
    cfg: SonaConfig,
    steps: int,
) -> dict:
    counted = positives.any(axis=1)

    def loss_fn(params):
        blend = fit_blend(
            table.scores, table.mask, fusion_matrix_of(params), qualifying, cold_start_row(cfg)
        )
        relevance, _ = blended(blend, table.scores.raw, table.scores.cold, table.mask)
        usable = table.mask & counted[:, None]
        logits = jnp.where(usable, relevance / temperature, -1e9)
        log_p = jax.nn.log_softmax(logits, axis=1)
        per_viewer = -jnp.sum(jnp.where(positives, log_p, 0.0), axis=1) / jnp.maximum(
            positives.sum(axis=1), 1
        )
        data = jnp.sum(jnp.where(counted, per_viewer, 0.0)) / jnp.maximum(counted.sum(), 1)
        penalty = (
            jnp.sum((params["log_weights"] - start_log_weights) ** 2)
            + jnp.sum(params["history"] ** 2)
            + jnp.sum(params["context"] ** 2)
        )
        return data + l2 * penalty

    optimiser = optax.adam(learning_rate)
    params = {
        "log_weights": start_log_weights,
        "history": jnp.zeros(N_SOURCES),
        "context": jnp.zeros(N_SOURCES),
    }

    def step(carry, _):
        params, state = carry
        grads = jax.grad(loss_fn)(params)
        updates, state = optimiser.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params, optimiser.init(params)), None, length=steps)
    return params


def fit_fusion(
    table: RequestCandidates,
    positives: np.ndarray,
    qualifying: np.ndarray,
    fixed_weights: np.ndarray,
    l2: float,
    cfg: SonaConfig,
    settings: FusionFitSettings,
) -> np.ndarray:
    """(3, N_SOURCES) fusion matrix fitted on the first len(positives) rows of ``table``, starting from
    ``fixed_weights`` (N_SOURCES,) with closed gates."""
    n = len(positives)
    rows = jax.tree_util.tree_map(lambda x: x[:n], table)
    start = np.log(np.maximum(np.asarray(fixed_weights, np.float32), WEIGHT_FLOOR))
    params = _fit(
        rows,
        jnp.asarray(positives),
        jnp.asarray(qualifying[:n], jnp.float32),
        jnp.asarray(start),
        jnp.float32(l2),
        jnp.float32(settings.learning_rate),
        jnp.float32(settings.temperature),
        cfg,
        settings.steps,
    )
    return np.asarray(fusion_matrix_of(params))


def choose_and_fit(
    table: RequestCandidates,
    positives: np.ndarray,
    qualifying: np.ndarray,
    fixed_weights: np.ndarray,
    cfg: SonaConfig,
    settings: FusionFitSettings,
    held_out_ndcg: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> tuple[np.ndarray, dict, np.ndarray]:
    """The fusion matrix fitted on every row, with the L2 strength whose two-fold cross-fitted
    NDCG is best, what was tried, and that strength's cross-fitted per-viewer NDCG (n,).
    ``held_out_ndcg(matrix, rows)`` is the per-viewer NDCG (len(rows),) of the lists ranked
    with ``matrix`` for those rows of the table."""
    n = len(positives)
    fold = np.random.default_rng(settings.seed).permutation(n) % 2
    tried, per_viewer = {}, {}
    for l2 in settings.l2_grid:
        scores = np.zeros(n)
        for part in (0, 1):
            train_rows, test_rows = np.flatnonzero(fold != part), np.flatnonzero(fold == part)
            sub = jax.tree_util.tree_map(lambda x, r=train_rows: x[r], table)
            matrix = fit_fusion(
                sub, positives[train_rows], qualifying[train_rows], fixed_weights, l2, cfg, settings
            )
            scores[test_rows] = held_out_ndcg(matrix, test_rows)
        tried[l2], per_viewer[l2] = float(scores.mean()), scores
    best = max(tried, key=tried.get)
    matrix = fit_fusion(table, positives, qualifying, fixed_weights, best, cfg, settings)
    return matrix, {"l2": best, "cross_fitted_ndcg": tried}, per_viewer[best]


def learn_on_validation(
    engine: ServingEngine,
    val_test: sp.csr_matrix,
    val_users: np.ndarray,
    time_of_day: np.ndarray | None,
    device: np.ndarray | None,
    fixed_weights: np.ndarray,
    cfg: SonaConfig,
    settings: FusionFitSettings,
    k: int,
) -> tuple[np.ndarray, dict]:
    """The fusion matrix learned on the validation viewers ``val_users`` of ``engine`` (a model
    of the validation split's train part) with their held-out items ``val_test``, and a record:
    the L2 strength, its cross-fitted NDCG@k beside the fixed weights' on the same viewers
    with the paired 95 % interval of the difference, and whether to use it (``used``: the
    interval is above zero). The fixed weights' NDCG is in-sample (they were searched on
    these viewers), the learned one's cross-fitted: the rule leans towards the fixed weights."""
    requests = request_rows(
        len(val_users), 1.0, engine.host_cold_start, time_of_day=time_of_day, device=device
    )
    table, qualifying = engine.candidate_rows(val_users, requests)
    n = len(val_users)
    positives = held_out_hits(np.asarray(table.items)[:n], val_test, val_users)

    def held_out_ndcg(matrix: np.ndarray, rows: np.ndarray) -> np.ndarray:
        context = [None if c is None else c[rows] for c in (time_of_day, device)]
        top = rank(engine, val_users[rows], matrix, 1.0, *context, k)
        return per_user_ndcg(top, val_test, val_users[rows])[0]

    matrix, record, learned = choose_and_fit(
        table, positives, qualifying, fixed_weights, cfg, settings, held_out_ndcg
    )
    fixed = held_out_ndcg(np.asarray(fixed_weights), np.arange(n))
    low, high = paired_bootstrap(learned, fixed, settings.seed)
    record |= {
        "fixed_ndcg": float(fixed.mean()),
        "learned_minus_fixed_95ci": [low, high],
        # used only when validation tells it apart from the fixed weights it started from
        "used": bool(low > 0),
        "candidates_holding_a_held_out_item": float(positives.any(axis=1).mean()),
        "matrix": matrix.tolist(),
        "toml": fusion_toml(matrix),
    }
    return matrix, record


def fusion_toml(matrix: np.ndarray) -> str:
    """The ``[fusion]`` table that serves the fusion matrix (3, N_SOURCES)."""

    def array(row) -> str:
        return "[" + ", ".join(f"{v:.6g}" for v in row) + "]"

    lines = ["[fusion]"] + [f"{n} = {w:.6g}" for n, w in zip(SOURCE_NAMES, matrix[0], strict=True)]
    return "\n".join(
        lines + [f"gate_history = {array(matrix[1])}", f"gate_context = {array(matrix[2])}"]
    )
