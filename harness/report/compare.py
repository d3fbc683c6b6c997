"""Comparison of two runs: metric ratios per matched cell, and latency changes tested for significance."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from scipy.stats import mannwhitneyu

from benchharness.report.frame import load_run, tidy_frame

KEY = ["model", "technique", "device", "batch_size"]
RATIO_METRICS = ["accuracy_top1", "latency_p50_ms", "latency_p99_ms", "throughput_sps", "size_bytes", "inference_peak_bytes", "energy_j_per_sample"]
SIGNIFICANCE = 0.05


def _pooled(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per key: metric means over repeats (NaN for a metric the frame lacks) and every latency sample pooled."""
    ok = frame[frame["status"] == "ok"]
    metrics = ok.reindex(columns=RATIO_METRICS).apply(pd.to_numeric, errors="coerce")
    means = metrics.groupby([ok[key] for key in KEY]).mean()
    samples = ok.reindex(columns=["samples_ms"])["samples_ms"].groupby([ok[key] for key in KEY]).agg(
        lambda column: [sample for samples in column if isinstance(samples, list) for sample in samples]
    )
    return means.join(samples).reset_index().reindex(columns=KEY + RATIO_METRICS + ["samples_ms"])


def _p_value(before: list[float], after: list[float]) -> float:
    if len(before) < 3 or len(after) < 3:
        return math.nan
    return float(mannwhitneyu(before, after, alternative="two-sided").pvalue)


def compare_frames(before: pd.DataFrame, after: pd.DataFrame, threshold: float = 0.05) -> pd.DataFrame:
    """Matched cells with ``after / before`` ratios, a Mann-Whitney U test of latency, and regression flags.

    A regression is a latency p50 that grew by more than ``threshold`` with p < 0.05, or a
    top-1 accuracy that fell by more than ``threshold`` (relative). A metric missing from
    either frame has NaN ratios.
    """
    merged = _pooled(before).merge(_pooled(after), on=KEY, suffixes=("_before", "_after"))
    table = merged[KEY].copy()
    for metric in RATIO_METRICS:
        first, second = merged[f"{metric}_before"], merged[f"{metric}_after"]
        table[f"{metric}_ratio"] = (second / first).where(first.notna() & (first != 0) & second.notna())
    table["latency_p_value"] = [_p_value(first, second) for first, second in zip(merged["samples_ms_before"], merged["samples_ms_after"])]
    slower = (table["latency_p50_ms_ratio"] > 1 + threshold) & (table["latency_p_value"] < SIGNIFICANCE)
    less_accurate = table["accuracy_top1_ratio"] < 1 - threshold
    table["regression"] = slower | less_accurate
    table["why"] = [
        "; ".join(
            reason for reason, flagged in (
                (f"latency p50 x{latency:.2f} (p={p_value:.2g})", is_slower),
                (f"accuracy x{accuracy:.3f}", is_less_accurate),
            ) if flagged
        )
        for latency, p_value, accuracy, is_slower, is_less_accurate in zip(
            table["latency_p50_ms_ratio"], table["latency_p_value"], table["accuracy_top1_ratio"], slower, less_accurate
        )
    ]
    return table


def compare_runs(run_a: Path, run_b: Path, threshold: float = 0.05) -> pd.DataFrame:
    """Compare two run directories (B against A)."""
    return compare_frames(tidy_frame(load_run(run_a).records), tidy_frame(load_run(run_b).records), threshold)
