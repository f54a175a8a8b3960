"""SPEC 3.4-3.5: how the sources' scores become one relevance — per-request min-max
normalisation over the candidates, fusion weights renormalised over the active sources, and
cold start blended in by β — plus the names every caller reads results by.

Pure functions of score arrays; `rank` applies them to a request's candidates and
`recommend.score_items` to given items, normalised over the whole catalogue.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from sona_jax.config import DiversityConfig, FusionConfig, SonaConfig

SOURCE_NAMES: tuple[str, ...] = (
    "collaborative",
    "content_based",
    "graph_based",
    "sequential",
    "transformer",
    "context",
)
N_SOURCES = len(SOURCE_NAMES)
CONTEXT = SOURCE_NAMES.index("context")  # the last: every other source is retrieved
SEQUENTIAL = SOURCE_NAMES.index("sequential")
TRANSFORMER = SOURCE_NAMES.index("transformer")
KIND_NAMES: tuple[str, ...] = SOURCE_NAMES[:CONTEXT] + (
    "context_aware",
    "cold_start",
    "exploration",
    "new_content",
)
COLD_START, EXPLORATION, NEW_CONTENT = N_SOURCES, N_SOURCES + 1, N_SOURCES + 2


class SourceScores(NamedTuple):
    """raw: (users, N_SOURCES, items) in SOURCE_NAMES order; cold: (users, items);
    active: (users, N_SOURCES) whether each source has anything to say for that user and request."""

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


# The cold-start settings ranking reads per request row (`cold_start_row`), so that experiment
# variants change values, not compiled programs.
COLD_START_SETTINGS: tuple[str, ...] = (
    "min_events",
    "blend_events",
    "exploration_floor",
    "exploration_start",
    "exploration_decay",
    "genre_strength",
)
(
    MIN_EVENTS,
    BLEND_EVENTS,
    EXPLORATION_FLOOR,
    EXPLORATION_START,
    EXPLORATION_DECAY,
    GENRE_STRENGTH,
) = range(len(COLD_START_SETTINGS))


def cold_start_row(cfg: SonaConfig) -> np.ndarray:
    """(len(COLD_START_SETTINGS),) float32 host row of ``cfg``'s cold-start settings in
    COLD_START_SETTINGS order: what a request row carries (`RequestBatch.cold_start`)."""
    return np.array([getattr(cfg.cold_start, name) for name in COLD_START_SETTINGS], np.float32)


def cold_start_rows(cfg: SonaConfig, n: int) -> jnp.ndarray:
    """(n, len(COLD_START_SETTINGS)) ``cfg``'s row for n requests the engine makes itself
    (retrieval's and the context table's)."""
    return jnp.broadcast_to(cold_start_row(cfg), (n, len(COLD_START_SETTINGS)))


FUSION_ROWS = 3  # a fusion matrix's rows: weights, history gate, context gate
EXPONENT_LIMIT = 30.0  # |gate exponent| kept where exp() stays finite in float32


def fusion_weights(cfg: SonaConfig) -> jnp.ndarray:
    """(N_SOURCES,) configured weights in SOURCE_NAMES order."""
    return jnp.array([getattr(cfg.fusion, name) for name in SOURCE_NAMES], jnp.float32)


def fusion_matrix(cfg: SonaConfig) -> jnp.ndarray:
    """(3, N_SOURCES) the configured fusion matrix: weights, gate_history, gate_context, each in
    SOURCE_NAMES order (see `FusionConfig`)."""
    f = cfg.fusion
    gates = jnp.array([f.gate_history, f.gate_context], jnp.float32)
    return jnp.concatenate([fusion_weights(cfg)[None, :], gates], axis=0)


def as_fusion(weights) -> jnp.ndarray:
    """(3, N_SOURCES) fusion matrix from plain weights (N_SOURCES,) (gates zero: fixed); a
    matrix (3, N_SOURCES), or one per viewer (users, 3, N_SOURCES), as it is."""
    weights = jnp.asarray(weights, jnp.float32)
    if weights.ndim == 1:
        return jnp.concatenate([weights[None, :], jnp.zeros((FUSION_ROWS - 1, N_SOURCES))], axis=0)
    return weights


def history_feature(qualifying: jnp.ndarray, cold_start: jnp.ndarray) -> jnp.ndarray:
    """(users,) log(1 + qualifying events) / log(1 + blend_events): 0 for a new viewer, 1 where
    cold start's blend ends. ``cold_start``: settings (users, COLD_START_SETTINGS) per request,
    or one row for all."""
    blend_events = cold_start[..., BLEND_EVENTS]
    return jnp.log1p(qualifying.astype(jnp.float32)) / jnp.log1p(blend_events)


def viewer_weights(
    fusion: jnp.ndarray, qualifying: jnp.ndarray, contextual: jnp.ndarray, cold_start: jnp.ndarray
) -> jnp.ndarray:
    """(users, N_SOURCES) each viewer's source weights: the fusion matrix's weights scaled by
    exp(gate_history · h + gate_context · c) (`history_feature`, c: (users,) the request has a
    context). ``fusion``: one (3, N_SOURCES) matrix for all, or one per viewer (users, 3,
    N_SOURCES) (experiment variants: values, so ten variants compile nothing new)."""
    fusion = as_fusion(fusion)
    rows = fusion if fusion.ndim == 3 else fusion[None]
    exponent = (
        rows[:, 1] * history_feature(qualifying, cold_start)[:, None]
        + rows[:, 2] * contextual.astype(jnp.float32)[:, None]
    )
    return rows[:, 0] * jnp.exp(jnp.clip(exponent, -EXPONENT_LIMIT, EXPONENT_LIMIT))


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


def blend_weight(qualifying: jnp.ndarray, cold_start: jnp.ndarray) -> jnp.ndarray:
    """SPEC 3.5 β (users,): 0 below min_events qualifying events, then min(1, n / blend_events)
    (20 by default); ``cold_start`` as in `history_feature`."""
    c = cold_start
    return jnp.where(
        qualifying < c[..., MIN_EVENTS], 0.0, jnp.minimum(1.0, qualifying / c[..., BLEND_EVENTS])
    )


def exploration_share(qualifying: jnp.ndarray, cold_start: jnp.ndarray) -> jnp.ndarray:
    """ε (users,) = max(floor, start·decay^n) (0.05, 0.2, 0.995 by default) while the user is
    still being blended in (β < 1), else 0; ``cold_start`` as in `history_feature`."""
    c = cold_start
    epsilon = jnp.maximum(
        c[..., EXPLORATION_FLOOR],
        c[..., EXPLORATION_START] * c[..., EXPLORATION_DECAY] ** qualifying,
    )
    return jnp.where(blend_weight(qualifying, cold_start) < 1.0, epsilon, 0.0)


class Blend(NamedTuple):
    """How one request's scores become relevance: sources (users, N_SOURCES, 1) and cold (users, 1)
    normalisers (`MinMax`), source shares (users, N_SOURCES), β (users,) and the context weight that
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
    cold_start: jnp.ndarray,
) -> Blend:
    """Normalise over the request's candidates; weights ((3, N_SOURCES) fusion matrix or (N_SOURCES,))
    renormalised over active sources; ``cold_start`` settings as in `history_feature`."""
    return blend_with(
        fit_min_max(scores.raw, mask[:, None, :]),
        fit_min_max(scores.cold, mask),
        scores.active,
        weights,
        qualifying,
        cold_start,
    )


