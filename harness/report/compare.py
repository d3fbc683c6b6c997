"""Comparison of two runs: metric ratios per matched cell, and latency changes tested for significance."""

from __future__ import annotations

import html
import math
from pathlib import Path

import pandas as pd
from scipy.stats import mannwhitneyu

from benchharness.report.frame import load_run, tidy_frame

KEY = ["model", "technique", "device", "batch_size"]
RATIO_METRICS = ["accuracy_top1", "latency_p50_ms", "latency_p99_ms", "throughput_sps", "size_bytes", "peak_mem_bytes", "energy_j_per_sample"]
SIGNIFICANCE = 0.05


def _pooled(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per key: metric means over repeats and every latency sample pooled."""
    ok = frame[frame["status"] == "ok"]
    rows = []
    for key, group in ok.groupby(KEY):
        row = dict(zip(KEY, key))
        for metric in RATIO_METRICS:
            values = pd.to_numeric(group[metric], errors="coerce").dropna()
            row[metric] = float(values.mean()) if len(values) else math.nan
        row["samples_ms"] = [sample for samples in group["samples_ms"] if samples for sample in samples]
        rows.append(row)
    return pd.DataFrame(rows, columns=KEY + RATIO_METRICS + ["samples_ms"])


def compare_frames(before: pd.DataFrame, after: pd.DataFrame, threshold: float = 0.05) -> pd.DataFrame:
    """Matched cells with ``after / before`` ratios, a Mann-Whitney U test of latency, and regression flags.

    A regression is a latency p50 that grew by more than ``threshold`` with p < 0.05, or a
    top-1 accuracy that fell by more than ``threshold`` (relative).
    """
    merged = _pooled(before).merge(_pooled(after), on=KEY, suffixes=("_before", "_after"))
    rows = []
    for _, row in merged.iterrows():
        out = {key: row[key] for key in KEY}
        for metric in RATIO_METRICS:
            first, second = row[f"{metric}_before"], row[f"{metric}_after"]
            out[f"{metric}_ratio"] = second / first if first and not math.isnan(first) and not math.isnan(second) else math.nan
        samples_before, samples_after = row["samples_ms_before"], row["samples_ms_after"]
        if len(samples_before) >= 3 and len(samples_after) >= 3:
            out["latency_p_value"] = float(mannwhitneyu(samples_before, samples_after, alternative="two-sided").pvalue)
        else:
            out["latency_p_value"] = math.nan
        slower = out["latency_p50_ms_ratio"] > 1 + threshold and out["latency_p_value"] < SIGNIFICANCE
        less_accurate = out["accuracy_top1_ratio"] < 1 - threshold
        out["regression"] = bool(slower or less_accurate)
        out["why"] = "; ".join(
            reason for reason, flagged in (
                (f"latency p50 x{out['latency_p50_ms_ratio']:.2f} (p={out['latency_p_value']:.2g})", slower),
                (f"accuracy x{out['accuracy_top1_ratio']:.3f}", less_accurate),
            ) if flagged
        )
        rows.append(out)
    return pd.DataFrame(rows)


def compare_runs(run_a: Path, run_b: Path, threshold: float = 0.05) -> pd.DataFrame:
    """Compare two run directories (B against A)."""
    return compare_frames(tidy_frame(load_run(run_a).records), tidy_frame(load_run(run_b).records), threshold)


def comparison_html(table: pd.DataFrame, run_a: Path, run_b: Path, threshold: float) -> str:
    """A small self-contained HTML page of the comparison."""
    shown = table.copy()
    body = shown.to_html(index=False, float_format=lambda value: f"{value:.3f}", na_rep="-", classes="compare", escape=True)
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>benchharness comparison</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:2rem} table{border-collapse:collapse;font-size:.85rem}"
        "td,th{border:1px solid #ddd;padding:.25rem .5rem;text-align:right} th{background:#f4f4f4}</style></head><body>"
        f"<h1>{html.escape(Path(run_b).name)} vs {html.escape(Path(run_a).name)}</h1>"
        f"<p>Ratios are B / A. A regression is a p50 latency more than {threshold:.0%} higher with Mann-Whitney p &lt; {SIGNIFICANCE}, "
        f"or a top-1 accuracy more than {threshold:.0%} lower. {int(table['regression'].sum()) if len(table) else 0} regression(s).</p>"
        f"{body}</body></html>"
    )
