"""One tidy pandas frame per run: a row per cell and latency entry, with the comparison to the reference pipeline.

The frame is built from whatever the records hold: every metric, every note, every scalar
key a plugin or an executor added to the record, and every key of every latency entry, so
that plugins' data reaches ``report.csv`` and report sections without the report naming it.
docs/plugins.md ("The report frame") says where each column comes from.

The reference is the first ``[[techniques]]`` entry of the suite (``baseline`` in the
bundled suites): every other pipeline is compared with the reference cell of the same
model, device, machine, repeat and batch size.
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from benchharness.correctness import decode_correct_bits
from benchharness.record import CellRecord
from benchharness.stats import paired_accuracy_difference, unpaired_accuracy_difference
from benchharness.store import RunDir, SkippedLine

IDENTITY_COLUMNS = [
    "cell_id", "model", "technique", "recipe", "device", "host", "repeat", "status", "error_type", "error_message",
    "noisy", "noise_reason", "steps", "started_at", "wall_s",
]
METRIC_COLUMNS = [
    "accuracy_top1", "accuracy_samples", "size_bytes", "size_compressed_bytes", "size_packed_bytes", "bits_per_weight", "params", "params_nonzero", "flops",
    "inference_peak_bytes", "sparsity", "speedup_expected", "speedup_reason", "fast_flops_share", "speedup_bound", "train_s",
]
LATENCY_COLUMNS = [
    "batch_size", "threads", "latency_p50_ms", "latency_p50_ci95_low_ms", "latency_p50_ci95_high_ms", "latency_p90_ms", "latency_p99_ms",
    "latency_mean_ms", "latency_std_ms", "throughput_sps", "iterations", "rounds", "energy_j_per_sample", "gpu_throttled",
    "thread_speedup_p50", "parallel_efficiency",
]
RECORDED_COMPARISONS = [
    "speedup_p50", "speedup_ci95_low", "speedup_ci95_high", "speedup_rounds", "speedup_round_spread", "speedup_round_sd", "speedup_contradiction",
    "aa_speedup", "aa_speedup_ci95_low", "aa_speedup_ci95_high", "aa_speedup_rounds", "aa_speedup_round_spread", "aa_speedup_round_sd",
]
COMPARISON_COLUMNS = [
    "accuracy_delta", "accuracy_delta_ci95_low", "accuracy_delta_ci95_high", "accuracy_delta_method",
    "compression_ratio", "size_ratio", "flops_ratio",
]
RAW_COLUMNS = ["samples_ms", "accuracy_correct_bits"]
"""Columns left out of ``report.csv``: per-iteration latency samples and per-image right/wrong bits (they stay in results.jsonl)."""

COMPARISON_KEY = ["model", "recipe", "device", "host", "repeat", "threads", "batch_size"]
RECORDED_COMPARISON_PREFIXES = ("speedup_", "aa_")
RECORD_FIELDS = frozenset(item.name for item in fields(CellRecord))
NOTE_PREFIX, EXTRA_PREFIX = "note_", "extra_"


@dataclass
class Run:
    """A run directory's info and records."""

    path: Path
    """The run directory: ``run.json``, ``results.jsonl``, logs, and files techniques wrote under ``context.workdir``."""
    info: dict[str, Any]
    """``run.json``: the suite, the environment, the probes' facts, the plugins and the executor."""
    records: list[dict[str, Any]]
    """The complete records of ``results.jsonl``, one per cell, as written."""
    skipped: list[SkippedLine] = field(default_factory=list)
    """Lines of ``results.jsonl`` that are not usable records (torn or damaged), with why."""

    @cached_property
    def suite(self) -> dict[str, Any]:
        """The suite as run (its TOML text in ``run.json``, parsed once)."""
        from benchharness.suite import parse_toml

        return parse_toml(self.info["suite"]["text"], self.info["suite"]["source"])

    @property
    def techniques(self) -> list[str]:
        """The labels of the suite's technique pipelines, in the suite's order."""
        entries = self.suite.get("techniques") or [{"steps": ["baseline"]}]
        return [entry.get("name") or "+".join(entry.get("steps", [])) for entry in entries]

    @property
    def reference(self) -> str | None:
        """The label of the reference pipeline: the suite's first technique entry."""
        return self.techniques[0]


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


