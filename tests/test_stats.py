"""Paired-round confidence intervals: drift cancels, disagreement widens, the estimate is always inside."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from benchharness.stats import geometric_sd, log_mean_ci, paired_accuracy_difference, paired_ratio, spread, unpaired_accuracy_difference, wilson_interval


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


def test_models_that_agree_on_every_image_still_get_an_interval():
    """Identical right/wrong vectors: the difference is 0, and the Agresti-Min interval keeps a width around it."""
    correct = np.arange(360) % 7 != 0
    estimate, low, high = paired_accuracy_difference(correct, correct)
    assert estimate == 0.0 and low < 0.0 < high
    assert high == pytest.approx(1.959964 / 362, rel=1e-5) and low == pytest.approx(-high)


def test_one_discordant_image_is_not_a_difference():
    """One image out of 360 that only b gets right: estimate 1/360, interval containing 0."""
    a = np.ones(360, dtype=bool)
    a[17] = False
    estimate, low, high = paired_accuracy_difference(a, np.ones(360, dtype=bool))
    assert estimate == pytest.approx(1 / 360)
    assert low < 0.0 < high


def test_thirty_improvements_and_no_losses_are_a_difference():
    """30 of 360 images improved and none got worse: the interval lies above 0, its bounds from the adjusted 2x2 table."""
    a = np.ones(360, dtype=bool)
    a[:30] = False
    estimate, low, high = paired_accuracy_difference(a, np.ones(360, dtype=bool))
    assert estimate == pytest.approx(30 / 360)
    only_b, only_a = 30.5 / 362, 0.5 / 362
    half_width = 1.959964 * math.sqrt((only_a + only_b - (only_b - only_a) ** 2) / 362)
    assert low == pytest.approx(30 / 362 - half_width, rel=1e-5) and high == pytest.approx(30 / 362 + half_width, rel=1e-5)
    assert low > 0.0
    swapped = paired_accuracy_difference(np.ones(360, dtype=bool), a)
    assert swapped == pytest.approx((-estimate, -high, -low))


def test_paired_interval_rejects_vectors_of_different_lengths():
    """Vectors of two lengths are not the same test images."""
    with pytest.raises(ValueError):
        paired_accuracy_difference([True, False], [True])
    with pytest.raises(ValueError):
        paired_accuracy_difference([], [])


def test_paired_interval_covers_the_true_difference_95_percent_of_the_time():
    """2000 simulated pairs of correlated right/wrong vectors (n=360): the 95% interval covers the true difference 93-97% of the time."""
    rng = np.random.default_rng(12)
    cells = np.array([0.80, 0.03, 0.07, 0.10])  # both right, only a, only b, both wrong
    truth = cells[2] - cells[1]
    draws = rng.choice(4, size=(2000, 360), p=cells)
    correct_a, correct_b = (draws == 0) | (draws == 1), (draws == 0) | (draws == 2)
    covered = 0
    for a, b in zip(correct_a, correct_b):
        _, low, high = paired_accuracy_difference(a, b)
        covered += low <= truth <= high
    assert 0.93 <= covered / 2000 <= 0.97


def test_unpaired_interval_is_newcombes_hybrid_score():
    """Newcombe (1998), example (a): 56/70 vs 48/80 gives 0.0524 to 0.3339 with method 10; the same from the Wilson bounds by hand."""
    estimate, low, high = unpaired_accuracy_difference(48 / 80, 80, 56 / 70, 70)
    assert estimate == pytest.approx(0.2)
    assert low == pytest.approx(0.0524, abs=5e-5) and high == pytest.approx(0.3339, abs=5e-5)
    z = 1.959964
    wilson = {}
    for name, (p, n) in {"a": (48 / 80, 80), "b": (56 / 70, 70)}.items():
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        wilson[name] = (centre - half, centre + half)
        assert wilson_interval(p, n) == pytest.approx(wilson[name], rel=1e-6)
    (low_a, high_a), (low_b, high_b) = wilson["a"], wilson["b"]
    assert low == pytest.approx(0.2 - math.sqrt((56 / 70 - low_b) ** 2 + (high_a - 48 / 80) ** 2), rel=1e-6)
    assert high == pytest.approx(0.2 + math.sqrt((high_b - 56 / 70) ** 2 + (48 / 80 - low_a) ** 2), rel=1e-6)


def test_unpaired_interval_is_wider_than_the_paired_one_for_the_same_images():
    """Ignoring that both models saw the same images costs precision."""
    a = np.ones(360, dtype=bool)
    a[:30] = False
    _, paired_low, paired_high = paired_accuracy_difference(a, np.ones(360, dtype=bool))
    _, low, high = unpaired_accuracy_difference(a.mean(), 360, 1.0, 360)
    assert high - low > paired_high - paired_low
