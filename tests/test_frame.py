"""The report frame: built from whatever the records hold, compared with the reference in one merge, written to CSV, and across runs."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchharness.correctness import encode_correct_bits
from benchharness.report.compare import compare_frames
from benchharness.report.frame import (
    RAW_COLUMNS, add_comparisons, describe_hardware, load_run, tidy_frame, trend_frame, write_csv,
)
from benchharness.stats import paired_accuracy_difference, unpaired_accuracy_difference
from tests.conftest import ROOT

FIXTURE = ROOT / "tests" / "fixtures" / "run-small"


@pytest.fixture
def records() -> list[dict]:
    """The fixture run's records as results.jsonl holds them (older records: no ``node``, no correct bits)."""
    return [json.loads(line) for line in (FIXTURE / "results.jsonl").read_text().splitlines()]


def by_id(records: list[dict], cell_id: str) -> dict:
    """The record of one cell."""
    (record,) = [record for record in records if record["cell"]["id"] == cell_id]
    return record


def correct_vector(accuracy: float, n: int, seed: int) -> np.ndarray:
    """A right/wrong vector of ``n`` images with ``round(accuracy * n)`` right, in a seeded order."""
    correct = np.zeros(n, dtype=bool)
    correct[: round(accuracy * n)] = True
    return np.random.default_rng(seed).permutation(correct)


def test_plugin_metric_note_and_extra_reach_the_frame_and_the_csv(records, tmp_path):
    """A plugin's metric, a note (a dict note too) and a top-level key an executor added are columns, in the CSV as well."""
    record = by_id(records, "mlp/channels-50/cpu/r0")
    record["metrics"]["weight_noise_snr_db"] = 17.5
    record["notes"]["observer_tag"] = "seen"
    record["notes"]["observer_detail"] = {"layers": 3, "kinds": ["linear"]}
    record["queue_wait_s"] = 2.25
    record["ray_node"] = {"ip": "10.0.0.1"}
    frame = add_comparisons(tidy_frame(records), "baseline")
    rows = frame[frame["cell_id"] == "mlp/channels-50/cpu/r0"]
    assert len(rows) == 2
    assert (rows["weight_noise_snr_db"] == 17.5).all() and (rows["observer_tag"] == "seen").all() and (rows["queue_wait_s"] == 2.25).all()
    assert rows["observer_detail"].iloc[0] == {"layers": 3, "kinds": ["linear"]}
    assert "ray_node" not in frame.columns, "only scalar top-level keys become columns"
    assert frame.loc[frame["cell_id"] != "mlp/channels-50/cpu/r0", "observer_tag"].isna().all()

    table = pd.read_csv(write_csv(frame, tmp_path / "report.csv"))
    assert len(table) == len(frame)
    row = table[table["cell_id"] == "mlp/channels-50/cpu/r0"].iloc[0]
    assert row["weight_noise_snr_db"] == 17.5 and row["observer_tag"] == "seen" and row["queue_wait_s"] == 2.25
    assert json.loads(row["observer_detail"]) == {"layers": 3, "kinds": ["linear"]}
    assert set(table.loc[table["cell_id"] == "mlp/pipeline/cpu/r0", "teacher"]) == {"small_cnn"}
    assert {"accuracy_delta", "accuracy_delta_ci95_low", "size_ratio", "speedup_p50", "trained_on"} <= set(table.columns)


def test_raw_columns_stay_in_the_frame_and_out_of_the_csv(records, tmp_path):
    """Latency samples and correct bits are in the frame, not in report.csv; other lists are there as compact JSON."""
    for record in records:
        if record["status"] == "ok":
            record["metrics"]["accuracy_correct_bits"] = encode_correct_bits(correct_vector(record["metrics"]["accuracy_top1"], 360, 0))
    frame = add_comparisons(tidy_frame(records), "baseline")
    assert set(RAW_COLUMNS) <= set(frame.columns) and {"samples_ms", "accuracy_correct_bits"} <= set(RAW_COLUMNS)
    assert frame.columns[-1] in RAW_COLUMNS and list(frame.columns).index("round_p50_ms") > list(frame.columns).index("trained_on")
    table = pd.read_csv(write_csv(frame, tmp_path / "report.csv"))
    assert not set(RAW_COLUMNS) & set(table.columns)
    first = table.dropna(subset=["round_p50_ms"]).iloc[0]
    assert first["round_p50_ms"].startswith("[") and ", " not in first["round_p50_ms"]
    assert json.loads(first["round_p50_ms"]) == pytest.approx(frame.dropna(subset=["batch_size"]).iloc[0]["round_p50_ms"])


