"""Paired seed statistics: the interval equals scipy's paired t-test interval; the verdict rule."""

import pytest
from scipy import stats

from etsdm.metrics.paired import paired_difference, verdict


def test_interval_matches_scipy_paired_t_test():
    base = [9.0, 8.1, 9.7, 8.8, 9.3]
    ets = [8.2, 8.0, 9.1, 8.9, 8.4]
    d = paired_difference(base, ets)
    ci = stats.ttest_rel(ets, base).confidence_interval(0.95)
    assert d.mean == pytest.approx(sum(e - b for b, e in zip(base, ets, strict=True)) / 5)
    assert (d.low, d.high) == pytest.approx((ci.low, ci.high), rel=1e-12)
    assert d.k == 5 and len(d.differences) == 5


@pytest.mark.parametrize(
    ("base", "ets", "direction", "expected"),
    [
        ([9, 9.5, 10], [8, 8.4, 9.1], "lower", "reproduced"),  # E-TSDM lower on every seed, tight
        ([9, 9.5, 10], [8, 8.4, 9.1], "higher", "reversed"),
        ([9, 9.5, 10], [10, 8.4, 9.7], "lower", "not resolved"),  # signs disagree across seeds
        ([1, 2, 3], [1.5, 2.6, 3.4], "higher", "reproduced"),
    ],
)
def test_verdict_rule(base, ets, direction, expected):
    assert verdict(paired_difference(base, ets), direction) == expected


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="2 seeds"):
        paired_difference([1.0], [2.0])
    with pytest.raises(ValueError, match="3 baseline values but 2"):
        paired_difference([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="paper_direction"):
        verdict(paired_difference([1, 2], [2, 3]), "down")
