"""Multi-thread speedup and parallel efficiency of small_cnn and the CIFAR ResNet-18, timed by the harness itself.

Each model (random weights, synthetic 3x32x32 inputs, no training) is saved the
way a cell saves its final model and timed as a group of one cell, exactly as
`benchharness run` times a suite with ``measure.threads = [1, 2]``: every
round is a fresh worker forked from the harness's forkserver (a
:class:`benchharness.tasks.TimingTask` run by the local executor); in it the
model and its A/A copy, each at 1 and at 2 threads, take turns of
``interleave_ms`` at each batch size (torch's threads switched before a turn at
another count); :class:`benchharness.rounds.GroupRounds` pairs the counts'
medians round by round.

Printed per model and batch size: the p50 at each count, the multi-thread
speedup (p50 at the fewest threads over p50 at the most: the geometric mean of
the per-round ratios, with its 95% t interval across rounds), the parallel
efficiency (speedup over the ideal, the ratio of the counts), the A/A control at
the most threads (the noise floor), and the most CPU other processes used
during a round. A count above the CPUs this process may use is timed but
marked "oversubscribed".

    .venv/bin/python benchmarks/threads.py [--rounds 5] [--min-seconds 0.3] [--threads 1,2] [--batch-sizes 1,32]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

MODELS = ("small_cnn", "resnet18_cifar")
INPUT_SHAPE = (3, 32, 32)


def save_models(folder: Path, largest_batch: int) -> dict[str, Path]:
    """Every model of ``MODELS``, freshly initialised (seed 0), saved with synthetic inputs as a cell saves its final model."""
    import torch

    from benchharness.artifact import save_model
    from benchharness.host import PluginHost, PluginOptions

    host = PluginHost(PluginOptions(entry_points=False))
    saved = {}
    for name in MODELS:
        torch.manual_seed(0)
        model = host.models[name].build(10, INPUT_SHAPE).eval()
        saved[name] = folder / f"{name}.pt"
        save_model(model, torch.randn(largest_batch, *INPUT_SHAPE), saved[name])
    return saved


def time_group(name: str, artifact: Path, settings, executor, folder: Path):
    """The harness's interleaved rounds of one model (and its A/A copy), each round in a fresh worker."""
    from benchharness.executor import TaskSpec
    from benchharness.host import PluginOptions
    from benchharness.rounds import Contender, GroupRounds
    from benchharness.tasks import TimingTask

    def time_round(slots):
        task = TimingTask([(slot, Path(contender.artifact)) for slot, contender in slots], "cpu", settings, PluginOptions(entry_points=False))
        spec = TaskSpec(task=task, log_path=folder / "logs" / f"{name}.log", name=f"timing {name}", kind="timing", device="cpu", timeout_s=1800.0)
        return executor.run(spec)

    return GroupRounds([Contender(name, str(artifact))], name, settings, time_round).run()


def describe_ci(low: float, high: float) -> str:
    """'1.52-1.61', or 'n/a' without an interval."""
    return "n/a" if low != low or high != high else f"{low:.2f}-{high:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (fresh processes) per model (default 5)")
    parser.add_argument("--min-seconds", type=float, default=0.3, help="timed seconds per model, thread count and batch size in a round (default 0.3)")
    parser.add_argument("--threads", default="1,2", help="thread counts, comma-separated (default 1,2)")
    parser.add_argument("--batch-sizes", default="1,32", help="batch sizes, comma-separated (default 1,32)")
    args = parser.parse_args()

    from benchharness.conditions import allowed_cpus, oversubscription_warning
    from benchharness.host import PluginHost, PluginOptions
    from benchharness.suite import MeasureSettings

    threads = [int(value) for value in args.threads.split(",")]
    batch_sizes = [int(value) for value in args.batch_sizes.split(",")]
    settings = MeasureSettings(
        batch_sizes=batch_sizes, threads=threads, warmup=5, min_iterations=10, min_seconds=args.min_seconds,
        min_rounds=args.rounds, max_rounds=args.rounds, max_seconds=3600.0,
    )
    warning = oversubscription_warning(threads)
    if warning:
        print(f"warning: {warning}")
    folder = Path(tempfile.mkdtemp(prefix="threads-"))
    executor = PluginHost(PluginOptions(entry_points=False)).executors["local"]
    try:
        artifacts = save_models(folder, max(batch_sizes))
        (folder / "logs").mkdir()
        executor.start(executor.Config(), folder)
        fewest, most = min(threads), max(threads)
        print(f"{args.rounds} rounds per model, each a fresh worker; turns of {settings.interleave_ms} ms at {threads} threads on CPUs {allowed_cpus()}")
        print(f"{'model':<16}{'batch':>6}{f'p50 {fewest}t ms':>12}{f'p50 {most}t ms':>12}{'speedup':>9}{'95% CI':>12}{'efficiency':>12}{f'A/A {most}t':>9}{'other cores':>13}")
        for name, artifact in artifacts.items():
            result = time_group(name, artifact, settings, executor, folder)
            outcome = result.outcomes[name]
            if outcome.failure is not None:
                print(f"{name:<16} timing failed: {outcome.failure.get('error_message')}")
                continue
            entries = {(entry["threads"], entry["batch_size"]): entry for entry in outcome.latency}
            for size in batch_sizes:
                base, entry = entries[(fewest, size)], entries[(most, size)]
                flag = "  oversubscribed" if entry.get("threads_oversubscribed") else ""
                print(
                    f"{name:<16}{size:>6}{base['latency_p50_ms']:>12.3f}{entry['latency_p50_ms']:>12.3f}{entry['thread_speedup_p50']:>9.2f}"
                    f"{describe_ci(entry['thread_speedup_ci95_low'], entry['thread_speedup_ci95_high']):>12}{entry['parallel_efficiency']:>12.2f}"
                    f"{entry['aa_speedup']:>9.3f}{max(entry['other_cores']):>13.2f}{flag}"
                )
            if outcome.noisy:
                print(f"{'':<16}noisy: {'; '.join(outcome.noise_reasons)}")
        print(f"speedup: p50 at {fewest} thread(s) / p50 at {most}, per round, geometric mean; efficiency: speedup / {most / fewest:g}")
    finally:
        executor.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
