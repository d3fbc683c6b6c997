"""Pages that look across runs, in the report's style: one technique's speedup over several runs, and run B against run A."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from benchharness.errors import HarnessError
from benchharness.report import figures
from benchharness.report.assets import figure_html
from benchharness.report.compare import SIGNIFICANCE
from benchharness.report.frame import Run, load_run, trend_frame
from benchharness.report.html import page_html, technique_order
from benchharness.report.tables import Column, html_table, is_missing, significant


def load_same_suite(paths: list[Path]) -> list[Run]:
    """The runs at ``paths``; a :class:`HarnessError` names the first run of another suite."""
    runs = [load_run(path) for path in paths]
    first = runs[0].info["suite"]["name"]
    for run in runs[1:]:
        if run.info["suite"]["name"] != first:
            raise HarnessError(
                f"{run.path}: suite {run.info['suite']['name']!r}, not {first!r} like {runs[0].path}; "
                "a trend compares runs of one suite: pass runs of the same suite"
            )
    return runs


def _runs_table(runs: list[Run]) -> str:
    rows = pd.DataFrame([
        {
            "run": run.path.name, "created": run.info.get("created_at"), "commit": str((run.info.get("environment") or {}).get("benchharness_git_commit") or "")[:12],
            "dirty": {True: "yes", False: "no"}.get((run.info.get("environment") or {}).get("benchharness_git_dirty"), "?"),
            "suite sha256": run.info["suite"]["sha256"][:12], "cells": len(run.records),
        }
        for run in runs
    ])
    columns = [Column(name, name, text=True, sticky=name == "run") for name in rows.columns]
    return html_table(rows, columns, "runs", filter_box=False)


def trend_page(runs: list[Run], cdn: bool = False) -> str:
    """Each technique's speedup (with its CI) across several runs of one suite (see :func:`load_same_suite`), oldest first, as asv shows benchmarks over commits."""
    runs = sorted(runs, key=lambda run: str(run.info.get("created_at", "")))
    trend = trend_frame(runs)
    ok = trend[trend["status"] == "ok"]
    techniques = technique_order(runs[-1], trend)
    styles = figures.technique_styles(techniques)
    name = runs[0].info["suite"]["name"]
    hashes = {run.info["suite"]["sha256"] for run in runs}
    parts = [
        f"<header><h1>{html.escape(name)}: {len(runs)} runs</h1><div class='meta'>Speedups are against each run's own reference, "
        "with 95% CIs from that run's paired rounds: a CI that moves between runs is a change; one that only widens is noise.</div></header>",
    ]
    if len(hashes) > 1:
        parts.append(f"<p class='bad'>The suite's text differs between these runs ({len(hashes)} versions): compare with care.</p>")
    parts.append("<h2>Runs</h2>" + _runs_table(runs))
    figure = figures.speedup_across_runs(ok, styles)
    if figure is not None:
        parts.append("<h2>Speedup across runs</h2>" + figure_html(figure, "figure-trend"))
    wide = ok.pivot_table(index=["model", "device", "batch_size", "technique"], columns="run", values="speedup_p50", aggfunc="median", sort=False)
    wide = wide.reindex(columns=[run.path.name for run in runs]).reset_index()
    columns = [Column(key, key, text=True, sticky=key == "model") for key in ("model", "device", "technique")] + [Column("batch", "batch_size")]
    columns += [Column(run.path.name, run.path.name, html=lambda row, key=run.path.name: "-" if is_missing(row.get(key)) else f"{significant(row[key])}x") for run in runs]
    parts.append("<h2>Speedups by run</h2>" + html_table(wide, columns, "trend"))
    return page_html(f"{name} - benchharness runs", "".join(parts), cdn)


def comparison_page(table: pd.DataFrame, run_a: Path, run_b: Path, threshold: float) -> str:
    """Run B against run A, cell by cell, in the report's style; regressions first."""
    table = table.sort_values("regression", ascending=False, kind="stable") if len(table) else table
    ratio = lambda key: Column(key.replace("_ratio", "").replace("_", " ") + " B/A", key, html=lambda row: "-" if is_missing(row.get(key)) else f"{significant(row[key])}x")
    columns = [
        Column("model", "model", text=True, sticky=True), Column("technique", "technique", text=True), Column("device", "device", text=True), Column("batch", "batch_size"),
        ratio("accuracy_top1_ratio"), ratio("latency_p50_ms_ratio"), ratio("latency_p99_ms_ratio"), ratio("throughput_sps_ratio"), ratio("size_bytes_ratio"),
        Column("p-value", "latency_p_value", html=lambda row: "-" if is_missing(row.get("latency_p_value")) else f"{row['latency_p_value']:.2g}"),
        Column("regression", "regression", text=True, html=lambda row: f"<span class='bad'>yes: {html.escape(str(row['why']))}</span>" if row["regression"] else "no"),
    ]
    regressions = int(table["regression"].sum()) if len(table) else 0
    body = (
        f"<header><h1>{html.escape(Path(run_b).name)} vs {html.escape(Path(run_a).name)}</h1><div class='meta'>Ratios are B / A. "
        f"A regression is a p50 latency more than {threshold:.0%} higher with Mann-Whitney p &lt; {SIGNIFICANCE}, or a top-1 accuracy more than "
        f"{threshold:.0%} lower. <b>{regressions} regression(s)</b> in {len(table)} matched cells.</div></header>"
        + html_table(table, columns, "compare")
    )
    return page_html(f"{Path(run_b).name} vs {Path(run_a).name} - benchharness comparison", body, plotly=False)