def test_a_record_without_latency_is_one_row(records):
    """A failed cell, and a bare record with nothing but its cell and status, give one row each with empty measurements."""
    bare = {"cell": {"id": "mlp/bare/cpu/r0", "model": "mlp", "technique": "bare", "device": "cpu", "repeat": 0, "steps": []}, "status": "ok"}
    frame = add_comparisons(tidy_frame([by_id(records, "mlp/explode/cpu/r0"), bare]), "baseline")
    assert len(frame) == 2
    assert frame["batch_size"].isna().all() and frame["accuracy_delta"].isna().all()
    assert frame.loc[0, "error_type"] == "exception" and frame.loc[1, "steps"] == "" and frame.loc[1, "host"] == ""


def test_no_records_give_the_frame_its_columns():
    """An empty run has the same core columns as any other."""
    frame = add_comparisons(tidy_frame([]), "baseline")
    assert frame.empty and {"cell_id", "accuracy_top1", "batch_size", "latency_p50_ms", "speedup_p50", "accuracy_delta", "samples_ms"} <= set(frame.columns)


def test_notes_and_extras_that_collide_with_columns_are_prefixed(records):
    """A note named like a metric is ``note_<name>``, an extra named like a cell column ``extra_<name>``; the originals are untouched."""
    record = by_id(records, "small_cnn/pipeline/cpu/r0")
    record["notes"]["accuracy_top1"] = 0.5
    record["notes"]["batch_size"] = 7
    record["model"] = "not the cell's model"
    frame = tidy_frame(records)
    rows = frame[frame["cell_id"] == "small_cnn/pipeline/cpu/r0"]
    assert (rows["note_accuracy_top1"] == 0.5).all() and (rows["accuracy_top1"] == record["metrics"]["accuracy_top1"]).all()
    assert (rows["note_batch_size"] == 7).all() and sorted(rows["batch_size"]) == [1, 16]
    assert (rows["extra_model"] == "not the cell's model").all() and (rows["model"] == "small_cnn").all()
    assert "teacher" in frame.columns, "notes that collide with nothing keep their bare name"


def test_column_order_is_identity_metrics_latency_comparisons_notes_raw(records):
    """Identity first, then metrics, latency, comparisons, notes, and the raw lists last."""
    columns = list(add_comparisons(tidy_frame(records), "baseline").columns)
    assert columns[:7] == ["cell_id", "model", "technique", "recipe", "device", "host", "repeat"]
    order = [columns.index(name) for name in ("wall_s", "accuracy_top1", "batch_size", "latency_p50_ms", "accuracy_delta", "speedup_p50", "aa_speedup", "trained_on", "samples_ms")]
    assert order == sorted(order)


def test_paired_interval_when_both_cells_have_bits_unpaired_otherwise(records):
    """Bits of one length on both sides: Agresti-Min on the vectors; bits on one side or of another length: Newcombe on the accuracies."""
    for record in records:
        (record.get("metrics") or {}).pop("accuracy_correct_bits", None)
    reference_correct = correct_vector(0.9611111111111111, 360, 1)
    pruned_correct = reference_correct.copy()
    pruned_correct[np.flatnonzero(reference_correct)[:21]] = False
    by_id(records, "mlp/baseline/cpu/r0")["metrics"]["accuracy_correct_bits"] = encode_correct_bits(reference_correct)
    by_id(records, "mlp/channels-50/cpu/r0")["metrics"]["accuracy_correct_bits"] = encode_correct_bits(pruned_correct)
    by_id(records, "mlp/int8-static/cpu/r0")["metrics"]["accuracy_correct_bits"] = encode_correct_bits(np.ones(200, dtype=bool))
    frame = add_comparisons(tidy_frame(records), "baseline").set_index(["cell_id", "batch_size"])

    pruned = frame.loc[("mlp/channels-50/cpu/r0", 16)]
    estimate, low, high = paired_accuracy_difference(reference_correct, pruned_correct)
    assert pruned["accuracy_delta_method"] == "paired"
    assert pruned["accuracy_delta"] == pytest.approx(estimate) and pruned["accuracy_delta"] == pytest.approx(0.9027777777777778 - 0.9611111111111111)
    assert (pruned["accuracy_delta_ci95_low"], pruned["accuracy_delta_ci95_high"]) == pytest.approx((low, high))
    assert high < 0, "21 images lost and none gained is a real loss when the pairing is used"

    for cell_id in ("mlp/int8-static/cpu/r0", "mlp/pipeline/cpu/r0"):
        row = frame.loc[(cell_id, 1)]
        _, low, high = unpaired_accuracy_difference(0.9611111111111111, 360, row["accuracy_top1"], 360)
        assert row["accuracy_delta_method"] == "unpaired"
        assert (row["accuracy_delta_ci95_low"], row["accuracy_delta_ci95_high"]) == pytest.approx((low, high))
    reference = frame.loc[("mlp/baseline/cpu/r0", 1)]
    assert reference["accuracy_delta"] == 0 and np.isnan(reference["accuracy_delta_ci95_low"]) and pd.isna(reference["accuracy_delta_method"])


