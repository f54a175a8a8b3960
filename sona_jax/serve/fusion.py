"""SPEC 3.4-3.5: how the sources' scores become one relevance — per-request min-max
normalisation over the candidates, fusion weights renormalised over the active sources, and
cold start blended in by β — plus the names every caller reads results by.

Pure functions of score arrays; `rank` applies them to a request's candidates and
`recommend.score_items` to given items, normalised over the whole catalogue.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from sona_jax.config import DiversityConfig, FusionConfig, SonaConfig

SOURCE_NAMES: tuple[str, ...] = ("collaborative", "content_based", "graph_based", "context")
KIND_NAMES: tuple[str, ...] = SOURCE_NAMES[:3] + (
    "context_aware",
    "cold_start",
    "exploration",
    "new_content",
)
COLD_START, EXPLORATION, NEW_CONTENT = 4, 5, 6


class SourceScores(NamedTuple):
    """raw: (users, 4, items) in SOURCE_NAMES order; cold: (users, items);
    active: (users, 4) whether each source has anything to say for that user and request."""

    raw: jnp.ndarray
    cold: jnp.ndarray
    active: jnp.ndarray


def compiled_config(cfg: SonaConfig) -> SonaConfig:
    """``cfg`` as the jitted calls are keyed on it: the settings they take as arrays (fusion
    weights, MMR λ) set to their defaults, so changing those compiles nothing new."""
    return cfg.with_overrides(
        {
            "fusion": FusionConfig().model_dump(),
            "diversity": {"mmr_lambda": DiversityConfig().mmr_lambda},
        }
    )


FUSION_ROWS = 3  # a fusion matrix's rows: weights, history gate, context gate
EXPONENT_LIMIT = 30.0  # |gate exponent| kept where exp() stays finite in float32


def fusion_weights(cfg: SonaConfig) -> jnp.ndarray:
    """(4,) configured weights in SOURCE_NAMES order."""
    f = cfg.fusion
    return jnp.array([f.collaborative, f.content_based, f.graph_based, f.context], jnp.float32)


def fusion_matrix(cfg: SonaConfig) -> jnp.ndarray:
    """(3, 4) the configured fusion matrix: weights, gate_history, gate_context, each in
    SOURCE_NAMES order (see `FusionConfig`)."""
    f = cfg.fusion
    gates = jnp.array([f.gate_history, f.gate_context], jnp.float32)
    return jnp.concatenate([fusion_weights(cfg)[None, :], gates], axis=0)


def as_fusion(weights) -> jnp.ndarray:
    """(3, 4) fusion matrix from a matrix or from plain weights (4,) (gates zero: fixed)."""
    weights = jnp.asarray(weights, jnp.float32)
    if weights.ndim == 1:
        return jnp.concatenate([weights[None, :], jnp.zeros((FUSION_ROWS - 1, 4))], axis=0)
    return weights


def history_feature(qualifying: jnp.ndarray, cfg: SonaConfig) -> jnp.ndarray:
    """(users,) log(1 + qualifying events) / log(1 + cold_start.blend_events): 0 for a new
    viewer, 1 where cold start's blend ends."""
    return jnp.log1p(qualifying.astype(jnp.float32)) / jnp.log1p(cfg.cold_start.blend_events)


def viewer_weights(
    fusion: jnp.ndarray, qualifying: jnp.ndarray, contextual: jnp.ndarray, cfg: SonaConfig
) -> jnp.ndarray:
    """(users, 4) each viewer's source weights: the fusion matrix's (3, 4) weights scaled by
    exp(gate_history · h + gate_context · c) (`history_feature`, c: (users,) the request has a
    context)."""
    fusion = as_fusion(fusion)
    exponent = (
        fusion[1][None, :] * history_feature(qualifying, cfg)[:, None]
        + fusion[2][None, :] * contextual.astype(jnp.float32)[:, None]
    )
    return fusion[0][None, :] * jnp.exp(jnp.clip(exponent, -EXPONENT_LIMIT, EXPONENT_LIMIT))


