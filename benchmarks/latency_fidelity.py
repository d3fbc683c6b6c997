"""Latency fidelity: the harness's p50 against torch.utils.benchmark's median, in the same fresh processes.

For each (model, batch size), one model is built and saved the way a cell saves
its final model. Every round is a fresh Python process that applies the
harness's controlled conditions (fixed malloc thresholds, pinned CPUs, fixed
threads), restores the file ``--group`` times (a group of that many cells, as
the harness's rounds restore one) and then alternates ``--blocks`` times
between the two methods, each timing for about ``--seconds``:

- the harness's own timing function (``benchharness.worker.time_batch_sizes``:
  the group's models in turns of ``interleave_ms``, shuffled cycles); the
  first model's median;
- ``torch.utils.benchmark.Timer`` on the first model alone, twice: one call
  per sample (``timeit(number=1)``), whose median is a per-iteration median
  like the harness's p50; and ``blocked_autorange``, whose median is a median
  of block means (blocks of many calls), to compare with the harness's mean.

The round's ratio is the median of the harness's block medians over the median
of torch's per-call ones. Both sides run in the same process, alternating every fraction of
a second, so the machine's drift (tens of percent between processes on a
shared VM, and from second to second) does not enter the ratio; what remains
is what the harness's timing itself adds or removes, turn switching included.
It prints each case's median ratio over the rounds; the target is 0.95-1.05.

    .venv/bin/python benchmarks/latency_fidelity.py [--rounds 3] [--group 3] [--blocks 6]
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


def one_round(artifact: str, batch: int, seconds: float, group: int, blocks: int) -> None:
    """In a fresh process: the harness's conditions, then both timings of the same model, alternating; prints their medians."""
    import torch
    import torch.utils.benchmark as benchmark

    from benchharness import conditions
    from benchharness.api import Probe
    from benchharness.artifact import load_model
    from benchharness.measure import example_batch
    from benchharness.suite import MeasureSettings
    from benchharness.worker import forward_at_largest_batch, time_batch_sizes

    settings = MeasureSettings(batch_sizes=[batch], warmup=3, min_iterations=3, min_seconds=seconds)
    threads = settings.thread_count()
    conditions.apply(None, threads)
    models, inputs = {}, {}
    for index in range(group):
        models[f"slot{index}"], inputs[f"slot{index}"] = load_model(Path(artifact), "cpu")
        forward_at_largest_batch(models[f"slot{index}"], inputs[f"slot{index}"], settings)
    first = models["slot0"].eval()
    batch_inputs = example_batch(inputs["slot0"], batch)

    def harness() -> list[float]:
        return time_batch_sizes(models, inputs, settings, Probe())["slot0"][0]["samples_ms"]

    def timer() -> benchmark.Timer:
        with torch.inference_mode():
            first(batch_inputs)
        return benchmark.Timer(stmt="model(x)", globals={"model": first, "x": batch_inputs}, num_threads=threads)

    def torch_blocked() -> float:
        with torch.inference_mode():
            return timer().blocked_autorange(min_run_time=seconds).median * 1000.0

    def torch_single() -> list[float]:
        found, clock = [], timer()
        with torch.inference_mode():
            while len(found) < 3 or sum(found) < seconds * 1000.0:
                found.append(clock.timeit(number=1).median * 1000.0)
        return found

    sides = {"harness_p50": [], "harness_mean": [], "torch_single": [], "torch_blocked": []}
    for block in range(blocks):
        for side in ("harness", "single", "blocked")[block % 3:] + ("harness", "single", "blocked")[: block % 3]:
            if side == "harness":
                samples = harness()
                sides["harness_p50"].append(statistics.median(samples))
                sides["harness_mean"].append(statistics.fmean(samples))
            elif side == "single":
                sides["torch_single"].append(statistics.median(torch_single()))
            else:
                sides["torch_blocked"].append(torch_blocked())
    print(json.dumps({name: statistics.median(values) for name, values in sides.items()}))


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
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per case (default 3)")
    parser.add_argument("--seconds", type=float, default=0.1, help="timed seconds per model and block (default 0.1)")
    parser.add_argument("--group", type=int, default=3, help="models restored and timed in turns, as in a group of this many cells (default 3)")
    parser.add_argument("--blocks", type=int, default=6, help="alternations of the three timings per process (default 6)")
    parser.add_argument("--child", nargs=5, metavar=("ARTIFACT", "BATCH", "SECONDS", "GROUP", "BLOCKS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        artifact, batch, seconds, group, blocks = args.child
        one_round(artifact, int(batch), float(seconds), int(group), int(blocks))
        return

    folder = Path(tempfile.mkdtemp(prefix="fidelity-"))
    print(f"group of {args.group} models timed in turns; {args.rounds} fresh processes per case, {args.blocks} alternations of {args.seconds} s blocks in each")
    print(f"{'model':<16}{'batch':>6}{'harness p50':>12}{'t.u.b p50':>11}{'ratio':>7}{'harness mean':>14}{'t.u.b blocked':>15}{'ratio':>7}  per-round p50 ratios")
    ratios_all = []
    for family, shape, batch in CASES:
        artifact = save_case(family, shape, batch, folder)
        rounds = []
        for _ in range(args.rounds):
            command = [sys.executable, __file__, "--child", str(artifact), str(batch), str(args.seconds), str(args.group), str(args.blocks)]
            rounds.append(json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]))
        p50_ratios = [r["harness_p50"] / r["torch_single"] for r in rounds]
        mean_ratios = [r["harness_mean"] / r["torch_blocked"] for r in rounds]
        ratio = statistics.median(p50_ratios)
        ratios_all.append(ratio)
        verdict = "ok" if 0.95 <= ratio <= 1.05 else "OUT OF 0.95-1.05"
        median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
        print(
            f"{family:<16}{batch:>6}{median['harness_p50']:>12.4f}{median['torch_single']:>11.4f}{ratio:>7.3f}"
            f"{median['harness_mean']:>14.4f}{median['torch_blocked']:>15.4f}{statistics.median(mean_ratios):>7.3f}  "
            + " ".join(f"{value:.3f}" for value in p50_ratios) + f"  {verdict}"
        )
    inside = sum(0.95 <= ratio <= 1.05 for ratio in ratios_all)
    print("p50 ratio: harness p50 / median of torch.utils.benchmark timeit(number=1) samples (both per-iteration medians);")
    print("mean ratio: harness mean / blocked_autorange's median, which is a median of block means (blocks of up to thousands of calls)")
    print(f"\n{inside} of {len(ratios_all)} p50 ratios within 0.95-1.05 (target: all)")


if __name__ == "__main__":
    main()
