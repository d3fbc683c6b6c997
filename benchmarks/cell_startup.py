"""Cell start-up overhead: forked workers with torch preloaded vs a fresh interpreter per cell.

Runs a trivial suite (synthetic data, no training, minimal timing) through the
real runner and reports each cell's isolation overhead: the runner's wall
time for the cell minus the time the worker spent inside the cell. Then it
times what a fresh interpreter would pay before it could start a cell
(importing torch and the harness), and prints the ratio.

    .venv/bin/python benchmarks/cell_startup.py [--cells 10]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from benchharness.host import PluginHost, PluginOptions
from benchharness.matrix import expand
from benchharness.runner import Runner
from benchharness.store import RunDir
from benchharness.suite import load_suite_text

SUITE = """
name = "startup"
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
threads = 1
"""


def fresh_interpreter_seconds(runs: int) -> list[float]:
    """Seconds a new interpreter needs to import torch and the harness's worker."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import benchharness.worker"], check=True)
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    """Measure both and print the figures side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=10)
    args = parser.parse_args()
    host = PluginHost(PluginOptions(entry_points=False))
    suite = load_suite_text(SUITE.format(cells=args.cells), "startup.toml", host)
    with tempfile.TemporaryDirectory() as out:
        run_dir = RunDir.create(Path(out), suite.name)
        Runner(suite, host, run_dir, Console(stderr=True, quiet=True)).run(expand(suite))
        records = run_dir.records()
    assert all(record["status"] == "ok" for record in records), [record.get("error_message") for record in records]
    overhead = [record["worker_overhead_s"] for record in records]
    fresh = fresh_interpreter_seconds(3)
    forked = statistics.median(overhead)
    print(f"cells measured:                       {len(overhead)}")
    print(f"isolation overhead per cell (forked): median {forked * 1000:.0f} ms, max {max(overhead) * 1000:.0f} ms")
    print(f"fresh interpreter importing torch:    median {statistics.median(fresh) * 1000:.0f} ms")
    print(f"ratio fresh / forked:                 {statistics.median(fresh) / forked:.1f}x")
    print(f"target (< 500 ms per cell):           {'met' if max(overhead) < 0.5 else 'NOT met'}")


if __name__ == "__main__":
    main()
