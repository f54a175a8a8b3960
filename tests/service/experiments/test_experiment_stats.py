"""Experiment statistics (issue 15): sticky, independent assignment honouring the shares; the
difference's interval; the sequential rule; the sample-ratio check."""

from __future__ import annotations

import uuid

import numpy as np
from scipy import stats

from service.experiments.statistics import Counts, assign, compare, sample_ratio


def _users(n: int) -> list[str]:
    return [str(uuid.UUID(int=i)) for i in range(n)]


def test_assignment_is_sticky_and_honours_the_shares():
    traffic = [0.5, 0.3, 0.2]
    users = _users(10_000)
    first = [assign("exp-a", u, traffic) for u in users]
    assert first == [assign("exp-a", u, traffic) for u in users]  # the same in every process
    observed = np.bincount(first, minlength=3)
    assert stats.chisquare(observed, np.array(traffic) * len(users)).pvalue > 0.001, observed


def test_experiments_with_other_salts_assign_independently():
    users = _users(10_000)
    a = [assign("exp-a", u, [0.5, 0.5]) for u in users]
    b = [assign("exp-b", u, [0.5, 0.5]) for u in users]
    table = np.zeros((2, 2))
    np.add.at(table, (a, b), 1)
    assert stats.chi2_contingency(table).pvalue > 0.001, table


def test_the_fixed_interval_covers_the_true_difference_about_95_percent():
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(400):
        c = Counts(2000, int(rng.binomial(2000, 0.30)))
        v = Counts(2000, int(rng.binomial(2000, 0.33)))
        result = compare(c, v, mixing_sd=0.03)
        covered += result.low <= 0.03 <= result.high
        assert result.sequential_low <= result.low and result.high <= result.sequential_high
    assert 0.92 <= covered / 400 <= 0.98, covered


def test_the_sequential_rule_decides_a_large_effect_and_not_a_null():
    big = compare(Counts(5000, 1500), Counts(5000, 1800), mixing_sd=0.03)
    assert big.decision == "variant better" and big.sequential_p < 0.05
    worse = compare(Counts(5000, 1800), Counts(5000, 1500), mixing_sd=0.03)
    assert worse.decision == "control better"
    same = compare(Counts(5000, 1500), Counts(5000, 1510), mixing_sd=0.03)
    assert same.decision == "continue" and same.sequential_p > 0.05
    assert compare(Counts(0, 0), Counts(10, 3), mixing_sd=0.03).decision == "continue"


def test_sample_ratio_mismatch():
    assert sample_ratio([5200, 4800], [0.5, 0.5]).mismatch
    fine = sample_ratio([5050, 4950], [0.5, 0.5])
    assert not fine.mismatch and fine.p_value > 0.1
