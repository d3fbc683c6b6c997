"""Executor overhead: the same suite under `local`, `ray` and `slurm` (submitit's local cluster), side by side.

Part 1 runs suites of N and 2N tiny cells (no training, one timing iteration) under each
executor, alternating them over ``--rounds``, and prints the cost of one more cell and the
fixed start-up of a run; the goal for ray on one machine is at most 0.5 s per cell more
than `local`.

Part 2 runs a training-heavy suite (several models, so several groups) with Ray and one,
then two, groups at a time, and prints the wall time of each and how many cells were
flagged noisy: with two groups at once, one group's training overlaps the other's timing
rounds, and the harness should say so.

    .venv/bin/python benchmarks/executors.py [--rounds 2] [--cells 4] [--skip-overlap]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TINY = """
name = "tiny"
repeats = {cells}
models = ["mlp"]
[data]
name = "synthetic"
shape = [1, 8, 8]
train_samples = 64
test_samples = 64
[train]
epochs = 0
[measure]
batch_sizes = [1]
warmup = 0
min_iterations = 1
min_seconds = 0
min_rounds = 2
max_rounds = 2
threads = 1
"""

HEAVY = """
name = "heavy"
models = ["mlp", "small_cnn"]
repeats = 2
[data]
name = "digits"
[[techniques]]
steps = ["baseline"]
[[techniques]]
name = "prune-channels-50"
steps = ["prune"]
prune = {{ method = "channels", amount = 0.5, finetune_epochs = 2 }}
[train]
epochs = {epochs}
[measure]
batch_sizes = [1, 32]
threads = 1
"""

EXECUTOR_OPTIONS = {
    "local": [],
    "ray": ["--set", "run.ray.num_cpus=2"],
    "slurm": ["--set", 'run.slurm.cluster="local"'],
}


def run(suite: Path, out: Path, executor: str, *extra: str) -> tuple[float, list[dict]]:
    """Run ``suite`` with ``executor`` in a fresh process; (wall seconds, records)."""
    command = [sys.executable, "-m", "benchharness.cli", "run", str(suite), "--out", str(out), "--no-cache", "--executor", executor, *EXECUTOR_OPTIONS[executor], *extra]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    wall = time.perf_counter() - started
    runs = sorted(out.iterdir(), key=lambda path: path.stat().st_mtime)
    records = [json.loads(line) for line in (runs[-1] / "results.jsonl").read_text().splitlines()] if runs else []
    if done.returncode not in (0, 1) or not records:
        raise SystemExit(f"{executor} run failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return wall, records


def available(executor: str) -> bool:
    """Whether the executor's library is installed."""
    module = {"local": "json", "ray": "ray", "slurm": "submitit"}[executor]
    return subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode == 0


def per_cell_overhead(work: Path, rounds: int, cells: int, only: list[str] | None = None) -> None:
    """Part 1: the marginal wall time of a tiny cell under each executor (runs of N and 2N cells, alternating).

    Every executor runs one group at a time here, as `local` does. Fixed start-up (a Ray
    instance, a forkserver per Ray worker, the run's description) is paid
    once per run, so the per-cell cost is the slope between the two sizes. Slurm jobs take long
    enough that it runs only the smaller size; its figure is the whole wall time per cell.
    """
    executors = [name for name in EXECUTOR_OPTIONS if available(name) and (not only or name in only or name == "local")]
    sizes = {name: (cells,) if name == "slurm" else (cells, 2 * cells) for name in executors}
    walls: dict[tuple[str, int], list[float]] = {(name, size): [] for name in executors for size in sizes[name]}
    dispatch: dict[str, list[float]] = {name: [] for name in executors}
    for round_number in range(rounds):
        for name in executors:
            for size in sizes[name]:
                suite = work / f"tiny-{size}.toml"
                suite.write_text(TINY.format(cells=size))
                one_group_at_a_time = ["--set", f"run.{name}.parallel_groups=1"] if name != "local" else []
                wall, records = run(suite, work / f"tiny-{name}-{size}-{round_number}", name, *one_group_at_a_time)
                assert len(records) == size, f"{name}: {len(records)} records"
                walls[(name, size)].append(wall)
                dispatch[name] += [record["worker_overhead_s"] for record in records if record.get("worker_overhead_s") is not None]
                print(f"round {round_number + 1}: {name:>5}: {wall:6.1f} s for {size} cells", flush=True)
    print(f"\nper tiny cell (medians over {rounds} rounds; each cell is one build task and its share of 2 timing rounds):")
    slope = {}
    for name in executors:
        small = statistics.median(walls[(name, cells)])
        line = f"  {name:>5}: whole run {small:5.1f} s for {cells} cells"
        if len(sizes[name]) > 1:
            large = statistics.median(walls[(name, 2 * cells)])
            slope[name] = (large - small) / cells
            line += f", {large:5.1f} s for {2 * cells}: {slope[name]:.2f} s per extra cell, fixed start-up {small - cells * slope[name]:.1f} s"
        else:
            line += f" ({small / cells:.1f} s per cell, start-up included)"
        line += f"; build dispatch (record wall - worker wall) median {statistics.median(dispatch[name]):.2f} s"
        print(line)
    if "ray" in slope:
        extra = slope["ray"] - slope["local"]
        print(f"  ray against local: {extra:+.2f} s per extra cell (goal: at most 0.5 s: {'met' if extra <= 0.5 else 'NOT met'})")


def training_overlap(work: Path, epochs: int) -> None:
    """Part 2: a training-heavy suite with Ray, one and then two groups at a time."""
    if not available("ray"):
        print("\nray is not installed: part 2 skipped (pip install -e '.[ray]')")
        return
    suite = work / "heavy.toml"
    suite.write_text(HEAVY.format(epochs=epochs))
    print(f"\ntraining-heavy suite (2 models x 2 repeats = 4 groups of 2 pipelines, {epochs} epochs) with ray:")
    for parallel in (1, 2):
        wall, records = run(suite, work / f"heavy-{parallel}", "ray", "--set", f"run.ray.parallel_groups={parallel}")
        noisy = [record["cell"]["id"] for record in records if record.get("noisy")]
        print(f"  {parallel} group(s) at a time: {wall:6.1f} s; {len(noisy)} of {len(records)} cells flagged noisy" + (f" ({', '.join(noisy)})" if noisy else ""))


def main() -> None:
    """Run both parts and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cells", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--skip-overlap", action="store_true", help="only part 1")
    parser.add_argument("--only", nargs="*", choices=list(EXECUTOR_OPTIONS), help="executors to compare with local in part 1 (default: every installed one)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="executors-") as directory:
        work = Path(directory)
        per_cell_overhead(work, options.rounds, options.cells, options.only)
        if not options.skip_overlap:
            training_overlap(work, options.epochs)


if __name__ == "__main__":
    main()
