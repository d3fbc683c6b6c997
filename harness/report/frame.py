"""One tidy pandas frame per run: a row per cell and batch size, with the comparison to the reference pipeline.

The reference is the first ``[[techniques]]`` entry of the suite (``baseline`` in the
bundled suites): every other pipeline is compared with the reference cell of the same
model, device, repeat and batch size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchharness.store import RunDir, SkippedLine

CELL_COLUMNS = ["cell_id", "model", "technique", "device", "host", "repeat", "status", "error_type", "error_message", "noisy", "noise_reason"]
METRIC_COLUMNS = [
    "accuracy_top1", "accuracy_samples", "size_bytes", "size_compressed_bytes", "params", "params_nonzero", "flops", "peak_mem_bytes",
    "sparsity", "speedup_expected", "speedup_reason", "fast_flops_share", "speedup_bound", "train_s",
]
LATENCY_COLUMNS = [
    "batch_size", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "latency_mean_ms", "latency_std_ms",
    "latency_p50_ci95_low_ms", "latency_p50_ci95_high_ms", "throughput_sps", "iterations", "rounds", "energy_j_per_sample", "gpu_throttled",
]
RECORDED_COMPARISONS = [
    "speedup_p50", "speedup_ci95_low", "speedup_ci95_high", "speedup_round_spread", "speedup_round_sd", "speedup_contradiction",
    "aa_speedup", "aa_speedup_ci95_low", "aa_speedup_ci95_high",
]


@dataclass
class Run:
    """A run directory's info and records."""

    path: Path
    info: dict[str, Any]
    records: list[dict[str, Any]]
    skipped: list[SkippedLine] = field(default_factory=list)

    @property
    def reference(self) -> str | None:
        """The label of the reference pipeline: the suite's first technique entry."""
        from benchharness.suite import parse_toml

        techniques = parse_toml(self.info["suite"]["text"], self.info["suite"]["source"]).get("techniques") or [{"steps": ["baseline"]}]
        first = techniques[0]
        return first.get("name") or "+".join(first.get("steps", []))


def load_run(path: Path) -> Run:
    """Read a run directory, even one that is still running or was killed (complete records only)."""
    run_dir = RunDir.open(Path(path))
    info = run_dir.read_info()
    records, skipped = run_dir.read_records()
    return Run(run_dir.path, info, records, skipped)


def timing_host(record: dict[str, Any]) -> str:
    """The machine(s) a cell was timed on (where it was built, if it was never timed), or '' for records from before records said so."""
    node = record.get("node") or {}
    return ", ".join(node.get("timed_on") or []) or node.get("hostname") or ""


def tidy_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """A row per cell and batch size (one row with empty measurements for cells that did not finish)."""
    rows = []
    for record in records:
        cell = record["cell"]
        base = {
            "cell_id": cell["id"], "model": cell["model"], "technique": cell["technique"], "device": cell["device"],
            "repeat": cell["repeat"], "status": record["status"], "error_type": record.get("error_type"),
            "error_message": record.get("error_message"), "steps": " -> ".join(step["technique"] for step in cell["steps"]),
            "noisy": record.get("noisy"), "noise_reason": record.get("noise_reason"), "host": timing_host(record),
        }
        metrics = record.get("metrics") or {}
        base.update({column: metrics.get(column) for column in METRIC_COLUMNS})
        latency = record.get("latency") or [{}]
        for entry in latency:
            row = dict(base)
            row.update({column: entry.get(column) for column in LATENCY_COLUMNS + RECORDED_COMPARISONS})
            row["samples_ms"] = entry.get("samples_ms")
            rows.append(row)
    frame = pd.DataFrame(rows, columns=CELL_COLUMNS + ["steps"] + METRIC_COLUMNS + LATENCY_COLUMNS + RECORDED_COMPARISONS + ["samples_ms"])
    return frame


def add_comparisons(frame: pd.DataFrame, reference: str | None) -> pd.DataFrame:
    """Add accuracy difference, compression and FLOPs ratios against the reference cell.

    Speedups and their CIs come from the records: they were computed from the paired,
    interleaved rounds of the run, which a frame of summaries cannot redo.
    """
    frame = frame.copy()
    for column in ("accuracy_delta", "compression_ratio", "flops_ratio"):
        frame[column] = np.nan
    for column in RECORDED_COMPARISONS:
        if column != "speedup_contradiction":
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    is_reference = (frame["status"] == "ok") & (frame["technique"] == reference)
    frame.loc[is_reference, "speedup_p50"] = 1.0
    ok = frame[(frame["status"] == "ok") & (frame["technique"] == reference)]
    for index, row in frame[frame["status"] == "ok"].iterrows():
        match = ok[(ok["model"] == row["model"]) & (ok["device"] == row["device"]) & (ok["repeat"] == row["repeat"]) & (ok["batch_size"] == row["batch_size"])]
        if match.empty:
            continue
        base = match.iloc[0]
        frame.at[index, "accuracy_delta"] = row["accuracy_top1"] - base["accuracy_top1"]
        frame.at[index, "compression_ratio"] = base["size_bytes"] / row["size_bytes"]
        if row["flops"] and base["flops"]:
            frame.at[index, "flops_ratio"] = base["flops"] / row["flops"]
    return frame


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indexes of the points that no other point beats on both latency (lower) and accuracy (higher), by latency."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best_accuracy = [], -np.inf
    for index in order:
        if points[index][1] > best_accuracy:
            front.append(index)
            best_accuracy = points[index][1]
    return front


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """The frame as CSV (raw samples left out; they stay in results.jsonl)."""
    frame.drop(columns=["samples_ms"]).to_csv(path, index=False)
    return path


def describe_hardware(info: dict[str, Any]) -> list[str]:
    """One line per available probe, for the report's header."""
    lines = []
    for name, facts in (info.get("probes") or {}).items():
        if not facts.get("available", True):
            lines.append(f"{name}: unavailable ({facts.get('reason', 'no reason given')})")
        elif "isa" in facts:
            lines.append(
                f"{name}: {facts.get('model')} - {facts.get('physical_cores')} physical / {facts.get('logical_cores')} logical cores, "
                f"{(facts.get('memory_bytes') or 0) / 2**30:.0f} GiB; ISA {' '.join(facts.get('isa') or []) or 'unknown'}; torch {facts.get('torch_cpu_capability')}"
            )
        else:
            power = facts.get("power_limit_w")
            lines.append(
                f"{name}: {facts.get('name', '?')} - driver {facts.get('driver', '?')}, {(facts.get('memory_bytes') or 0) / 2**30:.0f} GiB"
                + (f", power limit {power:.0f} W" if power else "")
            )
    return lines