class MinMax(NamedTuple):
    """Per-row min-max normalisation: low, spread (..., 1), fitted on a request's candidates
    (`fit_min_max`) or, for scores, on the catalogue and the content score's kept span."""

    low: jnp.ndarray
    spread: jnp.ndarray

    def __call__(self, scores: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
        ok = mask & jnp.isfinite(self.spread) & (self.spread > 0)
        return jnp.where(ok, (scores - self.low) / jnp.where(ok, self.spread, 1.0), 0.0)


def fit_min_max(scores: jnp.ndarray, mask: jnp.ndarray) -> MinMax:
    low = jnp.min(jnp.where(mask, scores, jnp.inf), axis=-1, keepdims=True)
    high = jnp.max(jnp.where(mask, scores, -jnp.inf), axis=-1, keepdims=True)
    return MinMax(low, high - low)


def normalise(scores: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    """Min-max to [0, 1] over each row's masked entries (0 elsewhere or when constant)."""
    return fit_min_max(scores, mask)(scores, mask)


def blend_weight(qualifying: jnp.ndarray, cfg: SonaConfig) -> jnp.ndarray:
    """SPEC 3.5 β: 0 below ``cold_start.min_events`` qualifying events, then min(1, n/20)."""
    c = cfg.cold_start
    return jnp.where(qualifying < c.min_events, 0.0, jnp.minimum(1.0, qualifying / c.blend_events))


def exploration_share(qualifying: jnp.ndarray, cfg: SonaConfig) -> jnp.ndarray:
    """ε = max(0.05, 0.2·0.995^n) while the user is still being blended in (β < 1), else 0."""
    c = cfg.cold_start
    epsilon = jnp.maximum(
        c.exploration_floor, c.exploration_start * c.exploration_decay**qualifying
    )
    return jnp.where(blend_weight(qualifying, cfg) < 1.0, epsilon, 0.0)


class Blend(NamedTuple):
    """How one request's scores become relevance: sources (users, 4, 1) and cold (users, 1)
    normalisers (`MinMax`), source shares (users, 4), β (users,) and the context weight that
    shapes cold start (users,)."""

    sources: MinMax
    cold: MinMax
    shares: jnp.ndarray
    beta: jnp.ndarray
    context_weight: jnp.ndarray


def fit_blend(
    scores: SourceScores,
    mask: jnp.ndarray,
    weights: jnp.ndarray,
    qualifying: jnp.ndarray,
    cfg: SonaConfig,
) -> Blend:
    """Normalise over the request's candidates; weights ((3, 4) fusion matrix or (4,))
    renormalised over active sources."""
    return blend_with(
        fit_min_max(scores.raw, mask[:, None, :]),
        fit_min_max(scores.cold, mask),
        scores.active,
        weights,
        qualifying,
        cfg,
    )


def blend_with(
    sources: MinMax,
    cold: MinMax,
    active: jnp.ndarray,
    weights: jnp.ndarray,
    qualifying: jnp.ndarray,
    cfg: SonaConfig,
) -> Blend:
    """The `Blend` of normalisers already fitted (sources (users, 4, 1), cold (users, 1)) for
    sources ``active`` (users, 4): each viewer's weights (`viewer_weights` of the fusion
    matrix ``weights`` (3, 4), or plain weights (4,)) renormalised over the active ones, β,
    and the context weight."""
    per_viewer = viewer_weights(weights, qualifying, active[:, 3], cfg)
    active_weights = per_viewer * active
    total = jnp.sum(active_weights, axis=1, keepdims=True)
    return Blend(
        sources,
        cold,
        active_weights / jnp.where(total > 0, total, 1.0),
        jnp.where(total[:, 0] > 0, blend_weight(qualifying, cfg), 0.0),
        per_viewer[:, 3] * active[:, 3],
    )


def blended(
    blend: Blend, raw: jnp.ndarray, cold: jnp.ndarray, mask: jnp.ndarray
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Relevance (users, n) in [0, 1] and contributions (users, n, 5) of items whose raw
    scores are raw (users, 4, n) and cold (users, n); mask (users, n) marks candidates."""
    normalised = blend.sources(raw, mask[:, None, :])
    cold_mix = (blend.cold(cold, mask) + blend.context_weight[:, None] * normalised[:, 3]) / (
        1.0 + blend.context_weight[:, None]
    )
    contributions = jnp.concatenate(
        [
            blend.beta[:, None, None] * blend.shares[:, :, None] * normalised,
            ((1.0 - blend.beta)[:, None] * cold_mix)[:, None, :],
        ],
        axis=1,
    )
    relevance_ = jnp.where(mask, contributions.sum(axis=1), -jnp.inf)
    return relevance_, jnp.swapaxes(contributions, 1, 2)
