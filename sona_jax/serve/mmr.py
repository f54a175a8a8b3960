"""SPEC 3.4: maximal marginal relevance, batched over users.

Greedily pick ``argmax λ·relevance − (1−λ)·max cosine to what is already picked`` from a pool
sorted by relevance; ties go to the earlier (more relevant) pool position. λ = 1 is the plain
ranking; λ = 0 spreads as far as the pool allows. O(m·n·d) per user for m picks from a pool of n.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp


def unit_rows(x: jnp.ndarray) -> jnp.ndarray:
    norm = jnp.linalg.norm(x, axis=-1, keepdims=True)
    return x / jnp.where(norm > 0, norm, 1.0)


def mmr_select_one(
    relevance: jnp.ndarray,
    vectors: jnp.ndarray,
    valid: jnp.ndarray,
    mmr_lambda: jnp.ndarray,
    n_select: int,
    n_active: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """(n_select,) pool positions for one user; relevance (n,), vectors (n, d), valid (n,).

    Positions past the number of valid items, or past ``n_active`` (a traced count, so one
    program serves every list length up to ``n_select``), hold -1.
    """
    unit = unit_rows(vectors)

    def pick(step, carry):
        chosen, max_similarity, taken = carry
        penalty = jnp.where(step > 0, max_similarity, 0.0)
        value = mmr_lambda * relevance - (1.0 - mmr_lambda) * penalty
        value = jnp.where(taken | ~valid, -jnp.inf, value)
        best = jnp.argmax(value)
        ok = jnp.isfinite(value[best])
        chosen = chosen.at[step].set(jnp.where(ok, best, -1))
        # Only the picked item's row of the pool's similarity matrix is ever read: n·k per
        # step instead of n²·k up front (a list is far shorter than its pool).
        max_similarity = jnp.where(
            ok, jnp.maximum(max_similarity, unit @ unit[best]), max_similarity
        )
        taken = taken.at[best].set(taken[best] | ok)
        return chosen, max_similarity, taken

    n = relevance.shape[0]
    init = (jnp.full(n_select, -1, jnp.int32), jnp.full(n, -jnp.inf), jnp.zeros(n, bool))
    steps = n_select if n_active is None else jnp.minimum(n_active, n_select)
    chosen, _, _ = jax.lax.fori_loop(0, steps, pick, init)
    return chosen


@partial(jax.jit, static_argnames=("n_select",))
def mmr_select(
    relevance: jnp.ndarray,
    vectors: jnp.ndarray,
    valid: jnp.ndarray,
    mmr_lambda: jnp.ndarray,
    n_select: int,
    n_active: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """(users, n_select) pool positions; relevance (users, n), vectors (users, n, d),
    valid (users, n) bool, mmr_lambda (users,); ``n_active`` (users,): picks per user (the
    batch runs as many steps as its longest list; default all ``n_select``)."""
    if n_active is None:
        return jax.vmap(mmr_select_one, in_axes=(0, 0, 0, 0, None))(
            relevance, vectors, valid, mmr_lambda, n_select
        )
    return jax.vmap(mmr_select_one, in_axes=(0, 0, 0, 0, None, 0))(
        relevance, vectors, valid, mmr_lambda, n_select, n_active
    )
