"""Plain per-user numpy references of SPEC 3.2 (the unfolded logit and the BCE loss)."""

from __future__ import annotations

import numpy as np


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
