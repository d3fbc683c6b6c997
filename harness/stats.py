"""Confidence intervals: of speedups from paired, interleaved rounds, and of accuracy differences.

Each round yields one median latency per cell. A speedup's uncertainty comes
from how much the per-round ratios (reference / cell, measured seconds apart)
vary between rounds, so drift and load that hit both cells alike cancel, and
disagreement between rounds widens the interval. The interval is Student's t
on the logarithms of the ratios (scipy.stats.t): exact for log-normal ratios
and honest for the few rounds a benchmark can afford, where a bootstrap would
be too narrow.

Accuracy differences get intervals for proportions: paired (the same test images, each
model right or wrong on each) when the records say which images each cell got right, and
for independent samples otherwise.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


@dataclass(frozen=True)
class RatioEstimate:
    """A ratio estimated from paired rounds: geometric mean, its CI, and how far the rounds spread.

    ``spread`` is max/min - 1 of the per-round ratios; ``sd`` their geometric standard deviation
    minus one (0.05: a typical round is 5% off the geometric mean), which unlike the spread does
    not grow with the number of rounds.
    """

    estimate: float
    ci95_low: float
    ci95_high: float
    rounds: int
    spread: float
    sd: float = math.nan

    @property
    def half_width(self) -> float:
        """Half the CI's width as a share of the estimate (inf while unknown)."""
        if not all(math.isfinite(value) for value in (self.estimate, self.ci95_low, self.ci95_high)) or self.estimate <= 0:
            return math.inf
        return (self.ci95_high - self.ci95_low) / 2.0 / self.estimate

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies inside the CI."""
        return self.ci95_low <= value <= self.ci95_high

    def as_dict(self, prefix: str) -> dict[str, float | int]:
        """The fields under ``prefix``: ``<prefix>``, ``<prefix>_ci95_low``, ... (``<prefix>_p50`` for the estimate of a speedup)."""
        values = asdict(self)
        return {
            prefix: values["estimate"],
            f"{prefix}_ci95_low": values["ci95_low"],
            f"{prefix}_ci95_high": values["ci95_high"],
            f"{prefix}_rounds": values["rounds"],
            f"{prefix}_round_spread": values["spread"],
            f"{prefix}_round_sd": values["sd"],
        }


def log_mean_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """Geometric mean of positive ``values`` and the t-interval of it (NaN bounds with fewer than two values)."""
    logs = np.log(np.asarray(values, dtype=float))
    mean = float(logs.mean()) if logs.size else math.nan
    if logs.size < 2:
        return math.exp(mean), math.nan, math.nan
    scale = float(logs.std(ddof=1)) / math.sqrt(logs.size)
    if scale == 0.0:
        return math.exp(mean), math.exp(mean), math.exp(mean)
    low, high = stats.t.interval(confidence, df=logs.size - 1, loc=mean, scale=scale)
    return math.exp(mean), math.exp(low), math.exp(high)


def spread(values: Sequence[float]) -> float:
    """How far positive values disagree: max / min - 1 (0 for fewer than two)."""
    array = np.asarray(values, dtype=float)
    return float(array.max() / array.min() - 1.0) if array.size > 1 else 0.0


def geometric_sd(values: Sequence[float]) -> float:
    """exp(standard deviation of the logs) - 1 of positive values (0 for fewer than two)."""
    logs = np.log(np.asarray(values, dtype=float))
    return float(math.exp(logs.std(ddof=1)) - 1.0) if logs.size > 1 else 0.0


def paired_ratio(numerators: Sequence[float], denominators: Sequence[float], confidence: float = CONFIDENCE) -> RatioEstimate:
    """The ratio numerator/denominator from paired rounds, e.g. reference latency / cell latency = the cell's speedup."""
    if len(numerators) != len(denominators):
        raise ValueError(f"paired rounds must match: {len(numerators)} vs {len(denominators)}")
    ratios = [a / b for a, b in zip(numerators, denominators) if a > 0 and b > 0]
    if not ratios:
        return RatioEstimate(math.nan, math.nan, math.nan, 0, math.nan)
    estimate, low, high = log_mean_ci(ratios, confidence)
    return RatioEstimate(estimate, low, high, len(ratios), spread(ratios), geometric_sd(ratios))


def _z(confidence: float) -> float:
    return float(stats.norm.ppf(0.5 + confidence / 2.0))


def paired_accuracy_difference(correct_a: Sequence[bool], correct_b: Sequence[bool], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """Accuracy of b minus accuracy of a on the same test images, with its confidence interval.

    ``correct_a`` and ``correct_b`` say, image by image in the same order, whether each model
    was right. The interval is Agresti and Min's adjusted Wald interval for matched
    proportions (A. Agresti, Y. Min, "Simple improved confidence intervals for comparing
    matched proportions", Statistics in Medicine 24(5):729-740, 2005): add 0.5 to each cell
    of the 2x2 table of (a correct, b correct) counts and apply the Wald interval to the
    adjusted proportions. Unlike the plain Wald interval it keeps a width when the models
    never disagree. The estimate is the raw difference; the bounds are clipped to [-1, 1].
    Returns ``(estimate, low, high)``.
    """
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired accuracies need two vectors of one non-zero length, not {a.shape} and {b.shape}")
    n = a.size
    only_a = float(np.count_nonzero(a & ~b)) + 0.5
    only_b = float(np.count_nonzero(~a & b)) + 0.5
    adjusted_n = n + 2.0
    p_only_a, p_only_b = only_a / adjusted_n, only_b / adjusted_n
    centre = p_only_b - p_only_a
    half_width = _z(confidence) * math.sqrt(max(p_only_a + p_only_b - centre**2, 0.0) / adjusted_n)
    estimate = (only_b - only_a) / n
    return estimate, max(centre - half_width, -1.0), min(centre + half_width, 1.0)


def wilson_interval(proportion: float, n: float, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson's score interval of a proportion observed in ``n`` trials (no continuity correction)."""
    z = _z(confidence)
    denominator = 1.0 + z**2 / n
    centre = (proportion + z**2 / (2.0 * n)) / denominator
    half_width = z / denominator * math.sqrt(proportion * (1.0 - proportion) / n + z**2 / (4.0 * n**2))
    return max(centre - half_width, 0.0), min(centre + half_width, 1.0)


def unpaired_accuracy_difference(accuracy_a: float, n_a: float, accuracy_b: float, n_b: float, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """``accuracy_b - accuracy_a`` of independent samples, with Newcombe's hybrid score interval.

    Method 10 of R. G. Newcombe, "Interval estimation for the difference between independent
    proportions: comparison of eleven methods", Statistics in Medicine 17(8):873-890, 1998:
    the interval combines the Wilson intervals of both accuracies. For records that do not
    say which images each model got right; it ignores the pairing, so it is wider than
    :func:`paired_accuracy_difference` when both models saw the same images.
    Returns ``(estimate, low, high)``.
    """
    if not n_a > 0 or not n_b > 0:
        raise ValueError(f"accuracies need a positive number of samples, not {n_a} and {n_b}")
    low_a, high_a = wilson_interval(accuracy_a, n_a, confidence)
    low_b, high_b = wilson_interval(accuracy_b, n_b, confidence)
    difference = accuracy_b - accuracy_a
    low = difference - math.sqrt((accuracy_b - low_b) ** 2 + (high_a - accuracy_a) ** 2)
    high = difference + math.sqrt((high_b - accuracy_b) ** 2 + (accuracy_a - low_a) ** 2)
    return difference, low, high
