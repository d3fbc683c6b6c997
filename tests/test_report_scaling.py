"""The report with recipes, learning curves, several thread counts, CPU and GPU cells, and low-bit storage."""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import pytest

from benchharness.report.frame import add_comparisons, load_run, tidy_frame
from benchharness.report.html import build_report, make_report
from benchharness.report.scaling import gpu_speedup, thread_scaling
from benchharness.report.training import curve_frame, learning_curves, recipe_frame
from tests.conftest import ROOT

FIXTURE = ROOT / "tests" / "fixtures" / "run-small"


def fixture_records() -> list[dict]:
    """The fixture run's records."""
    return [json.loads(line) for line in (FIXTURE / "results.jsonl").read_text().splitlines()]


def with_recipes(records: list[dict]) -> list[dict]:
    """Every record twice, once per recipe (ids renamed), the second recipe's baseline less accurate and with a falling curve."""
    found = []
    for recipe, shift in (("adam", 0.0), ("sgd", -0.05)):
        for record in copy.deepcopy(records):
            cell = record["cell"]
            model, rest = cell["id"].split("/", 1)
            cell["id"], cell["recipe"] = f"{model}/{recipe}/{rest}", recipe
            if record["status"] == "ok":
                record["metrics"]["accuracy_top1"] += shift
                record["curves"] = [{"label": "baseline", "epochs": [
                    {"epoch": epoch, "train_loss": 1.0 / epoch, "test_accuracy": 0.5 + 0.1 * epoch + shift} for epoch in (1, 2, 3)
                ]}]
            found.append(record)
    return found


def write_run(tmp_path: Path, records: list[dict]) -> Path:
    """A copy of the fixture run directory holding ``records``."""
    target = tmp_path / "run"
    shutil.copytree(FIXTURE, target)
    (target / "results.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    return target


def test_speedups_compare_within_a_recipe(tmp_path):
    """With recipes, each cell's accuracy difference is against the reference pipeline of its own recipe."""
    frame = add_comparisons(tidy_frame(with_recipes(fixture_records())), "baseline")
    ok = frame[(frame["status"] == "ok") & (frame["technique"] == "baseline")]
    assert set(ok["recipe"]) == {"adam", "sgd"}
    assert ok["accuracy_delta"].abs().max() == pytest.approx(0.0)
    plain = add_comparisons(tidy_frame(fixture_records()), "baseline")
    assert plain["recipe"].isna().all() and plain[plain["status"] == "ok"]["accuracy_delta"].notna().all()


def test_learning_curves_and_the_recipes_table(tmp_path):
    """The figure has a line per recipe and model for loss and accuracy; the table gives each recipe's difference from the reference recipe."""
    run = load_run(write_run(tmp_path, with_recipes(fixture_records())))
    curves = curve_frame(run.records, "baseline")
    assert set(curves["recipe"]) == {"adam", "sgd"} and set(curves["model"]) == {"mlp", "small_cnn"} and len(curves) == 2 * 2 * 3
    figure = learning_curves(curves)
    assert len([trace for trace in figure.data if trace.x[0] is not None]) == 2 * 2 * 2
    report = make_report(run)
    table = recipe_frame(report)
    sgd = table[(table["recipe"] == "sgd") & (table["technique"] == "baseline")]
    assert sgd["accuracy_vs_reference"].to_numpy() == pytest.approx([-0.05, -0.05])
    page = build_report(run)
    assert "Learning curves" in page and "Training recipes" in page and "recipe sgd" in page


def test_a_run_without_curves_or_recipes_has_neither_section(tmp_path):
    """Old records (no curves, no recipes) draw no learning curves and no recipes table."""
    page = build_report(load_run(write_run(tmp_path, fixture_records())))
    assert "Learning curves" not in re.sub(r"<script.*?</script>", "", page, flags=re.S) and "Training recipes" not in page


def with_threads(records: list[dict]) -> list[dict]:
    """Every latency entry at 1 and at 2 threads; at 2 threads half the latency and a recorded thread speedup of 2."""
    for record in records:
        entries = []
        for entry in record.get("latency") or []:
            one = {**entry, "threads": 1}
            two = {**entry, "threads": 2, "latency_p50_ms": entry["latency_p50_ms"] / 2, "thread_speedup_p50": 2.0, "parallel_efficiency": 1.0}
            entries += [one, two]
        if entries:
            record["latency"] = entries
    return records


def test_thread_scaling_table(tmp_path):
    """Every cell at 2 threads is compared with itself at 1 thread; answers use the largest count."""
    run = load_run(write_run(tmp_path, with_threads(fixture_records())))
    report = make_report(run)
    assert report.thread_counts == [1, 2]
    table = thread_scaling(report)
    assert set(table["threads"]) == {2} and (table["thread_speedup_p50"] == 2.0).all()
    assert (table["base_p50_ms"] / table["latency_p50_ms"]).to_numpy() == pytest.approx([2.0] * len(table))
    page = build_report(run)
    assert "Thread scaling" in page and "parallel efficiency" in page


def test_gpu_speedup_table(tmp_path):
    """A cell on cpu and on cuda gives CPU p50 over GPU p50 at each batch size."""
    records = fixture_records()
    gpu = copy.deepcopy(next(record for record in records if record["cell"]["id"] == "mlp/baseline/cpu/r0"))
    gpu["cell"]["id"], gpu["cell"]["device"] = "mlp/baseline/cuda/r0", "cuda"
    for entry in gpu["latency"]:
        entry["latency_p50_ms"] /= 4
    run = load_run(write_run(tmp_path, records + [gpu]))
    table = gpu_speedup(make_report(run))
    assert list(table["technique"]) == ["baseline", "baseline"] and table["gpu_speedup"].to_numpy() == pytest.approx([4.0, 4.0])
    assert "GPU speedup" in build_report(run)


def test_summary_table_shows_bits_per_weight_and_sparsity(tmp_path):
    """The results table has bits per weight and sparsity beside size and latency."""
    records = fixture_records()
    for record in records:
        if record["status"] == "ok":
            record["metrics"]["bits_per_weight"] = 1.73 if "channels" in record["cell"]["id"] else 32.0
    page = build_report(load_run(write_run(tmp_path, records)))
    assert "bits/weight" in page and ">1.73<" in page and ">zeros<" in page


def test_results_table_shows_compile_time_graph_breaks_and_recompilations(tmp_path):
    """A compiled cell's compile time and graph breaks show; recompilations only when some graph compiled while it was timed."""
    records = fixture_records()
    compiled = next(record for record in records if record["status"] == "ok" and "channels" in record["cell"]["id"])
    compiled["notes"] = {**(compiled.get("notes") or {}), "compile_s": 12.3, "compile_graph_breaks": 2}
    for entry in compiled["latency"]:
        entry["recompilations"] = 0
    page = build_report(load_run(write_run(tmp_path / "quiet", records)))
    assert ">compile s<" in page and ">12.3<" in page and ">graph breaks<" in page
    assert ">recompiled<" not in page
    compiled["latency"][0]["recompilations"] = 1.5
    assert ">recompiled<" in build_report(load_run(write_run(tmp_path / "recompiled", records)))
