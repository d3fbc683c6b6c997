"""Model parallelism next to data parallelism on the CPU, in one run: pipeline (2 stages) and ddp (2 processes) against one process.

Runs a suite through the CLI as a user would (fresh cache): the small CNN and the MLP on
digits, each trained by a 2-stage pipeline (GPipe and 1F1B, 4 micro-batches) and by
DDP with 2 processes; each cell also trains the same model in one process under the same
launcher and threads. Prints the pipeline's training throughput against the unsplit model,
the stage balance, the bubble fraction (measured, and the schedule's theoretical one),
and DDP's scaling efficiency.

    .venv/bin/python benchmarks/parallelism.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchharness.store import RunDir

SUITE = """
name = "bench-parallelism"
models = ["small_cnn", "mlp"]
[data]
name = "digits"
[[techniques]]
steps = ["baseline"]
[[techniques]]
name = "pipeline-gpipe"
steps = ["pipeline"]
pipeline = { stages = 2, microbatches = 4, schedule = "gpipe" }
[[techniques]]
name = "pipeline-1f1b"
steps = ["pipeline"]
pipeline = { stages = 2, microbatches = 4, schedule = "1f1b" }
[[techniques]]
name = "ddp-2"
steps = ["ddp"]
ddp = { world_size = 2 }
[train]
epochs = 4
batch_size = 64
optimizer = "adam"
lr = 0.005
weight_decay = 0.0
[measure]
batch_sizes = [32]
min_rounds = 2
max_rounds = 3
"""


def main() -> None:
    """Run the suite and print the figures."""
    console = Console(width=150)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        suite = root / "parallelism.toml"
        suite.write_text(SUITE)
        command = [sys.executable, "-m", "benchharness.cli", "run", str(suite), "--out", str(root / "runs"), "--cache-dir", str(root / "cache")]
        subprocess.run(command, check=False, stdout=subprocess.DEVNULL)
        (run_dir,) = (root / "runs").iterdir()
        records = RunDir(run_dir).records()
    table = Table(title="training throughput on 2 CPU processes against 1 (same launcher, same threads per process)")
    for column in ("model", "technique", "top-1", "samples/s", "1 process samples/s", "speedup", "DDP efficiency", "stage FLOPs shares", "balance", "bubble measured", "bubble theoretical"):
        table.add_column(column)
    for record in records:
        notes, cell = record.get("notes") or {}, record["cell"]
        if cell["technique"] == "baseline":
            continue
        if record["status"] != "ok":
            table.add_row(cell["model"], cell["technique"], record["status"], record.get("error_message") or "")
            continue
        accuracy = f"{record['metrics']['accuracy_top1']:.1%}"
        if cell["technique"].startswith("pipeline"):
            shares = ", ".join(f"{share:.0%}" for share in notes["pipeline_stage_flops_share"])
            table.add_row(
                cell["model"], cell["technique"], accuracy, f"{notes['pipeline_samples_per_s']:.0f}", f"{notes['pipeline_unsplit_samples_per_s']:.0f}",
                f"{notes['pipeline_speedup']:.2f}x", "-", shares, f"{notes['pipeline_balance']:.2f}",
                f"{notes['pipeline_bubble_fraction']:.0%}", f"{notes['pipeline_bubble_fraction_theoretical']:.0%}",
            )
        else:
            table.add_row(
                cell["model"], cell["technique"], accuracy, f"{notes['ddp_samples_per_s']:.0f}", f"{notes['ddp_single_process_samples_per_s']:.0f}",
                f"{notes['ddp_speedup']:.2f}x", f"{notes['ddp_scaling_efficiency']:.0%}", "-", "-", "-", "-",
            )
    console.print(table)
    console.print("A pipeline splits one model across devices; on a 2-core CPU its stages mostly wait for each other and for gloo, "
                  "so it is not expected to beat one process: model parallelism is for models that do not fit one device.")


if __name__ == "__main__":
    main()
