"""SPEC 3.3: the scoring sources (its four, the sequential one and the transformer), each
(state, users, request) -> (users, items) scores.

Every function is pure and batched over users; `recommend.py` composes them. Item index -1 marks
padding in every per-user table and is dropped by the scatters (``mode="drop"``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sona_jax.config import SonaConfig
from sona_jax.model.lora import catalogue_logits, fold_queries
from sona_jax.model.sequence_model import (
    known_items,
    network_items,
    network_shape,
    next_item_logits,
    recent_windows,
)
from sona_jax.serve.fusion import GENRE_STRENGTH, cold_start_rows
from sona_jax.serve.state import RequestBatch, ServingState, UserBatch, has_context

GENRE_FIT_FLOOR = 1e-3  # keeps log(genre fit) finite for items outside every known genre


def scatter_rows(n_items: int, items: jnp.ndarray, values: jnp.ndarray) -> jnp.ndarray:
    """(users, items) sums of ``values`` at ``items`` per row; items (users, ...) with -1 dropped.

    One flat scatter into users·items slots rather than a vmapped scatter per row: XLA's CPU
    scatter is a serial loop either way, and the flat one runs it once (about 2x faster).
    """
    users = items.shape[0]
    flat_items = items.reshape(users, -1)
    flat_values = values.reshape(users, -1).astype(jnp.result_type(values.dtype, jnp.float32))
    inside = (flat_items >= 0) & (flat_items < n_items)
    slots = jnp.where(
        inside, flat_items + (jnp.arange(users) * n_items)[:, None], users * n_items
    )  # out of range -> dropped
    total = jnp.zeros(users * n_items, flat_values.dtype)
    return total.at[slots.ravel()].add(flat_values.ravel(), mode="drop").reshape(users, n_items)


def nearest_viewers(
    state: ServingState,
    users: UserBatch,
    cfg: SonaConfig,
    neighbours: jnp.ndarray | None = None,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """The top-K most similar pool viewers: rows (users, K) (-1 none) and their cosine
    similarity (users, K), most similar first, the viewer's own row excluded.

    The K are searched among every pool viewer, or among ``neighbours`` (users, N) pool rows
    found by an approximate search (`neighbours.ViewerIndex`, -1 none, or rows kept from an
    earlier search: `retrieval.Candidates.neighbours`), scored exactly."""
    if neighbours is None:
        rows = jnp.arange(state.pool_preferences.shape[0])[None, :]
        similarity = users.preference @ state.pool_preferences.T  # (users, P)
    else:
        rows = neighbours
        found = state.pool_preferences[jnp.maximum(neighbours, 0)].astype(jnp.float32)
        similarity = jnp.einsum("und,ud->un", found, users.preference)
        similarity = jnp.where(neighbours >= 0, similarity, -jnp.inf)
    similarity = jnp.where(rows == users.pool_index[:, None], -jnp.inf, similarity)
    k = min(cfg.collaborative.neighbours, similarity.shape[1])
    if neighbours is not None and neighbours.shape[1] == k:
        # Rows kept from an earlier search: already the top K, most similar first. (Sorting
        # them again changed nothing, and its sort is an op XLA cannot save to disk.)
        top_similarity, top_rows = similarity, rows
    else:
        top_similarity, top = jax.lax.top_k(similarity, k)
        top_rows = jnp.take_along_axis(jnp.broadcast_to(rows, similarity.shape), top, axis=1)
    found_any = jnp.isfinite(top_similarity)
    return jnp.where(found_any, top_rows, -1), jnp.where(found_any, top_similarity, 0.0)


def collaborative_scores(
    state: ServingState,
    users: UserBatch,
    cfg: SonaConfig,
    neighbours: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """User kNN (users, items): the `nearest_viewers`' engagement weighted by similarity
    (``neighbours`` as there)."""
    return collaborative_votes(state, *nearest_viewers(state, users, cfg, neighbours), cfg)


def collaborative_votes(
    state: ServingState, rows: jnp.ndarray, similarity: jnp.ndarray, cfg: SonaConfig
) -> jnp.ndarray:
    """(users, items) the engagement of pool viewers ``rows`` (users, K; -1 none) weighted by
    their ``similarity`` (users, K)."""
    similarity = jnp.maximum(similarity, 0.0)  # dissimilar viewers vote nothing
    width = cfg.collaborative.vote_items  # the pool's rows are most recent first
    safe = jnp.maximum(rows, 0)
    items = jnp.where(rows[:, :, None] >= 0, state.pool_items[:, :width][safe], -1)
    votes = similarity[:, :, None] * state.pool_weights[:, :width][safe]
    return scatter_rows(state.base.item_embeddings.shape[0], items, votes)


def content_scores(state: ServingState, users: UserBatch, cfg: SonaConfig) -> jnp.ndarray:
    """The LoRA-personalised score σ(q_uᵀ e_i + b) over the catalogue (SPEC 3.2)."""
    queries = fold_queries(state.base, users.preference, users.adapter, cfg.lora.scale)
    return jax.nn.sigmoid(catalogue_logits(state.base, queries))


def graph_scores(state: ServingState, users: UserBatch, cfg: SonaConfig) -> jnp.ndarray:
    """Co-engagement propagation from recent engaged items: hop h contributes decay^(h-1)."""
    n_items = state.graph_neighbours.shape[0]
    seeds = users.recent_items[:, : cfg.graph.recent_items]
    position_weight = cfg.graph.seed_position_decay ** jnp.arange(seeds.shape[1])
    seed_weights = (
        users.recent_weights[:, : cfg.graph.recent_items]
        if cfg.graph.seed_weighting == "engagement"
        else 1.0
    )
    mass = jnp.where(seeds >= 0, seed_weights, 0.0)
    mass = mass * position_weight[None, :]
    total = jnp.zeros((seeds.shape[0], n_items))
    dense = state.graph_dense.shape[0] == n_items  # the model kept it: graph.first_hop = dense
    for hop in range(cfg.graph.hops):
        if hop == 0 and dense:  # every edge of the seeds, negative ones included
            step = scatter_rows(n_items, seeds, mass) @ state.graph_dense
        else:
            step = spread_along(
                state.graph_neighbours, state.graph_weights, seeds, mass * cfg.graph.decay**hop
            )
        total = total + step
        if hop + 1 < cfg.graph.hops:
            mass, seeds = jax.lax.top_k(step, min(cfg.graph.frontier, n_items))
            mass = mass / (cfg.graph.decay**hop)  # the next hop applies decay^(hop+1) itself
            seeds = jnp.where(mass > 0, seeds, -1)
    return total


def spread_along(
    neighbours: jnp.ndarray, weights: jnp.ndarray, seeds: jnp.ndarray, mass: jnp.ndarray
) -> jnp.ndarray:
    """(users, items) each seed's ``mass`` (users, S) passed along its adjacency list
    (``neighbours`` / ``weights`` (items, M)); seeds -1 pass nothing."""
    safe = jnp.maximum(seeds, 0)
    return scatter_rows(
        neighbours.shape[0],
        jnp.where(seeds[:, :, None] >= 0, neighbours[safe], -1),
        mass[:, :, None] * weights[safe],
    )


def sequential_scores(state: ServingState, users: UserBatch, cfg: SonaConfig) -> jnp.ndarray:
    """What viewers engage with next (users, items): the next-watch successors of the viewer's
    ``sequential.recent_items`` latest engaged items, the latest weighing most
    (``position_decay`` per position back)."""
    seeds, mass = _sequence_seeds(users, cfg)
    return spread_along(state.sequence_neighbours, state.sequence_weights, seeds, mass)


def has_transformer(state: ServingState) -> bool:
    """Whether the model version has a transformer network (static under jit)."""
    return bool(state.transformer)


def transformer_reads(state: ServingState, users: UserBatch) -> jnp.ndarray:
    """(users,) whether the transformer has a window to read: the model has a network and the
    viewer has a recent item it was trained on."""
    if not has_transformer(state):
        return jnp.zeros(users.recent_items.shape[0], bool)
    return jnp.any(known_items(users.recent_items, network_items(state.transformer)), axis=1)


def transformer_scores(state: ServingState, users: UserBatch, cfg: SonaConfig) -> jnp.ndarray:
    """The transformer's next-item logits (users, items) from the viewer's latest
    ``transformer.max_len`` engaged items; items added after the model score each row's
    lowest logit (the network has no embedding for them); zeros when the model has no network."""
    n_users, n_items = users.recent_items.shape[0], state.item_valid.shape[0]
    if not has_transformer(state):
        return jnp.zeros((n_users, n_items))
    known = network_items(state.transformer)
    windows = recent_windows(users.recent_items, known, cfg.transformer.max_len)
    logits = next_item_logits(state.transformer, windows, network_shape(cfg))
    low = jnp.min(logits, axis=1, keepdims=True)
    return jnp.concatenate([logits, jnp.broadcast_to(low, (n_users, n_items - known))], axis=1)


def sequence_origin(
    state: ServingState, users: UserBatch, items: jnp.ndarray, cfg: SonaConfig
) -> jnp.ndarray:
    """(users, n) the viewer's recent item that passes the most `sequential_scores` mass to
    each of ``items`` (users, n), or -1 where none does: the item a sequential
    recommendation is watched next after."""
    seeds, mass = _sequence_seeds(users, cfg)
    safe = jnp.maximum(seeds, 0)
    # (users, n, seeds): the transition weight seed -> item, read off the seeds' adjacency lists
    hits = state.sequence_neighbours[safe][:, None, :, :] == items[:, :, None, None]
    passed = mass[:, None, :] * jnp.sum(
        jnp.where(hits, state.sequence_weights[safe][:, None, :, :], 0.0), axis=3
    )
    best = jnp.argmax(passed, axis=2)
    found = jnp.take_along_axis(passed, best[:, :, None], axis=2)[:, :, 0] > 0
    return jnp.where(found, jnp.take_along_axis(seeds, best, axis=1), -1)


def _sequence_seeds(users: UserBatch, cfg: SonaConfig) -> tuple[jnp.ndarray, jnp.ndarray]:
    """The viewer's latest engaged items (users, S), -1 padded, and the mass each passes on."""
    s = cfg.sequential
    seeds = users.recent_items[:, : s.recent_items]
    mass = jnp.where(seeds >= 0, s.position_decay ** jnp.arange(seeds.shape[1])[None, :], 0.0)
    return seeds, mass


