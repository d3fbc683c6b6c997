"""Does every recipe of suites/recipes.toml train, and does the suite fit its time budget?

Runs the suite through the CLI exactly as a user would (fresh artifact cache), then prints,
for every model and recipe, the final test accuracy, the best epoch's, the training time and
the status; a recipe below 90% is named as failing the target unless its cell is flagged
``diverged`` with the reason. Prints the suite's wall time against the 3-minute target and
the load other processes put on the machine while it ran.

    .venv/bin/python benchmarks/recipes.py [--suite suites/recipes.toml]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from rich.console import Console
from rich.table import Table

from benchharness.store import RunDir

TARGET_ACCURACY = 0.90
TARGET_SECONDS = 180.0


def run_suite(suite: Path, root: Path) -> tuple[Path, float, float]:
    """Run ``suite`` with a fresh cache under ``root``; its run directory, wall seconds and the machine's mean load per core meanwhile."""
    command = [sys.executable, "-m", "benchharness.cli", "run", str(suite), "--out", str(root / "runs"), "--cache-dir", str(root / "cache")]
    load_before = psutil.getloadavg()[0]
    started = time.perf_counter()
    subprocess.run(command, check=False, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    load = (psutil.getloadavg()[0] + load_before) / 2 / (psutil.cpu_count() or 1)
    (run_dir,) = (root / "runs").iterdir()
    return run_dir, wall, load


def verdict(record: dict) -> str:
    """Whether the cell meets the target: trained to 90%, or flagged diverged with its reason."""
    if record["status"] != "ok":
        reason = record.get("error_message") or ""
        return f"flagged {record.get('error_type')}: {reason[:60]}" if record.get("error_type") == "diverged" else f"FAILS: {record['status']} {reason[:60]}"
    accuracy = record["metrics"]["accuracy_top1"]
    return "meets the target" if accuracy >= TARGET_ACCURACY else f"FAILS: {accuracy:.1%} < {TARGET_ACCURACY:.0%}"


def main() -> None:
    """Run the suite and print every recipe's figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", type=Path, default=Path(__file__).resolve().parent.parent / "suites" / "recipes.toml")
    arguments = parser.parse_args()
    console = Console(width=140)
    with tempfile.TemporaryDirectory() as folder:
        run_dir, wall, load = run_suite(arguments.suite, Path(folder))
        records = RunDir(run_dir).records()
    table = Table(title=f"{arguments.suite.name}: {len(records)} cells")
    for column in ("model", "recipe", "top-1", "best epoch top-1", "train s", "verdict"):
        table.add_column(column)
    meeting = 0
    for record in records:
        curve = next((curve for curve in record.get("curves") or [] if curve["epochs"]), None)
        best = max((point["test_accuracy"] or 0.0 for point in curve["epochs"]), default=None) if curve else None
        metrics = record.get("metrics") or {}
        result = verdict(record)
        meeting += not result.startswith("FAILS")
        table.add_row(
            record["cell"]["model"], str(record["cell"].get("recipe")),
            f"{metrics['accuracy_top1']:.1%}" if "accuracy_top1" in metrics else "-",
            f"{best:.1%}" if best is not None else "-", f"{metrics.get('train_s', 0):.1f}", result,
        )
    console.print(table)
    console.print(f"{meeting} of {len(records)} cells meet the target (>= {TARGET_ACCURACY:.0%}, or flagged diverged with the reason)")
    console.print(f"wall time {wall:.0f} s against the {TARGET_SECONDS:.0f} s target ({wall / TARGET_SECONDS:.2f}x); mean load {load:.2f} per core while it ran")


if __name__ == "__main__":
    main()
