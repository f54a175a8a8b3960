"""Batched, jitted SPEC 3.1 functions against the per-user numpy reference."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sona_jax.config import PreferenceConfig
from sona_jax.features import preference, profile
from sona_jax.features.events import Events
from tests.sona_jax.features import reference

N_ITEMS, DIM, N_GENRES = 12, 6, 4

event_strategy = st.fixed_dictionaries(
    {
        "item": st.integers(0, N_ITEMS - 1),
        # float32 values well above the underflow range, as the engine holds them: a float64
        # completion of 1e-300 is zero in float32, and the engine then rightly drops the event
        "age_days": st.floats(0, 400, allow_nan=False, width=32, allow_subnormal=False),
        "completion": st.one_of(st.just(0.0), st.floats(0.0009765625, 1, width=32)),
        "rating": st.sampled_from([0, 1, 2, 3, 4, 5]),
        "dismissed": st.booleans(),
        "hour": st.integers(0, 23),
        "weekday": st.integers(0, 6),
    }
)
histories = st.lists(st.lists(event_strategy, max_size=12), min_size=1, max_size=5)


def _flatten(users: list[list[dict]], pad: int = 3) -> Events:
    rows = [(u, e) for u, events in enumerate(users) for e in events]
    n_users = len(users)

    def column(name, dtype, fill=0):
        values = [e[name] for _, e in rows] + [fill] * pad
        return jnp.asarray(np.array(values, dtype=dtype))

    user = jnp.asarray(np.array([u for u, _ in rows] + [n_users] * pad, np.int32))
    return Events(
        user=user,
        item=column("item", np.int32),
        age_days=column("age_days", np.float32),
        completion=column("completion", np.float32),
        rating=column("rating", np.float32),
        dismissed=column("dismissed", bool),
        hour=column("hour", np.int32),
        weekday=column("weekday", np.int32),
        device=jnp.full(user.shape, -1),
        time_of_day=jnp.zeros(user.shape, jnp.int32),
    )


def _embeddings(seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N_ITEMS, DIM)).astype(np.float32)


@settings(max_examples=60, deadline=None)
@given(histories)
def test_preference_vectors_match_reference(users):
    cfg = PreferenceConfig()
    embeddings = _embeddings()
    got = np.asarray(
        preference.build_preference_vectors(
            _flatten(users), jnp.asarray(embeddings), len(users), cfg
        )
    )
    assert np.all(np.isfinite(got))
    for u, events in enumerate(users):
        want = reference.preference_vector(events, embeddings, cfg)
        np.testing.assert_allclose(got[u], want, atol=2e-4)


@settings(max_examples=40, deadline=None)
@given(histories)
def test_genre_affinities_and_patterns_match_reference(users):
    cfg = PreferenceConfig()
    genres = (np.random.default_rng(1).random((N_ITEMS, N_GENRES)) < 0.4).astype(np.float32)
    events = _flatten(users)
    aff = np.asarray(preference.genre_affinities(events, jnp.asarray(genres), len(users), cfg))
    pattern = preference.temporal_patterns(events, len(users), cfg)
    for u, history in enumerate(users):
        np.testing.assert_allclose(
            aff[u], reference.genre_affinity(history, genres, cfg), atol=1e-5
        )
        hourly, weekday, recency = reference.temporal_pattern(history, cfg)
        np.testing.assert_allclose(np.asarray(pattern.hourly[u]), hourly, atol=1e-6)
        np.testing.assert_allclose(np.asarray(pattern.weekday[u]), weekday, atol=1e-6)
        np.testing.assert_allclose(float(pattern.recency[u]), recency, atol=1e-6)
    np.testing.assert_allclose(aff.sum(1), 1.0, atol=1e-5)


def test_below_threshold_user_gets_zero_vector_not_nan():
    cfg = PreferenceConfig()
    users = [
        [
            {
                "item": 1,
                "age_days": 3.0,
                "completion": 0.1,
                "rating": 0,
                "dismissed": False,
                "hour": 1,
                "weekday": 1,
            }
        ],
        [
            {
                "item": 2,
                "age_days": 0.0,
                "completion": 1.0,
                "rating": 5,
                "dismissed": True,
                "hour": 1,
                "weekday": 1,
            }
        ],
        [],
    ]
    got = np.asarray(
        preference.build_preference_vectors(_flatten(users), jnp.asarray(_embeddings()), 3, cfg)
    )
    assert np.all(got == 0.0)


def test_decay_and_weights_follow_spec():
    cfg = PreferenceConfig()
    np.testing.assert_allclose(float(preference.temporal_decay(jnp.array(30.0), cfg)), 0.95)
    np.testing.assert_allclose(
        float(preference.temporal_decay(jnp.array(45.0), cfg)), 0.95**1.5, rtol=1e-6
    )
    weight = preference.engagement_weight(
        jnp.array([1.0, 0.5, 0.5, 0.96]), jnp.array([5.0, 2.0, 0.0, 0.0]), cfg
    )
    np.testing.assert_allclose(np.asarray(weight), [1.8, 0.25, 0.5, 0.96 * 1.2], rtol=1e-6)
    # A short watch counts when rated >= 4; a dismissal never does.
    keep = preference.qualifies(
        jnp.array([0.1, 0.1, 0.9]), jnp.array([4.0, 3.0, 5.0]), jnp.array([False, False, True]), cfg
    )
    assert list(np.asarray(keep)) == [True, False, False]


def test_a_recent_event_pulls_harder_than_an_old_one():
    cfg = PreferenceConfig()
    embeddings = np.eye(N_ITEMS, DIM, dtype=np.float32)
    base = {"completion": 1.0, "rating": 0, "dismissed": False, "hour": 0, "weekday": 0}
    users = [[{**base, "item": 0, "age_days": 0.0}, {**base, "item": 1, "age_days": 300.0}]]
    vector = np.asarray(
        preference.build_preference_vectors(_flatten(users), jnp.asarray(embeddings), 1, cfg)
    )[0]
    assert vector[0] > vector[1] > 0


@settings(max_examples=30, deadline=None)
@given(histories, st.integers(0, 1_000), st.sampled_from([1, 2, 4]))
def test_chunked_preferences_in_any_event_order_match_reference(users, seed, chunk):
    """The training path for large logs: a few events at a time, each chunk adding into the
    window of users it names, whatever order the events come in."""
    cfg = PreferenceConfig()
    embeddings = _embeddings()
    events = _flatten(users)
    order = jnp.asarray(np.random.default_rng(seed).permutation(events.user.shape[0]))
    shuffled = Events(*(jnp.take(column, order, axis=0) for column in events))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(profile, "EVENT_CHUNK", chunk)
        got = np.asarray(
            profile._chunked_preferences(shuffled, jnp.asarray(embeddings), len(users), cfg)
        )
    for u, history in enumerate(users):
        want = reference.preference_vector(history, embeddings, cfg)
        np.testing.assert_allclose(got[u], want, atol=2e-4)
