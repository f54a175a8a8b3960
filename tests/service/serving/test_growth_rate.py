"""The catalogue's growth rate that plans the next capacity: rows per second over a window, and
one large write not read as a steady flood."""

from service.serving.catalogue_sync import MIN_RATE_SPAN, GrowthRate


def test_a_steady_catalogue_grows_at_its_rate():
    rate = GrowthRate(window=60.0)
    for second in range(30):
        rate.saw(3000 + 50 * second, now=float(second))
    assert abs(rate.per_second(29.0) - 50.0) < 1e-9


def test_nothing_known_from_one_look_and_old_looks_are_forgotten():
    rate = GrowthRate(window=60.0)
    rate.saw(3100, now=0.0)
    assert rate.per_second(0.0) == 0.0
    rate.saw(3200, now=1.0)
    rate.saw(3200, now=100.0)  # the first two are out of the window now
    assert rate.per_second(100.0) == 0.0


def test_two_writes_a_second_apart_are_spread_over_a_part_of_the_window():
    rate = GrowthRate(window=60.0)
    rate.saw(3000, now=0.0)
    rate.saw(4000, now=1.0)
    assert rate.per_second(1.0) == 1000 / (60.0 / MIN_RATE_SPAN)
