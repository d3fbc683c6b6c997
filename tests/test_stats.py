"""Paired-round confidence intervals: drift cancels, disagreement widens, the estimate is always inside."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from benchharness.stats import log_mean_ci, paired_ratio, spread, geometric_sd


def test_identical_rounds_give_a_point_interval():
    """Rounds that agree exactly leave no uncertainty."""
    estimate = paired_ratio([10.0, 10.0, 10.0], [5.0, 5.0, 5.0])
    assert estimate.estimate == pytest.approx(2.0)
    assert estimate.ci95_low == pytest.approx(2.0) and estimate.ci95_high == pytest.approx(2.0)
    assert estimate.half_width == pytest.approx(0.0) and estimate.spread == pytest.approx(0.0)


def test_drift_that_hits_both_cells_cancels():
    """The machine slowing down 3x over the rounds moves both latencies; the paired speedup stays exact."""
    drift = [1.0, 1.5, 2.0, 3.0]
    reference = [12.0 * factor for factor in drift]
    cell = [6.0 * factor for factor in drift]
    estimate = paired_ratio(reference, cell)
    assert estimate.estimate == pytest.approx(2.0)
    assert estimate.half_width == pytest.approx(0.0, abs=1e-12)
    unpaired = paired_ratio(reference, list(reversed(cell)))
    assert unpaired.half_width > 0.5


def test_interval_is_students_t_on_log_ratios():
    """The CI matches scipy's one-sample t interval of the log ratios, exponentiated."""
    reference = [10.2, 9.8, 10.5, 10.1, 9.9]
    cell = [5.0, 5.1, 4.9, 5.3, 5.0]
    logs = np.log(np.asarray(reference) / np.asarray(cell))
    low, high = scipy_stats.ttest_1samp(logs, 0.0).confidence_interval(0.95)
    estimate = paired_ratio(reference, cell)
    assert estimate.ci95_low == pytest.approx(math.exp(low))
    assert estimate.ci95_high == pytest.approx(math.exp(high))
    assert estimate.estimate == pytest.approx(math.exp(logs.mean()))
    assert estimate.rounds == 5


def test_more_agreeing_rounds_narrow_the_interval():
    """The same round-to-round scatter over more rounds gives a narrower interval."""
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.02, size=40)
    few = paired_ratio([2.0 * math.exp(value) for value in noise[:3]], [1.0] * 3)
    many = paired_ratio([2.0 * math.exp(value) for value in noise], [1.0] * 40)
    assert many.half_width < few.half_width / 3


def test_one_round_has_no_interval_and_spread_is_max_over_min():
    """A CI needs two rounds; spread is max/min - 1."""
    single = paired_ratio([3.0], [1.0])
    assert single.estimate == pytest.approx(3.0) and math.isnan(single.ci95_low) and single.half_width == math.inf
    assert spread([1.0, 1.1, 1.2]) == pytest.approx(0.2)
    assert spread([5.0]) == 0.0
    with pytest.raises(ValueError):
        paired_ratio([1.0, 2.0], [1.0])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0.01, 1000.0), st.floats(0.01, 1000.0)), min_size=2, max_size=30))
def test_the_estimate_is_always_inside_its_interval(pairs):
    """Whatever the rounds, the CI contains its own estimate (the old bootstrap's did not)."""
    reference, cell = zip(*pairs)
    estimate = paired_ratio(list(reference), list(cell))
    assert estimate.ci95_low <= estimate.estimate * (1 + 1e-9)
    assert estimate.estimate <= estimate.ci95_high * (1 + 1e-9)
    mean, low, high = log_mean_ci([a / b for a, b in pairs])
    assert mean == pytest.approx(estimate.estimate)


def test_geometric_sd_does_not_grow_with_more_rounds_like_the_spread():
    """The geometric SD of ratios alternating 5% either side stays near 5% with 4 or 40 rounds; max/min stays 10.25%."""
    few, many = [1.05, 1 / 1.05] * 2, [1.05, 1 / 1.05] * 20
    assert geometric_sd(few) == pytest.approx(math.exp(math.log(1.05) * math.sqrt(4 / 3)) - 1)
    assert geometric_sd(many) == pytest.approx(0.05, abs=0.002)
    assert paired_ratio(many, [1.0] * 40).sd == pytest.approx(geometric_sd(many))
    assert geometric_sd([2.0]) == 0.0
