"""Statistics for A/B experiments: sticky assignment, the difference of a variant's
conversion rate from control with its 95 % interval, a decision rule that stays valid when
people look every day, and a sample-ratio-mismatch check.

The unit is the viewer: a viewer converts when they watch a recommended item within the
attribution window, so viewers are independent draws where lists of one viewer are not.

The decision rule is the mixture sequential probability ratio test for a difference of two
proportions with a normal mixing distribution (Johari, Koomen, Pekelis and Walsh, "Peeking at
A/B tests", KDD 2017): its always-valid p-value may be read after every new viewer, and
stopping the first time it falls below α keeps the false-positive rate at most α; its
always-valid interval covers the true difference at every look with probability 1 − α.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import NamedTuple

from scipy import stats

ALPHA = 0.05
SRM_ALPHA = 0.001  # a traffic split this unlikely under the configured shares is broken
HASH_SCALE = float(2**64)


def assign(salt: str, user_id: str, traffic: Sequence[float]) -> int:
    """The variant (index into ``traffic``, shares summing to 1) of ``user_id``: a hash of
    (salt, user id) mapped to [0, 1), so a viewer stays in one variant, and experiments with
    other salts assign independently."""
    digest = hashlib.blake2b(f"{salt}:{user_id}".encode(), digest_size=8).digest()
    point = int.from_bytes(digest, "big") / HASH_SCALE
    edge = 0.0
    for index, share in enumerate(traffic):
        edge += share
        if point < edge:
            return index
    return len(traffic) - 1


class Counts(NamedTuple):
    """Viewers exposed to a variant and how many of them converted."""

    users: int
    conversions: int

    @property
    def rate(self) -> float:
        return self.conversions / self.users if self.users else 0.0


class Comparison(NamedTuple):
    """A variant against control: ``difference`` of conversion rates with the fixed-horizon
    95 % interval (``low``, ``high``), the always-valid interval and p-value of the sequential
    test, and the decision (``"variant better"``, ``"control better"``, ``"continue"``)."""

    difference: float
    low: float
    high: float
    sequential_low: float
    sequential_high: float
    sequential_p: float
    decision: str


def _variance(control: Counts, variant: Counts) -> float:
    """The variance of the difference of the two rates (their pooled rate when either is 0 or 1,
    so one early run of all-or-nothing does not look certain)."""
    pooled = (control.conversions + variant.conversions) / (control.users + variant.users)
    rates = [
        c.rate if 0.0 < c.rate < 1.0 else min(max(pooled, 1e-9), 1.0 - 1e-9)
        for c in (control, variant)
    ]
    return sum(r * (1.0 - r) / c.users for r, c in zip(rates, (control, variant), strict=True))


def compare(control: Counts, variant: Counts, mixing_sd: float, alpha: float = ALPHA) -> Comparison:
    """``variant`` against ``control``. ``mixing_sd``: the spread of differences the test
    expects (the mixing normal's standard deviation, in conversion-rate units); the test is
    valid for any value and most powerful for effects near it."""
    if min(control.users, variant.users) == 0:
        return Comparison(0.0, -1.0, 1.0, -1.0, 1.0, 1.0, "continue")
    difference = variant.rate - control.rate
    v = _variance(control, variant)
    z = stats.norm.ppf(1.0 - alpha / 2.0)
    half = z * math.sqrt(v)
    tau2 = mixing_sd**2
    # mixture likelihood ratio of "difference ~ N(0, tau2)" against "difference = 0"
    log_ratio = 0.5 * math.log(v / (v + tau2)) + tau2 * difference**2 / (2.0 * v * (v + tau2))
    p_value = min(1.0, math.exp(-log_ratio))
    width = math.sqrt(
        v * (v + tau2) / tau2 * (math.log((v + tau2) / v) + 2.0 * math.log(1.0 / alpha))
    )
    decision = "continue"
    if p_value <= alpha:
        decision = "variant better" if difference > 0 else "control better"
    return Comparison(
        difference,
        difference - half,
        difference + half,
        difference - width,
        difference + width,
        p_value,
        decision,
    )


class RatioCheck(NamedTuple):
    """Sample ratio mismatch: the chi-square test's p-value of the observed viewers per variant
    against the configured shares, and whether it flags a broken split."""

    p_value: float
    mismatch: bool


def sample_ratio(users: Sequence[int], traffic: Sequence[float]) -> RatioCheck:
    """Whether the viewers per variant fit the traffic shares (chi-square goodness of fit)."""
    total = sum(users)
    if total == 0:
        return RatioCheck(1.0, False)
    expected = [share * total for share in traffic]
    p_value = float(stats.chisquare(list(users), expected).pvalue)
    return RatioCheck(p_value, p_value < SRM_ALPHA)
