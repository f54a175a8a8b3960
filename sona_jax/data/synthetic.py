"""Seeded synthetic streaming data: the demo data and the data with planted context effects.

A catalogue of movies, series episodes and shorts with genres, durations, moods and series; viewers
with latent tastes and device / time-of-day habits; events with completion, ratings, dismissals and
timestamps. Two effects are planted so that context-aware scoring can be shown to work:

* device: on a TV viewers pick long items, on a phone short ones;
* time of day: family genres in the morning, thrillers and horror at night, drama in the evening.

Everything is vectorised numpy (flat per-event arrays, chunked), so 100 k viewers x 50 k items
takes well under a few minutes.

Example:
    >>> data = generate_synthetic(n_users=200, n_items=500, seed=0)
    >>> data.n_users, data.n_items
    (200, 500)
"""

from __future__ import annotations

import uuid

import numpy as np

from sona_jax.data.schema import (
    DEVICE_TYPES,
    MOODS,
    SECONDS_PER_DAY,
    TIMES_OF_DAY,
    Catalogue,
    Dataset,
    EventLog,
)

GENRES: tuple[str, ...] = (
    "Action",
    "Adventure",
    "Animation",
    "Children",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
    "Reality",
)
# Genres favoured in each TIMES_OF_DAY slot: the planted time-of-day effect.
DAYPART_GENRES: dict[str, tuple[str, ...]] = {
    "morning": ("Children", "Animation", "Documentary"),
    "afternoon": ("Comedy", "Adventure", "Reality"),
    "evening": ("Drama", "Romance", "Crime"),
    "night": ("Horror", "Thriller", "Mystery"),
}
MOOD_GENRES: dict[str, tuple[str, ...]] = {
    "uplifting": ("Children", "Animation", "Musical", "Adventure"),
    "dark": ("Horror", "Crime", "War"),
    "relaxing": ("Documentary", "Reality", "Comedy"),
    "tense": ("Thriller", "Mystery", "Action"),
    "funny": ("Comedy", "Animation"),
    "romantic": ("Romance", "Drama", "Musical"),
}
REFERENCE_NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z: generated timestamps end here
_LATENT = 16


def _uuids(rng: np.random.Generator, n: int) -> np.ndarray:
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    return np.array([str(uuid.UUID(bytes=row.tobytes(), version=4)) for row in raw])


def _genre_matrix(names_by_key: dict[str, tuple[str, ...]], keys) -> np.ndarray:
    index = {g: j for j, g in enumerate(GENRES)}
    out = np.zeros((len(keys), len(GENRES)), np.float32)
    for row, key in enumerate(keys):
        out[row, [index[g] for g in names_by_key[key]]] = 1.0
    return out