def _identity(record: dict[str, Any]) -> dict[str, Any]:
    cell = record.get("cell") or {}
    return {
        "cell_id": cell.get("id"), "model": cell.get("model"), "technique": cell.get("technique"), "recipe": cell.get("recipe"), "device": cell.get("device"),
        "host": timing_host(record), "repeat": cell.get("repeat"), "status": record.get("status"),
        "error_type": record.get("error_type"), "error_message": record.get("error_message"),
        "noisy": record.get("noisy"), "noise_reason": record.get("noise_reason"),
        "steps": " -> ".join(step.get("technique", "?") for step in cell.get("steps") or []),
        "started_at": record.get("started_at"), "wall_s": record.get("wall_s"),
    }


def _extras(record: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in record.items() if key not in RECORD_FIELDS and not isinstance(value, (dict, list, tuple))}


def _latency_group(key: str) -> str:
    return "comparisons" if key in RECORDED_COMPARISONS or key.startswith(RECORDED_COMPARISON_PREFIXES) else "latency"


def _is_list_column(values: pd.Series) -> bool:
    return values.dtype == object and any(isinstance(value, (list, tuple)) for value in values)


def tidy_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """A row per cell and latency entry (one row with empty measurements for a cell without latency), from whatever the records hold.

    Columns, in order: the cell's identity and outcome, every metric, every key of the latency
    entries (comparisons recorded with them, ``speedup_*`` and ``aa_*``, after the rest), every
    note (``note_<name>`` when the name is taken by another column), every scalar key a plugin or
    an executor added to the record (``extra_<name>`` when taken), and list-valued columns and
    :data:`RAW_COLUMNS` last. The columns of the constants above are always there (empty when no
    record has them), so that old records and empty runs give the same shape. A note or metric
    that is a dict stays a dict.
    """
    records = list(records)
    groups: dict[str, dict[str, None]] = {
        "metrics": dict.fromkeys(METRIC_COLUMNS), "latency": dict.fromkeys(LATENCY_COLUMNS),
        "comparisons": dict.fromkeys(RECORDED_COMPARISONS), "notes": {}, "extras": {},
    }
    for record in records:
        groups["metrics"].update(dict.fromkeys(record.get("metrics") or {}))
        for entry in record.get("latency") or []:
            for key in entry:
                groups[_latency_group(key)][key] = None
    taken = set(IDENTITY_COLUMNS) | set(COMPARISON_COLUMNS) | {key for name in ("metrics", "latency", "comparisons") for key in groups[name]}
    note_names: dict[str, str] = {}
    for record in records:
        for key in record.get("notes") or {}:
            note_names.setdefault(key, NOTE_PREFIX + key if key in taken else key)
    taken |= set(note_names.values())
    extra_names: dict[str, str] = {}
    for record in records:
        for key in _extras(record):
            extra_names.setdefault(key, EXTRA_PREFIX + key if key in taken else key)
    groups["notes"] = dict.fromkeys(note_names.values())
    groups["extras"] = dict.fromkeys(extra_names.values())

    rows = []
    for record in records:
        identity = _identity(record)
        base = {**(record.get("metrics") or {})}
        base.update({note_names[key]: value for key, value in (record.get("notes") or {}).items()})
        base.update({extra_names[key]: value for key, value in _extras(record).items()})
        for entry in record.get("latency") or [{}]:
            rows.append({**base, **entry, **identity})
    columns = list(dict.fromkeys(IDENTITY_COLUMNS + [key for group in groups.values() for key in group] + ["samples_ms"]))
    frame = pd.DataFrame(rows, columns=columns)
    raw = [column for column in columns if column in RAW_COLUMNS or _is_list_column(frame[column])]
    return frame[[column for column in columns if column not in raw] + raw]


def _correct_vector(bits: Any, samples: Any) -> np.ndarray | None:
    """The right/wrong vector of ``metrics.accuracy_correct_bits``, or None when there is none or it does not hold ``samples`` images."""
    if not isinstance(bits, str) or not isinstance(samples, numbers.Real) or not math.isfinite(samples):
        return None
    try:
        return decode_correct_bits(bits, int(samples))
    except ValueError:
        return None


