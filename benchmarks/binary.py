"""Binary and ternary weights on the small CNN (digits): accuracy, packed size and latency against fp32, in one run.

Runs a suite through the CLI as a user would (fresh cache): the fp32 baseline, binary and
ternary weights with straight-through fine-tuning, with the quick suite's training budget.
Prints each pipeline's accuracy and its drop in points (target: binary within 3 points
of fp32), the binarised layers' packed bytes against their fp32 bytes (target: at most
1/20), the whole model's bits per weight, and the latency speedup measured in the same
interleaved rounds (no speedup is expected: PyTorch has no binary kernels).

    .venv/bin/python benchmarks/binary.py [--finetune-epochs 4]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchharness.store import RunDir

SUITE = """
name = "bench-binary"
models = ["small_cnn"]
[data]
name = "digits"
[[techniques]]
steps = ["baseline"]
[[techniques]]
name = "binary"
steps = ["quantize"]
quantize = {{ method = "binary", finetune_epochs = {epochs} }}
[[techniques]]
name = "ternary"
steps = ["quantize"]
quantize = {{ method = "ternary", finetune_epochs = {epochs} }}
[train]
epochs = 12
batch_size = 64
optimizer = "adam"
lr = 0.005
weight_decay = 0.0
schedule = "onecycle"
[measure]
batch_sizes = [1, 32]
"""


def main() -> None:
    """Run the suite and print the figures against the targets."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--finetune-epochs", type=int, default=4)
    arguments = parser.parse_args()
    console = Console(width=140)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        suite = root / "binary.toml"
        suite.write_text(SUITE.format(epochs=arguments.finetune_epochs))
        command = [sys.executable, "-m", "benchharness.cli", "run", str(suite), "--out", str(root / "runs"), "--cache-dir", str(root / "cache")]
        subprocess.run(command, check=False, stdout=subprocess.DEVNULL)
        (run_dir,) = (root / "runs").iterdir()
        records = {record["cell"]["technique"]: record for record in RunDir(run_dir).records()}
    reference = records["baseline"]["metrics"]["accuracy_top1"]
    table = Table(title=f"small_cnn on digits, fine-tuning {arguments.finetune_epochs} epochs")
    for column in ("pipeline", "top-1", "drop (points)", "layers' packed / fp32", "bits per weight", "model packed bytes", "speedup b1", "speedup b32", "expected"):
        table.add_column(column)
    for name, record in records.items():
        if record["status"] != "ok":
            table.add_row(name, record["status"], record.get("error_message") or "")
            continue
        metrics, notes = record["metrics"], record.get("notes") or {}
        packed, fp32 = notes.get(f"quantize_{name}_packed_bytes"), notes.get(f"quantize_{name}_fp32_bytes")
        ratio = f"1/{fp32 / packed:.1f}" if packed else "-"
        speedups = {entry["batch_size"]: entry.get("speedup_p50") for entry in record["latency"]}
        table.add_row(
            name, f"{metrics['accuracy_top1']:.1%}", f"{100 * (reference - metrics['accuracy_top1']):.1f}", ratio,
            f"{metrics['bits_per_weight']:.2f}", f"{metrics['size_packed_bytes']:,}",
            *(f"{speedups.get(size):.3f}x" if speedups.get(size) else "-" for size in (1, 32)), str(metrics["speedup_expected"]),
        )
    console.print(table)
    binary = records["binary"]
    if binary["status"] == "ok":
        drop = 100 * (reference - binary["metrics"]["accuracy_top1"])
        notes = binary["notes"]
        ratio = notes["quantize_binary_fp32_bytes"] / notes["quantize_binary_packed_bytes"]
        console.print(f"binary: {drop:.1f} points below fp32 (target <= 3: {'met' if drop <= 3 else 'MISSED'}); "
                      f"binarised layers packed 1/{ratio:.1f} of fp32 (target >= 20: {'met' if ratio >= 20 else 'MISSED'})")
        console.print(f"why no speedup: {binary['metrics']['speedup_reason']}")


if __name__ == "__main__":
    main()