def _log_lift(share: jnp.ndarray, global_share: jnp.ndarray) -> jnp.ndarray:
    return jnp.log(share) - jnp.log(global_share)


def _item_rows(table: jnp.ndarray, items: jnp.ndarray | None) -> jnp.ndarray:
    """Per-item ``table`` (items, ...) for the whole catalogue (None), broadcast to one row of
    users, or at ``items`` (users, n)."""
    return table[None] if items is None else table[jnp.maximum(items, 0)]


def context_combinations(state: ServingState, cfg: SonaConfig) -> RequestBatch:
    """Every (device, time of day, mood) combination, -1 (absent) included, in the order
    `context_row` numbers them (``cfg``'s cold-start settings)."""
    n_device, n_tod, n_mood = (
        state.by_device.shape[0] + 1,
        state.by_time_of_day.shape[0] + 1,
        state.mood_prior.shape[0] + 1,
    )
    index = jnp.arange(n_device * n_tod * n_mood)
    device, rest = jnp.divmod(index, n_tod * n_mood)
    tod, mood = jnp.divmod(rest, n_mood)
    rows = index.shape[0]
    return RequestBatch(
        (device - 1).astype(jnp.int32),
        (tod - 1).astype(jnp.int32),
        (mood - 1).astype(jnp.int32),
        jnp.ones(rows, bool),
        jnp.ones(rows),
        jnp.zeros(rows, jnp.int32),
        cold_start_rows(cfg, rows),
    )


