"""Confidence intervals from paired, interleaved rounds.

Each round yields one median latency per cell. A speedup's uncertainty comes
from how much the per-round ratios (reference / cell, measured seconds apart)
vary between rounds, so drift and load that hit both cells alike cancel, and
disagreement between rounds widens the interval. The interval is Student's t
on the logarithms of the ratios (scipy.stats.t): exact for log-normal ratios
and honest for the few rounds a benchmark can afford, where a bootstrap would
be too narrow.
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