def _catalogue(rng: np.random.Generator, n_items: int):
    n_genres = len(GENRES)
    centroids = rng.standard_normal((n_genres, _LATENT)).astype(np.float32)
    kind = rng.choice(3, size=n_items, p=[0.6, 0.3, 0.1])  # movie, episode, short
    duration = np.select(
        [kind == 0, kind == 1],
        [rng.uniform(80, 160, n_items), rng.uniform(20, 55, n_items)],
        rng.uniform(4, 15, n_items),
    ).astype(np.float32)
    n_genre = rng.integers(1, 4, n_items)
    genre_scores = rng.gumbel(size=(n_items, n_genres)) - np.log(np.arange(1, n_genres + 1)) * 0.3
    ranks = np.argsort(np.argsort(-genre_scores, axis=1), axis=1)
    genres = (ranks < n_genre[:, None]).astype(np.float32)

    # Episodes come in series that share genres: copy the first episode's genres.
    series = np.full(n_items, -1, np.int32)
    episodes = np.flatnonzero(kind == 1)
    if len(episodes):
        series_of = rng.integers(0, max(1, len(episodes) // 8), len(episodes)).astype(np.int32)
        series[episodes] = series_of
        first = np.full(series_of.max() + 1, -1)
        for position in range(len(episodes) - 1, -1, -1):
            first[series_of[position]] = episodes[position]
        genres[episodes] = genres[first[series_of]]

    latent = genres @ centroids / np.maximum(genres.sum(1, keepdims=True), 1.0)
    latent += 0.5 * rng.standard_normal((n_items, _LATENT)).astype(np.float32)
    mood_affinity = genres @ _genre_matrix(MOOD_GENRES, MOODS).T
    moods = (mood_affinity + 0.3 * rng.standard_normal(mood_affinity.shape) > 0.7).astype(
        np.float32
    )
    popularity = rng.standard_normal(n_items).astype(np.float32) * 1.0
    years = rng.integers(1960, 2026, n_items).astype(np.float32)
    kind_name = np.array(["Movie", "Episode", "Short"])[kind]
    titles = np.array(
        [f"{kind_name[i]} {i}: {GENRES[int(np.argmax(genres[i]))]}" for i in range(n_items)],
        dtype=object,
    )
    catalogue = Catalogue(
        item_ids=_uuids(rng, n_items),
        titles=titles,
        genre_names=GENRES,
        genres=genres,
        duration_minutes=duration,
        release_year=years,
        mood_names=MOODS,
        moods=moods,
        series=series,
    )
    return catalogue, centroids, latent, popularity


def _event_context_fit(
    genres: np.ndarray,
    duration: np.ndarray,
    device: np.ndarray,
    daypart: np.ndarray,
    strength: float,
) -> np.ndarray:
    """The planted context effect for (events, pool) items; device/daypart are (events, 1)."""
    long_item = duration >= 60
    short_item = duration <= 30
    device_fit = np.where(
        device == DEVICE_TYPES.index("tv"),
        np.where(long_item, 1.0, -0.5),
        np.where(device == DEVICE_TYPES.index("mobile"), np.where(short_item, 1.0, -0.5), 0.0),
    )
    daypart_genres = _genre_matrix(DAYPART_GENRES, TIMES_OF_DAY)  # (4, G)
    daypart_fit = np.einsum("epg,eg->ep", genres, daypart_genres[daypart[:, 0]])
    return strength * (device_fit + np.minimum(daypart_fit, 1.0))


def generate_synthetic(
    n_users: int = 2_000,
    n_items: int = 3_000,
    events_per_user: float = 40.0,
    seed: int = 0,
    context_strength: float = 1.5,
    pool: int = 32,
    chunk_events: int = 400_000,
) -> Dataset:
    """Generate a seeded synthetic dataset (same seed -> identical data).

    Args:
        n_users, n_items: sizes.
        events_per_user: mean events per viewer (at least 3 each).
        context_strength: logit strength of the planted device and time-of-day effects.
        pool: popularity-sampled items each event chooses from.
    """
    if n_users < 1 or n_items < 2:
        raise ValueError("need at least 1 user and 2 items")
    rng = np.random.default_rng(seed)
    catalogue, centroids, item_latent, popularity = _catalogue(rng, n_items)

    user_genres = (rng.random((n_users, len(GENRES))) < 2.0 / len(GENRES)).astype(np.float32)
    taste = user_genres @ centroids / np.maximum(user_genres.sum(1, keepdims=True), 1.0)
    taste = taste + 0.5 * rng.standard_normal((n_users, _LATENT)).astype(np.float32)
    device_habit = rng.dirichlet(np.full(len(DEVICE_TYPES), 0.3), n_users)
    daypart_habit = rng.dirichlet(np.full(len(TIMES_OF_DAY), 0.5), n_users)

    counts = np.maximum(3, rng.poisson(events_per_user, n_users)).astype(np.int64)
    counts = np.minimum(counts, 20 * int(events_per_user) + 3)
    user = np.repeat(np.arange(n_users, dtype=np.int32), counts)
    n_events = len(user)
    device = (device_habit.cumsum(1)[user] < rng.random((n_events, 1))).sum(1)
    device = np.minimum(device, len(DEVICE_TYPES) - 1).astype(np.int8)
    daypart = (daypart_habit.cumsum(1)[user] < rng.random((n_events, 1))).sum(1)
    daypart = np.minimum(daypart, len(TIMES_OF_DAY) - 1).astype(np.int8)

    item_prob = np.exp(popularity - popularity.max())
    item_cdf = np.cumsum(item_prob / item_prob.sum())
    item = np.empty(n_events, np.int32)
    affinity = np.empty(n_events, np.float32)
    for start in range(0, n_events, chunk_events):
        stop = min(start + chunk_events, n_events)
        size = stop - start
        candidates = np.minimum(np.searchsorted(item_cdf, rng.random((size, pool))), n_items - 1)
        taste_fit = np.einsum("ek,epk->ep", taste[user[start:stop]], item_latent[candidates])
        taste_fit /= np.sqrt(_LATENT)
        context_fit = _event_context_fit(
            catalogue.genres[candidates],
            catalogue.duration_minutes[candidates],
            device[start:stop, None],
            daypart[start:stop, None],
            context_strength,
        )
        utility = 2.0 * taste_fit + context_fit + rng.gumbel(size=(size, pool))
        chosen = np.argmax(utility, axis=1)
        item[start:stop] = candidates[np.arange(size), chosen]
        affinity[start:stop] = taste_fit[np.arange(size), chosen]

    completion = 1.0 / (1.0 + np.exp(-(2.0 * affinity + 0.8 + rng.normal(0, 0.8, n_events))))
    dismissed = rng.random(n_events) < 0.04 * (affinity < 0)
    completion = np.where(dismissed, 0.0, completion).astype(np.float32)
    rated = (rng.random(n_events) < 0.3) & ~dismissed
    stars = np.clip(np.rint(3.0 + 1.5 * affinity + rng.normal(0, 0.7, n_events)), 1, 5)
    rating = np.where(rated, stars, 0.0).astype(np.float32)

    age_days = np.floor(rng.exponential(45.0, n_events).clip(0, 365))
    hour_lo = np.array([5, 12, 17, 22])[daypart]
    hour_span = np.array([7, 5, 5, 7])[daypart]
    hour = (hour_lo + np.floor(rng.random(n_events) * hour_span)) % 24
    timestamp = (
        REFERENCE_NOW
        - (age_days + 1) * SECONDS_PER_DAY
        + hour * 3600.0
        + rng.integers(0, 3600, n_events)
    )
    order = np.lexsort((timestamp, user))
    # A repeated (user, item) is a rewatch.
    pair = user[order].astype(np.int64) * n_items + item[order]
    rewatch = np.zeros(n_events, bool)
    _, first_seen = np.unique(pair, return_index=True)
    rewatch_sorted = np.ones(n_events, bool)
    rewatch_sorted[first_seen] = False
    rewatch[order] = rewatch_sorted

    events = EventLog.build(
        user=user,
        item=item,
        timestamp=timestamp,
        completion=completion,
        rating=rating,
        dismissed=dismissed,
        rewatch=rewatch,
        device=device,
        time_of_day=daypart,
    ).take(order)
    return Dataset(
        name="synthetic",
        catalogue=catalogue,
        user_ids=_uuids(rng, n_users),
        events=events,
        extras={"taste": taste, "item_latent": item_latent, "reference_now": REFERENCE_NOW},
    )
