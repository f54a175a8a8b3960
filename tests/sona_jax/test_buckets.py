"""The one bucket rule every padded axis uses."""

import numpy as np

from sona_jax.buckets import EVENT_BUCKETS, USER_BUCKETS, bucket, next_power_of_two, pad_rows


def test_listed_sizes_then_powers_of_two():
    assert [bucket(n, USER_BUCKETS) for n in (1, 2, 3, 5, 65, 128)] == [1, 2, 4, 8, 128, 128]
    assert bucket(129, USER_BUCKETS) == 256  # past the largest: the next power of two
    assert bucket(65_537, EVENT_BUCKETS) == 131_072
    assert bucket(0, (8,)) == bucket(8, (8,)) == 8 and bucket(9, (8,)) == 16
    assert [bucket(n) for n in (0, 1, 2, 3, 1000, 1024)] == [1, 1, 2, 4, 1024, 1024]
    assert [next_power_of_two(n) for n in (1, 5, 64, 65)] == [1, 8, 64, 128]


def test_pad_rows():
    padded = pad_rows(np.ones((3, 2)), 4, fill=-1)
    assert padded.shape == (4, 2) and (padded[3] == -1).all() and (padded[:3] == 1).all()
