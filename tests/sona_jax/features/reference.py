"""Plain per-user numpy references of SPEC 3.1 (preference vectors, genre affinities, temporal
patterns), one event at a time: what the batched, jitted functions are checked against."""

from __future__ import annotations

import numpy as np

from sona_jax.config import PreferenceConfig


def engagement_weight(completion: float, rating: float, cfg: PreferenceConfig) -> float:
    weight = completion
    if rating > 0 and rating >= cfg.high_rating_min:
        weight *= cfg.high_rating_boost
    if rating > 0 and rating <= cfg.low_rating_max:
        weight *= cfg.low_rating_factor
    if np.float32(completion) >= np.float32(cfg.full_completion_min):  # as the engine compares
        weight *= cfg.full_completion_boost
    return min(max(weight, 0.0), cfg.max_weight)


def decayed_weight(e: dict, cfg: PreferenceConfig) -> float | None:
    """decay x engagement of one event, None when it does not qualify."""
    if e["dismissed"]:
        return None
    if (
        np.float32(e["completion"]) < np.float32(cfg.completion_threshold)
        and e["rating"] < cfg.rated_override_min
    ):
        return None
    decay = cfg.decay_base ** (e["age_days"] / cfg.decay_period_days)
    return decay * engagement_weight(e["completion"], e["rating"], cfg)


def preference_vector(
    events: list[dict], embeddings: np.ndarray, cfg: PreferenceConfig
) -> np.ndarray:
    """One user's SPEC 3.1 vector, event by event."""
    total, weighted = 0.0, np.zeros(embeddings.shape[1])
    for e in events:
        w = decayed_weight(e, cfg)
        if w is None:
            continue
        total += w
        weighted += w * embeddings[e["item"]]
    if total <= 0:
        return np.zeros(embeddings.shape[1])
    mean = weighted / total
    norm = np.linalg.norm(mean)
    return mean / norm if norm > 0 else np.zeros_like(mean)


def genre_affinity(events: list[dict], genres: np.ndarray, cfg: PreferenceConfig) -> np.ndarray:
    mass = np.zeros(genres.shape[1])
    for e in events:
        w = decayed_weight(e, cfg)
        row = genres[e["item"]]
        if w is not None and row.sum() > 0:
            mass += w * row / row.sum()
    smoothed = mass + cfg.genre_smoothing
    return smoothed / smoothed.sum()


def temporal_pattern(events: list[dict], cfg: PreferenceConfig):
    hourly, weekday, recent = np.zeros(24), np.zeros(7), 0
    for e in events:
        if e["dismissed"]:
            continue
        hourly[e["hour"]] += 1
        weekday[e["weekday"]] += 1
        recent += e["age_days"] < cfg.recency_window_days
    n = hourly.sum()
    if n == 0:
        return np.full(24, 1 / 24), np.full(7, 1 / 7), 0.0
    return hourly / n, weekday / n, recent / n