def _accuracy_interval(pair: dict[str, Any]) -> tuple[float, float, str | None]:
    """CI of a cell's accuracy minus its reference's (``*_reference`` keys), paired when both carry bit vectors of one length."""
    correct = _correct_vector(pair["accuracy_correct_bits"], pair["accuracy_samples"])
    correct_reference = _correct_vector(pair["accuracy_correct_bits_reference"], pair["accuracy_samples_reference"])
    if correct is not None and correct_reference is not None and correct.size == correct_reference.size and correct.size:
        _, low, high = paired_accuracy_difference(correct_reference, correct)
        return low, high, "paired"
    numbers = pd.to_numeric(pd.Series([pair[key] for key in ("accuracy_top1_reference", "accuracy_samples_reference", "accuracy_top1", "accuracy_samples")]), errors="coerce")
    if numbers.isna().any() or numbers.iloc[1] <= 0 or numbers.iloc[3] <= 0:
        return math.nan, math.nan, None
    _, low, high = unpaired_accuracy_difference(*numbers.tolist())
    return low, high, "unpaired"


def _positive_ratio(numerator: pd.Series, denominator: pd.Series) -> pd.Series:
    numerator, denominator = pd.to_numeric(numerator, errors="coerce"), pd.to_numeric(denominator, errors="coerce")
    return (numerator / denominator).where((numerator > 0) & (denominator > 0))


def add_comparisons(frame: pd.DataFrame, reference: str | None) -> pd.DataFrame:
    """Add accuracy difference (with its 95% CI), compression, size and FLOPs ratios against the reference cell.

    Each ok row is matched, in one merge, with the ok reference row of the same model, recipe,
    device, host, repeat, thread count and batch size (a missing recipe or thread count matches a missing one). ``accuracy_delta`` is a fraction (this minus reference); its CI
    is paired (Agresti-Min) when both cells recorded ``accuracy_correct_bits`` of one length, and
    unpaired (Newcombe) otherwise, and ``accuracy_delta_method`` says which. ``compression_ratio``
    is reference size / this size, ``size_ratio`` its inverse, ``flops_ratio`` reference FLOPs /
    this FLOPs. The reference rows compare with themselves: Δ 0, ratios 1, speedup 1, no CIs.

    Speedups and their CIs come from the records: they were computed from the paired,
    interleaved rounds of the run, which a frame of summaries cannot redo.
    """
    frame = frame.copy()
    for column in RECORDED_COMPARISONS:
        if column in frame.columns and column != "speedup_contradiction":
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    compared = ["cell_id", "accuracy_top1", "accuracy_samples", "accuracy_correct_bits", "size_bytes", "flops"]
    values = frame.reindex(columns=COMPARISON_KEY + compared).assign(_row=np.arange(len(frame)))
    ok = (frame["status"] == "ok").to_numpy()
    is_reference = ok & (frame["technique"] == reference).to_numpy()
    references = values[is_reference].drop_duplicates(COMPARISON_KEY).drop(columns="_row")
    matched = values[ok].merge(references, on=COMPARISON_KEY, suffixes=("", "_reference"))

    pairs = matched.drop_duplicates(["cell_id", "cell_id_reference"]).to_dict("records")
    intervals = pd.DataFrame(
        [
            (pair["cell_id"], pair["cell_id_reference"], *((math.nan, math.nan, None) if pair["cell_id"] == pair["cell_id_reference"] else _accuracy_interval(pair)))
            for pair in pairs
        ],
        columns=["cell_id", "cell_id_reference", "accuracy_delta_ci95_low", "accuracy_delta_ci95_high", "accuracy_delta_method"],
    )
    matched = matched.merge(intervals, on=["cell_id", "cell_id_reference"], how="left")
    accuracy_delta = pd.to_numeric(matched["accuracy_top1"], errors="coerce") - pd.to_numeric(matched["accuracy_top1_reference"], errors="coerce")
    computed = pd.DataFrame({
        "accuracy_delta": accuracy_delta,
        "accuracy_delta_ci95_low": matched["accuracy_delta_ci95_low"].astype(float),
        "accuracy_delta_ci95_high": matched["accuracy_delta_ci95_high"].astype(float),
        "accuracy_delta_method": matched["accuracy_delta_method"].where(accuracy_delta.notna()).astype(object),
        "compression_ratio": _positive_ratio(matched["size_bytes_reference"], matched["size_bytes"]),
        "size_ratio": _positive_ratio(matched["size_bytes"], matched["size_bytes_reference"]),
        "flops_ratio": _positive_ratio(matched["flops_reference"], matched["flops"]),
    }).set_axis(matched["_row"].to_numpy()).reindex(range(len(frame)))
    for column in COMPARISON_COLUMNS:
        frame[column] = computed[column].to_numpy()
    if "speedup_p50" in frame.columns:
        frame.loc[is_reference, "speedup_p50"] = 1.0
    columns = [column for column in frame.columns if column not in COMPARISON_COLUMNS]
    at = columns.index("speedup_p50") if "speedup_p50" in columns else len(columns)
    return frame[columns[:at] + COMPARISON_COLUMNS + columns[at:]]