def blend_with(
    sources: MinMax,
    cold: MinMax,
    active: jnp.ndarray,
    weights: jnp.ndarray,
    qualifying: jnp.ndarray,
    cold_start: jnp.ndarray,
) -> Blend:
    """The `Blend` of normalisers already fitted (sources (users, N_SOURCES, 1), cold (users, 1)) for
    sources ``active`` (users, N_SOURCES): each viewer's weights (`viewer_weights` of the fusion
    matrix ``weights`` (3, N_SOURCES), or plain weights (N_SOURCES,)) renormalised over the active ones, β,
    and the context weight; ``cold_start`` settings as in `history_feature`."""
    per_viewer = viewer_weights(weights, qualifying, active[:, CONTEXT], cold_start)
    active_weights = per_viewer * active
    total = jnp.sum(active_weights, axis=1, keepdims=True)
    return Blend(
        sources,
        cold,
        active_weights / jnp.where(total > 0, total, 1.0),
        jnp.where(total[:, 0] > 0, blend_weight(qualifying, cold_start), 0.0),
        per_viewer[:, CONTEXT] * active[:, CONTEXT],
    )


def blended(
    blend: Blend, raw: jnp.ndarray, cold: jnp.ndarray, mask: jnp.ndarray
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Relevance (users, n) in [0, 1] and contributions (users, n, N_SOURCES + 1) of items whose raw
    scores are raw (users, N_SOURCES, n) and cold (users, n); mask (users, n) marks candidates."""
    normalised = blend.sources(raw, mask[:, None, :])
    cold_mix = (blend.cold(cold, mask) + blend.context_weight[:, None] * normalised[:, CONTEXT]) / (
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