def test_ratios_against_the_reference_and_the_key_includes_the_host(records):
    """size_ratio is this / reference, compression its inverse; a cell timed on another machine has no reference to compare with."""
    by_id(records, "small_cnn/int8-static/cpu/r0")["node"] = {"hostname": "other", "timed_on": ["other"]}
    frame = add_comparisons(tidy_frame(records), "baseline").set_index(["cell_id", "batch_size"])
    pruned, reference = by_id(records, "mlp/channels-50/cpu/r0")["metrics"], by_id(records, "mlp/baseline/cpu/r0")["metrics"]
    row = frame.loc[("mlp/channels-50/cpu/r0", 1)]
    assert row["size_ratio"] == pytest.approx(pruned["size_bytes"] / reference["size_bytes"])
    assert row["compression_ratio"] == pytest.approx(reference["size_bytes"] / pruned["size_bytes"])
    assert row["flops_ratio"] == pytest.approx(reference["flops"] / pruned["flops"])
    assert frame.loc[("mlp/baseline/cpu/r0", 16), "speedup_p50"] == 1.0
    elsewhere = frame.loc[("small_cnn/int8-static/cpu/r0", 1)]
    assert np.isnan(elsewhere["accuracy_delta"]) and np.isnan(elsewhere["size_ratio"])
    assert frame.loc[("small_cnn/pipeline/cpu/r0", 1), "accuracy_delta"] == pytest.approx(0.9138888888888889 - 0.9944444444444445)


def test_compare_gives_nan_ratios_for_metrics_a_frame_lacks(records):
    """Old records have peak_mem_bytes, not inference_peak_bytes: its ratio is NaN, the others are computed."""
    for record in records:
        (record.get("metrics") or {}).pop("inference_peak_bytes", None)
    frame = tidy_frame(records)
    table = compare_frames(frame, frame)
    assert table["inference_peak_bytes_ratio"].isna().all() and np.allclose(table["size_bytes_ratio"], 1.0)
    assert not table["regression"].any()


def test_trend_frame_orders_runs_by_time(tmp_path):
    """Runs given newest first come out oldest first, each row labelled with its run, time and commit."""
    stamps = {"late": "2026-12-02T08:00:00+00:00", "early": "2026-11-30T08:00:00+00:00", "middle": "2026-12-01T09:30:00+01:00"}
    runs = []
    for name, created_at in stamps.items():
        path = tmp_path / name
        shutil.copytree(FIXTURE, path)
        info = json.loads((path / "run.json").read_text())
        info["created_at"] = created_at
        info["environment"]["benchharness_git_commit"] = f"{name:0<40}"[:40] if name != "middle" else None
        (path / "run.json").write_text(json.dumps(info))
        runs.append(load_run(path))
    trend = trend_frame(runs)
    assert list(trend.columns[:3]) == ["run", "run_created_at", "run_commit"]
    assert list(dict.fromkeys(trend["run"])) == ["early", "middle", "late"]
    assert trend["run_created_at"].is_monotonic_increasing
    assert trend.groupby("run")["run_commit"].first().to_dict() == {"early": "early0000000", "late": "late00000000", "middle": None}
    assert len(trend) == 3 * len(add_comparisons(tidy_frame(runs[0].records), runs[0].reference))
    assert trend.loc[trend["technique"] == "baseline", "speedup_p50"].dropna().eq(1.0).all()


def test_describe_hardware_shows_a_probe_without_device_facts_as_key_values():
    """A non-device probe is not a GPU with '?' facts; the CPU and GPU lines are unchanged."""
    info = json.loads((FIXTURE / "run.json").read_text())
    info["probes"] = {
        **info["probes"],
        "python_env": {"python": "3.11.7", "packages": 12, "extras": ["a", "b"], "available": True},
        "gpu": {"name": "NVIDIA H100", "driver": "580.1", "memory_bytes": 80 * 2**30, "power_limit_w": 700.0, "available": True},
    }
    lines = describe_hardware(info)
    assert "python_env: python=3.11.7 packages=12 extras=a,b" in lines
    assert "gpu: NVIDIA H100 - driver 580.1, 80 GiB, power limit 700 W" in lines
    assert any(line.startswith("cpu: ") and "ISA" in line for line in lines)
    assert not any("driver ?" in line for line in lines)
