"""Latency fidelity: the harness's p50 against torch.utils.benchmark's median, in interleaved rounds.

For each (model, batch size), one model is built and saved the way a cell saves
its final model. Then, in every round and in alternating order:

- the harness times it through its real path: a fresh worker forked from the
  preloaded server (``Runner.time_in_worker``), under the controlled
  conditions (fixed malloc thresholds, pinned CPUs, fixed threads);
- a fresh Python process applies the same conditions, loads the same file and
  asks ``torch.utils.benchmark.Timer.blocked_autorange`` for its median.

It prints each pair's median ratio over the rounds; the target is 0.95-1.05.

    .venv/bin/python benchmarks/latency_fidelity.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CASES = [("small_cnn", (1, 8, 8), 1), ("small_cnn", (1, 8, 8), 32), ("resnet18_cifar", (3, 32, 32), 32), ("mlp", (1, 8, 8), 32)]
SUITE = """
name = "fidelity"
models = ["mlp"]
[data]
name = "digits"
[measure]
batch_sizes = [{batch}]
warmup = 10
min_iterations = 50
min_seconds = {seconds}
"""


def torch_benchmark_median(artifact: str, batch: int, seconds: float) -> None:
    """In a fresh process: the same conditions as the harness's timing workers, then torch.utils.benchmark."""
    import torch
    import torch.utils.benchmark as benchmark

    from benchharness import conditions
    from benchharness.artifact import load_model
    from benchharness.measure import example_batch
    from benchharness.suite import MeasureSettings

    threads = MeasureSettings().thread_count()
    conditions.apply(None, threads)
    model, inputs = load_model(Path(artifact), "cpu")
    model.eval()
    batch_inputs = example_batch(inputs, batch)
    with torch.inference_mode():
        model(example_batch(inputs, inputs.shape[0]))
        timer = benchmark.Timer(stmt="model(x)", globals={"model": model, "x": batch_inputs}, num_threads=threads)
        measurement = timer.blocked_autorange(min_run_time=seconds)
    print(json.dumps({"median_ms": measurement.median * 1000.0}))


def save_case(family_name: str, shape: tuple[int, ...], batch: int, folder: Path) -> Path:
    """A freshly initialised model of the family, saved with its inputs as a cell saves its final model."""
    import torch

    from benchharness.artifact import save_model
    from benchharness.host import PluginHost, PluginOptions

    host = PluginHost(PluginOptions(entry_points=False))
    torch.manual_seed(0)
    model = host.models[family_name].build(10, shape).eval()
    path = folder / f"{family_name}-{batch}.pt"
    save_model(model, torch.randn(batch, *shape), path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.5, help="timed seconds per measurement")
    parser.add_argument("--child", nargs=3, metavar=("ARTIFACT", "BATCH", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        torch_benchmark_median(args.child[0], int(args.child[1]), float(args.child[2]))
        return

    from rich.console import Console

    from benchharness.host import PluginHost, PluginOptions
    from benchharness.rounds import Contender
    from benchharness.runner import Runner, start_workers
    from benchharness.store import RunDir
    from benchharness.suite import load_suite_text

    host = PluginHost(PluginOptions(entry_points=False))
    start_workers()
    folder = Path(tempfile.mkdtemp(prefix="fidelity-"))
    print(f"{'model':<16}{'batch':>6}{'harness p50 ms':>16}{'t.u.benchmark ms':>18}{'ratio':>8}  per-round ratios")
    ratios_all = []
    for family, shape, batch in CASES:
        artifact = save_case(family, shape, batch, folder)
        suite = load_suite_text(SUITE.format(batch=batch, seconds=args.seconds), "fidelity.toml", host)
        run_dir = RunDir.create(folder / "runs", f"{family}-{batch}")
        runner = Runner(suite, host, run_dir, Console(stderr=True, quiet=True))
        harness, reference = [], []
        for round_index in range(args.rounds):
            order = ("harness", "torch") if round_index % 2 == 0 else ("torch", "harness")
            for side in order:
                if side == "harness":
                    result = runner.time_in_worker(Contender(f"{family}-{batch}", str(artifact)), "cpu")
                    harness.append(statistics.median(result["timings"][0]["samples_ms"]))
                else:
                    output = subprocess.run(
                        [sys.executable, __file__, "--child", str(artifact), str(batch), str(args.seconds)], capture_output=True, text=True, check=True
                    )
                    reference.append(json.loads(output.stdout.strip().splitlines()[-1])["median_ms"])
        ratios = [a / b for a, b in zip(harness, reference)]
        ratio = statistics.median(ratios)
        ratios_all.append(ratio)
        verdict = "ok" if 0.95 <= ratio <= 1.05 else "OUT OF 0.95-1.05"
        print(
            f"{family:<16}{batch:>6}{statistics.median(harness):>16.4f}{statistics.median(reference):>18.4f}{ratio:>8.3f}  "
            + " ".join(f"{value:.3f}" for value in ratios) + f"  {verdict}"
        )
    inside = sum(0.95 <= ratio <= 1.05 for ratio in ratios_all)
    print(f"\n{inside} of {len(ratios_all)} ratios within 0.95-1.05 (target: all)")


if __name__ == "__main__":
    main()
