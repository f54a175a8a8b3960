"""Plain per-user numpy references the batched, jitted engine functions are checked against."""

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


def logit(p, W, B, A, e, b, scale) -> float:
    """Unfolded SPEC 3.2 logit for one (user, item)."""
    return float(p @ (W + scale * B @ A) @ e + b)


def bce_loss(B, p, W, A, E, b, items, targets, mask, scale) -> float:
    """Masked mean BCE over one user's rows, with full embeddings (no folding, no H)."""
    total, count = 0.0, 0.0
    for item, y, m in zip(items, targets, mask, strict=True):
        if m == 0:
            continue
        z = logit(p, W, B, A, E[item], b, scale)
        total += max(z, 0) - z * y + np.log1p(np.exp(-abs(z)))
        count += 1
    return total / max(count, 1.0)


# ---- hybrid sources (SPEC 3.3-3.5), one user at a time -------------------------------------


def collaborative(pref, pool_prefs, pool_items, pool_weights, self_row, k, n_items):
    sims = pool_prefs @ pref
    candidates = [(s, row) for row, s in enumerate(sims) if row != self_row]
    candidates.sort(key=lambda pair: -pair[0])
    out = np.zeros(n_items)
    for s, row in candidates[:k]:
        for item, w in zip(pool_items[row], pool_weights[row], strict=True):
            if item >= 0:
                out[item] += max(s, 0.0) * w
    return out


def graph(seeds, seed_weights, neighbours, edge_weights, hops, decay, frontier, position_decay):
    n_items = neighbours.shape[0]
    mass = {}
    for position, (s, w) in enumerate(zip(seeds, seed_weights, strict=True)):
        if s >= 0:
            mass[s] = mass.get(s, 0.0) + w * position_decay**position
    total = np.zeros(n_items)
    current = [(s, m) for s, m in mass.items()]
    for hop in range(hops):
        step = np.zeros(n_items)
        for s, m in current:
            for j, ew in zip(neighbours[s], edge_weights[s], strict=True):
                step[j] += m * ew * decay**hop
        total += step
        order = np.argsort(-step, kind="stable")[:frontier]
        current = [(j, step[j] / decay**hop) for j in order if step[j] > 0]
    return total


def minmax(values, mask):
    if not mask.any():
        return np.zeros_like(values)
    low, high = values[mask].min(), values[mask].max()
    if high <= low:
        return np.zeros_like(values)
    return np.where(mask, (values - low) / (high - low), 0.0)


def mmr(relevance, vectors, valid, lam, n_select):
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-30)
    chosen = []
    for _ in range(n_select):
        best, best_value = -1, -np.inf
        for i in range(len(relevance)):
            if i in chosen or not valid[i]:
                continue
            penalty = max((unit[i] @ unit[j] for j in chosen), default=0.0)
            value = lam * relevance[i] - (1 - lam) * penalty
            if value > best_value + 1e-9:  # strict: ties keep the earlier position
                best, best_value = i, value
        chosen.append(best)
        if best < 0:
            break
    return chosen + [-1] * (n_select - len(chosen))
