"""Plain per-user numpy references of the hybrid (SPEC 3.3-3.5): collaborative kNN, the graph
walk, min-max normalisation and MMR, one user at a time."""

from __future__ import annotations

import numpy as np


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


def sequential(seeds, neighbours, edge_weights, position_decay, n_items):
    """Each start item's successors, weighted position_decay^position, added one by one."""
    out = np.zeros(n_items)
    for position, seed in enumerate(seeds):
        if seed < 0:
            continue
        for successor, weight in zip(neighbours[seed], edge_weights[seed], strict=True):
            out[successor] += position_decay**position * weight
    return out


def transformer(recent_items, known, n_items, network, max_len):
    """The network's next-item logits from a window built item by item: the latest
    ``max_len`` recent items the network knows (newest first, -1 padded; items >= ``known``
    skipped), reversed, +1, left-padded with 0 to ``max_len``; items past ``known`` get the
    row's minimum."""
    kept = [int(item) for item in recent_items if 0 <= item < known][:max_len]
    window = [0] * (max_len - len(kept)) + [item + 1 for item in reversed(kept)]
    logits = network(np.array(window, np.int32))
    out = np.full(n_items, logits.min())
    out[:known] = logits
    return out


def sequence_origin(seeds, neighbours, edge_weights, position_decay, item):
    """The seed passing the most mass to ``item`` (first on ties), or -1 when none does."""
    best, best_mass = -1, 0.0
    for position, seed in enumerate(seeds):
        if seed < 0:
            continue
        passed = sum(
            position_decay**position * weight
            for successor, weight in zip(neighbours[seed], edge_weights[seed], strict=True)
            if successor == item
        )
        if passed > best_mass:
            best, best_mass = seed, passed
    return best


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


def passes_filter(item, f, genres, release_year, duration):
    """Whether catalogue row ``item`` passes one request's `RequestFilter` ``f``."""
    if item in f.excluded:
        return False
    has = {g for g in range(genres.shape[1]) if genres[item, g] > 0}
    if f.genres_any and not has & set(f.genres_any):
        return False
    if has & set(f.genres_none):
        return False
    for value, low, high in (
        (release_year[item], f.year_min, f.year_max),
        (duration[item], f.duration_min, f.duration_max),
    ):
        if low is not None and not (value >= 0 and value >= np.float32(low)):
            return False
        if high is not None and not (value >= 0 and value <= np.float32(high)):
            return False
    return True


def dismissal_penalty(vectors, item, dismissed, cfg):
    """Relevance an item loses for its closest dismissed item (cosine in MMR's space)."""
    close = [float(vectors[item] @ vectors[d]) for d in dismissed if d >= 0]
    if not close or cfg.dismissal_penalty == 0:
        return 0.0
    share = (max(close) - cfg.dismissal_min_similarity) / (1.0 - cfg.dismissal_min_similarity)
    return cfg.dismissal_penalty * min(max(share, 0.0), 1.0)
