"""The report's scaling sections: multi-thread speedup and parallel efficiency, and GPU speedup over the CPU."""

from __future__ import annotations

import pandas as pd

from benchharness.report.sections import Report
from benchharness.report.tables import MISSING, Column, html_table, is_missing, significant

CELL_KEYS = ["model", "recipe", "technique", "batch_size"]


def _ratio(value) -> str:
    return MISSING if is_missing(value) else f"{significant(value)}x"


def thread_scaling(report: Report) -> pd.DataFrame:
    """A row per cell, batch size and thread count above the fewest: p50 at both counts, the multi-thread speedup and the parallel efficiency.

    The speedup is the record's (paired rounds: p50 at the fewest threads over p50 at this count).
    """
    counts = report.thread_counts
    ok = report.ok
    rows = ok[ok["threads"] > counts[0]] if len(counts) > 1 else ok.iloc[0:0]
    base = ok[ok["threads"] == counts[0]][["cell_id", "batch_size", "latency_p50_ms"]].rename(columns={"latency_p50_ms": "base_p50_ms"})
    merged = rows.merge(base, on=["cell_id", "batch_size"], how="left")
    return merged[["model", "recipe", "device", "technique", "batch_size", "threads", "base_p50_ms", "latency_p50_ms", "thread_speedup_p50", "parallel_efficiency"]]


def render_thread_scaling(frame: pd.DataFrame, report: Report) -> str | None:
    """Multi-thread speedup and parallel efficiency, when latency was timed at several thread counts."""
    counts = report.thread_counts
    if len(counts) < 2:
        return None
    table = thread_scaling(report)
    fewest = counts[0]
    columns = [
        Column("model", "model", text=True, sticky=True), Column("device", "device", text=True), Column("technique", "technique", text=True),
        Column("recipe", "recipe", text=True), Column("batch", "batch_size", html=lambda row: str(int(row["batch_size"]))),
        Column("threads", "threads", html=lambda row: str(int(row["threads"]))),
        Column(f"p50 ms at {fewest}", "base_p50_ms", html=lambda row: significant(row.get("base_p50_ms"))),
        Column("p50 ms", "latency_p50_ms", html=lambda row: significant(row.get("latency_p50_ms"))),
        Column("multi-thread speedup", "thread_speedup_p50", html=lambda row: _ratio(row.get("thread_speedup_p50")),
               title=f"p50 at {fewest} thread(s) over p50 at this count, from the paired rounds"),
        Column("parallel efficiency", "parallel_efficiency", html=lambda row: MISSING if is_missing(row.get("parallel_efficiency")) else f"{significant(row['parallel_efficiency'] * 100)}%",
               title=f"the speedup over the ideal (threads / {fewest})"),
    ]
    note = "<p class='note'>Every thread count was timed in the same interleaved rounds; a count above the CPUs the process had is flagged noisy.</p>"
    return note + html_table(table, [column for column in columns if column.key != "recipe" or report.recipes], "thread-scaling")


def gpu_speedup(report: Report) -> pd.DataFrame:
    """A row per cell that ran on both cpu and cuda: the CPU p50 over the GPU p50 at the same batch size (at each device's largest thread count)."""
    ok = report.ok
    if "threads" in ok and ok["threads"].nunique() > 1:
        ok = ok[ok["threads"] == ok["threads"].max()]
    keys = [key for key in CELL_KEYS if key in ok]
    cpu = ok[ok["device"] == "cpu"][keys + ["latency_p50_ms"]]
    gpu = ok[ok["device"] == "cuda"][keys + ["latency_p50_ms"]]
    merged = cpu.merge(gpu, on=keys, suffixes=("_cpu", "_gpu"))
    return merged.assign(gpu_speedup=merged["latency_p50_ms_cpu"] / merged["latency_p50_ms_gpu"])


def render_gpu_speedup(frame: pd.DataFrame, report: Report) -> str | None:
    """CPU time over GPU time for every cell that ran on both."""
    table = gpu_speedup(report)
    if table.empty:
        return None
    columns = [
        Column("model", "model", text=True, sticky=True), Column("technique", "technique", text=True), Column("recipe", "recipe", text=True),
        Column("batch", "batch_size", html=lambda row: str(int(row["batch_size"]))),
        Column("CPU p50 ms", "latency_p50_ms_cpu", html=lambda row: significant(row["latency_p50_ms_cpu"])),
        Column("GPU p50 ms", "latency_p50_ms_gpu", html=lambda row: significant(row["latency_p50_ms_gpu"])),
        Column("GPU speedup", "gpu_speedup", html=lambda row: _ratio(row["gpu_speedup"]), title="CPU p50 latency over GPU p50 latency, at the same batch size"),
    ]
    note = "<p class='note'>The two devices are timed in different groups (each against its own reference), so this ratio has no paired CI.</p>"
    return note + html_table(table, [column for column in columns if column.key != "recipe" or report.recipes], "gpu-speedup")
