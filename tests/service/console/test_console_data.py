"""The console's host-side arithmetic (issue 16) against plain loops."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from service.console.data import TREND_DAYS, views_over_time


@given(st.dictionaries(st.integers(19_000, 19_060), st.integers(1, 1_000), min_size=1, max_size=30))
def test_views_over_time_fills_every_day_and_trails_a_mean(counts):
    daily = sorted(counts.items())
    found = views_over_time(daily)
    first, last = daily[0][0], daily[-1][0]
    expected = [counts.get(day, 0) for day in range(first, last + 1)]
    assert found["views"] == expected
    assert len(found["days"]) == len(expected) and found["days"] == sorted(found["days"])
    for i, trend in enumerate(found["trend"]):
        window = expected[max(0, i - TREND_DAYS + 1) : i + 1]
        assert np.isclose(trend, np.mean(window), atol=1e-3)


def test_no_views_is_an_empty_chart():
    assert views_over_time([]) == {"days": [], "views": [], "trend": []}
