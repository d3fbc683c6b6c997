"""Harness overhead: `benchharness run` against a plain script doing the same training and timing.

The suite trains the MLP and the small CNN on digits, quantizes both with
dynamic int8, and times everything. The plain script, started the same way
(a fresh interpreter), trains the same models with a minimal loop, evaluates
them, quantizes them and times as many forward passes at each batch size as
the harness did (every round, warm-up and A/A timing included, read from the
run's records). The two commands alternate over ``--rounds``; it prints the
median wall-time ratio (target: at most 1.10) and the build workers' median
start-up overhead (target: at most 0.1 s).

    .venv/bin/python benchmarks/overhead.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUITE = """
name = "overhead"
models = ["mlp", "small_cnn"]
[data]
name = "digits"
[[techniques]]
steps = ["baseline"]
[[techniques]]
name = "int8-dynamic"
steps = ["quantize"]
quantize = { method = "dynamic" }
[train]
epochs = 10
batch_size = 64
optimizer = "adam"
lr = 0.005
weight_decay = 0.0
schedule = "onecycle"
[measure]
batch_sizes = [1, 32]
warmup = 10
min_iterations = 20
min_seconds = 0.1
"""


def plain(plan_path: str) -> None:
    """The plain script: train, evaluate, quantize and time as many iterations as the plan says, nothing else."""
    import torch
    from torch import nn

    from benchharness.plugins.datasets import Digits, DigitsConfig
    from benchharness.plugins.models import MLP, SmallCNN

    plan = json.loads(Path(plan_path).read_text())
    torch.set_num_threads(plan["threads"])
    data = Digits().load(DigitsConfig())
    for name, family in (("mlp", MLP()), ("small_cnn", SmallCNN())):
        torch.manual_seed(0)
        model = family.build(data.num_classes, data.input_shape)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.005)
        steps_per_epoch = -(-data.x_train.shape[0] // 64)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.005, total_steps=10 * steps_per_epoch)
        for _ in range(10):
            order = torch.randperm(data.x_train.shape[0])
            for start in range(0, order.numel(), 64):
                index = order[start : start + 64]
                optimizer.zero_grad()
                nn.functional.cross_entropy(model(data.x_train[index]), data.y_train[index]).backward()
                optimizer.step()
                schedule.step()
        model.eval()
        with torch.inference_mode():
            (model(data.x_test).argmax(1) == data.y_test).float().mean()
        quantized = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
        for variant, network in (("baseline", model), ("int8-dynamic", quantized)):
            for batch_size, count in plan["iterations"][f"{name}/{variant}"].items():
                batch = data.x_test[: int(batch_size)]
                with torch.inference_mode():
                    for _ in range(count):
                        started = time.perf_counter()
                        network(batch)
                        time.perf_counter() - started


def timing_plan(run_dir: Path, warmup: int) -> dict:
    """Forward passes the harness ran per cell and batch size: samples of every round timed, warm-ups, the A/A copy."""
    iterations: dict[str, dict[str, int]] = {}
    records = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    for record in records:
        key = f"{record['cell']['model']}/{record['cell']['technique']}"
        copies = 2 if record["cell"]["technique"] == "baseline" else 1
        iterations[key] = {
            str(entry["batch_size"]): copies * (entry["iterations"] * entry["rounds_timed"] // max(entry["rounds"], 1) + (warmup + 1) * entry["rounds_timed"])
            for entry in record["latency"]
        }
    threads = json.loads((run_dir / "run.json").read_text())["conditions"]["threads"]
    return {"iterations": iterations, "threads": threads, "startup_s": [record.get("worker_overhead_s") for record in records]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--plain", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain:
        plain(args.plain)
        return
    work = Path(tempfile.mkdtemp(prefix="overhead-"))
    suite = work / "overhead.toml"
    suite.write_text(SUITE)
    harness_walls, plain_walls, startups = [], [], []
    for round_index in range(args.rounds):
        out = work / f"runs-{round_index}"
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "benchharness.cli", "run", str(suite), "--out", str(out), "--no-cache"], check=True, capture_output=True)
        harness_walls.append(time.perf_counter() - started)
        plan = timing_plan(next(out.iterdir()), warmup=10)
        startups += [value for value in plan["startup_s"] if value is not None]
        plan_path = work / f"plan-{round_index}.json"
        plan_path.write_text(json.dumps(plan))
        started = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--plain", str(plan_path)], check=True)
        plain_walls.append(time.perf_counter() - started)
        print(f"round {round_index + 1}: benchharness run {harness_walls[-1]:.1f} s, plain script {plain_walls[-1]:.1f} s, ratio {harness_walls[-1] / plain_walls[-1]:.2f}")
    ratio = statistics.median(h / p for h, p in zip(harness_walls, plain_walls))
    print(f"\nwall-time ratio (median): {ratio:.2f} (target: at most 1.10)")
    print(f"build-worker start-up overhead per cell: median {statistics.median(startups) * 1000:.0f} ms, max {max(startups) * 1000:.0f} ms (target: at most 100 ms)")


if __name__ == "__main__":
    main()
