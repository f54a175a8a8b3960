"""The mood -> genre prior learns from the catalogue's mood tags and what is watched."""

from __future__ import annotations

import numpy as np

from sona_jax.data.schema import MOODS
from sona_jax.model.tables import learned_mood_prior, mood_genre_prior

GENRES = ("Western", "Children", "Horror")


def test_mood_tags_and_watching_teach_the_prior():
    stems = mood_genre_prior(GENRES)
    uplifting, dark = MOODS.index("uplifting"), MOODS.index("dark")
    assert stems[uplifting].tolist() == [0.0, 1.0, 0.0]  # by name: children's titles uplift
    moods = np.zeros((4, len(MOODS)), np.float32)
    moods[[0, 1], uplifting] = 1.0  # two uplifting westerns...
    moods[2, dark] = 1.0  # ...and one dark children's title nobody watches
    genres = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    watched = np.array([50, 30, 0, 10])
    prior = learned_mood_prior(stems, moods, genres, watched)
    assert prior[uplifting].tolist() == [1.0, 1.0, 0.0]  # westerns join children's titles
    assert prior[dark, 1] == 1.0 and prior[dark, 2] == 1.0  # tag and stem both count
    untagged = MOODS.index("funny")
    np.testing.assert_array_equal(prior[untagged], stems[untagged])  # nothing learned: stems