def context_row(state: ServingState, request: RequestBatch) -> jnp.ndarray:
    """(requests,) the row of `context_candidates` for each request's context."""
    n_tod, n_mood = state.by_time_of_day.shape[0] + 1, state.mood_prior.shape[0] + 1
    return ((request.device + 1) * n_tod + request.time_of_day + 1) * n_mood + request.mood + 1


def global_context_scores(
    state: ServingState,
    request: RequestBatch,
    cfg: SonaConfig,
    items: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """The part of the context score that is the same for every viewer: time-of-day and
    device popularity lift (log share in context / global share), the mood -> genre prior and
    the item's own moods, device fit by duration (TV long, mobile short); over the catalogue
    (requests, items) or at ``items`` (requests, n). Absent parts count 0.

    Read from ``state.context_fit`` (every combination over the catalogue, made whenever its
    tables change) when the state has it: one gather instead of six.
    """
    if state.context_fit.shape[0]:
        row = context_row(state, request)
        if items is None:
            return state.context_fit[row]
        return state.context_fit[row[:, None], jnp.maximum(items, 0)]
    has_tod = request.time_of_day >= 0
    has_device = request.device >= 0
    has_mood = request.mood >= 0
    tod, device, mood = (
        jnp.maximum(x, 0) for x in (request.time_of_day, request.device, request.mood)
    )
    global_share = _item_rows(state.global_share, items)
    if items is None:
        tod_share, device_share = state.by_time_of_day[tod], state.by_device[device]
        item_moods = state.item_moods.T[mood]
    else:
        safe = jnp.maximum(items, 0)
        tod_share = state.by_time_of_day[tod[:, None], safe]
        device_share = state.by_device[device[:, None], safe]
        item_moods = state.item_moods[safe, mood[:, None]]
    genres = _item_rows(state.item_genres, items)
    genre_share = genres / jnp.maximum(genres.sum(-1, keepdims=True), 1.0)
    mood_genres = state.mood_prior[mood]  # (requests, G)
    if items is None:
        mood_fit = mood_genres @ genre_share[0].T + item_moods
    else:
        mood_fit = jnp.einsum("ung,ug->un", genre_share, mood_genres) + item_moods
    duration = _item_rows(state.duration, items)
    known = duration >= 0
    tv, mobile = 0, 1  # DEVICE_TYPES order
    long_fit = jnp.where(known, (duration >= cfg.context.tv_min_minutes) * 1.0, 0.5)
    short_fit = jnp.where(known, (duration <= cfg.context.mobile_max_minutes) * 1.0, 0.5)
    device_fit = jnp.where(
        (request.device == tv)[:, None],
        long_fit,
        jnp.where((request.device == mobile)[:, None], short_fit, 0.5),
    )
    return (
        jnp.where(has_tod[:, None], _log_lift(tod_share, global_share), 0.0)
        + jnp.where(has_device[:, None], _log_lift(device_share, global_share) + device_fit, 0.0)
        + jnp.where(has_mood[:, None], mood_fit, 0.0)
    )


def context_scores(
    state: ServingState,
    users: UserBatch,
    request: RequestBatch,
    cfg: SonaConfig,
    items: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """Fit of each item to the request context (users, items), or of ``items`` (users, n);
    zero rows where no context is given.

    `global_context_scores` plus how well the item's audience hours match the user's own
    hourly pattern.
    """
    if items is None:
        pattern = users.hourly @ state.hour_share.T
    else:
        pattern = jnp.einsum("unh,uh->un", state.hour_share[jnp.maximum(items, 0)], users.hourly)
    score = global_context_scores(state, request, cfg, items) + jnp.log(pattern * 24.0)
    return jnp.where(has_context(request)[:, None], score, 0.0)


def cold_start_scores(
    state: ServingState,
    users: UserBatch,
    request: RequestBatch,
    cfg: SonaConfig,
    items: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """SPEC 3.5: popularity within the user's declared or inferred genres (log scale + fit),
    over the catalogue (users, items) or at ``items`` (users, n)."""
    genres = _item_rows(state.item_genres, items)
    genre_share = genres / jnp.maximum(genres.sum(-1, keepdims=True), 1.0)
    n_genres = state.item_genres.shape[1]
    inferred = jnp.where((users.qualifying > 0)[:, None], users.genre_affinity, 1.0 / n_genres)
    declared = state.mood_prior[jnp.maximum(request.mood, 0)]
    declared = declared / jnp.maximum(declared.sum(1, keepdims=True), 1.0)
    prior = jnp.where((request.mood >= 0)[:, None], 0.5 * inferred + 0.5 * declared, inferred)
    if items is None:
        genre_fit = (genre_share[0] @ prior.T).T * n_genres  # 1 = as likely as uniform
    else:
        genre_fit = jnp.einsum("ung,ug->un", genre_share, prior) * n_genres
    strength = request.cold_start[:, GENRE_STRENGTH, None]  # (users, 1): a variant's
    return jnp.log(_item_rows(state.global_share, items)) + strength * jnp.log(
        genre_fit + GENRE_FIT_FLOOR
    )