def trend_frame(runs: list[Run]) -> pd.DataFrame:
    """The comparisons frames of several runs of one suite, one under the other, oldest run first.

    Adds ``run`` (the run directory's name), ``run_created_at`` (a UTC timestamp; NaT when the run
    did not record it, sorted last) and ``run_commit`` (the first 12 characters of benchharness's
    git commit, or None), e.g. for a figure of speedups across runs.
    """
    dated = []
    for run in runs:
        created = pd.to_datetime(run.info.get("created_at"), utc=True, errors="coerce")
        commit = (run.info.get("environment") or {}).get("benchharness_git_commit")
        dated.append((created, run, commit[:12] if commit else None))
    dated.sort(key=lambda item: (pd.isna(item[0]), 0 if pd.isna(item[0]) else item[0].value, item[1].path.name))
    frames = []
    for created, run, commit in dated:
        frame = add_comparisons(tidy_frame(run.records), run.reference)
        frame.insert(0, "run_commit", commit)
        frame.insert(0, "run_created_at", created)
        frame.insert(0, "run", run.path.name)
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["run", "run_created_at", "run_commit"])
    return pd.concat(frames, ignore_index=True)


def _csv_value(value: Any) -> Any:
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, separators=(",", ":"), default=str)
    return value


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """The frame as CSV, without :data:`RAW_COLUMNS` (they stay in results.jsonl); lists and dicts as compact JSON text."""
    table = frame.drop(columns=[column for column in RAW_COLUMNS if column in frame.columns])
    for column in table.columns[(table.dtypes == object).to_numpy()]:
        table[column] = table[column].map(_csv_value)
    table.to_csv(path, index=False)
    return path


def _fact(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(item) for item in value)
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)


def describe_hardware(info: dict[str, Any]) -> list[str]:
    """One line per probe, for the report's header: CPU and GPU facts in words, other probes' facts as ``key=value``."""
    lines = []
    for name, facts in (info.get("probes") or {}).items():
        if not facts.get("available", True):
            lines.append(f"{name}: unavailable ({facts.get('reason', 'no reason given')})")
        elif "isa" in facts:
            lines.append(
                f"{name}: {facts.get('model')} - {facts.get('physical_cores')} physical / {facts.get('logical_cores')} logical cores, "
                f"{(facts.get('memory_bytes') or 0) / 2**30:.0f} GiB; ISA {' '.join(facts.get('isa') or []) or 'unknown'}; torch {facts.get('torch_cpu_capability')}"
            )
        elif "driver" in facts or {"name", "memory_bytes"} <= facts.keys():
            power = facts.get("power_limit_w")
            lines.append(
                f"{name}: {facts.get('name', '?')} - driver {facts.get('driver', '?')}, {(facts.get('memory_bytes') or 0) / 2**30:.0f} GiB"
                + (f", power limit {power:.0f} W" if power else "")
            )
        else:
            shown = " ".join(f"{key}={_fact(value)}" for key, value in facts.items() if key != "available")
            lines.append(f"{name}: {shown or 'no facts'}")
    return lines
