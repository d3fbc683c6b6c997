"""What the harness records for compression techniques vs the same technique applied by hand, in one run.

1. Static int8 (FX, x86) on the CIFAR ResNet-18 at batch 32: latency speedup and size ratio.
2. Channel pruning at 50% (Torch-Pruning) on the CIFAR ResNet-18: latency speedup, with the FLOPs ratio.
3. The artifact cache: a second run of an unchanged suite vs the first (a training-heavy one, and the quick suite).

The harness's figures come from real runs of the runner (records in results.jsonl);
the plain figures come from a minimal hand-written script timing the same
transformation with the same thread count. CPU only.

    .venv/bin/python benchmarks/techniques.py [--threads N]
"""

from __future__ import annotations

import argparse
import copy
import io
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import psutil
import torch
from rich.console import Console

from benchharness.host import PluginHost, PluginOptions
from benchharness.matrix import expand
from benchharness.plugins.cpu_probe import CpuProbe
from benchharness.plugins.models import ResNet18Cifar
from benchharness.runner import Runner
from benchharness.store import RunDir
from benchharness.suite import load_suite_text

COMPRESSION_SUITE = """
name = "bench-compression"
models = ["resnet18_cifar"]
[data]
name = "synthetic"
shape = [3, 32, 32]
train_samples = 256
test_samples = 64
[[techniques]]
steps = ["baseline"]
[[techniques]]
name = "int8-static"
steps = ["quantize"]
quantize = {{ method = "static", calibration_batches = 4 }}
[[techniques]]
name = "channels-50"
steps = ["prune"]
prune = {{ method = "channels", amount = 0.5 }}
[train]
epochs = 0
batch_size = 32
[measure]
batch_sizes = [32]
warmup = 5
min_iterations = 20
min_seconds = 2.0
threads = {threads}
"""

CACHE_SUITE = """
name = "bench-cache"
description = "CIFAR-shaped (synthetic 3x32x32) training-heavy suite: what the cache is for"
models = ["resnet18_cifar", "small_cnn"]
[data]
name = "synthetic"
shape = [3, 32, 32]
train_samples = 2048
test_samples = 256
[[techniques]]
steps = ["baseline"]
[[techniques]]
name = "channels-50-finetuned"
steps = ["prune"]
prune = {{ method = "channels", amount = 0.5, finetune_epochs = 1 }}
[[techniques]]
name = "distilled"
steps = ["distill"]
distill = {{ teacher = "resnet18_cifar" }}
[train]
epochs = 3
batch_size = 64
[measure]
batch_sizes = [1]
warmup = 2
min_iterations = 10
min_seconds = 0.05
threads = {threads}
[[exclude]]
model = "resnet18_cifar"
technique = "distilled"
"""


def run_suite(text: str, cache_dir: Path | None) -> tuple[dict[str, dict], float]:
    """Run a suite through the real runner; return records by technique and the wall time."""
    host = PluginHost(PluginOptions(entry_points=False))
    suite = load_suite_text(text, f"{text.split(chr(10))[1]}.toml", host)
    with tempfile.TemporaryDirectory() as out:
        run_dir = RunDir.create(Path(out), suite.name)
        started = time.perf_counter()
        Runner(suite, host, run_dir, Console(stderr=True, quiet=True), cache_dir=cache_dir).run(expand(suite))
        wall = time.perf_counter() - started
        records = run_dir.records()
    bad = [(r["cell"]["id"], r.get("error_message")) for r in records if r["status"] != "ok"]
    assert not bad, bad
    return {f"{r['cell']['model']}/{r['cell']['technique']}": r for r in records}, wall


def plain_latencies_ms(models: dict[str, torch.nn.Module], batch: torch.Tensor, seconds: float = 6.0, synchronize=lambda: None) -> dict[str, float]:
    """Median latency of each model, timed in interleaved rounds so that drift affects all of them alike (``synchronize`` waits for a GPU)."""
    samples: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for model in models.values():
            for _ in range(5):
                model(batch)
        synchronize()
        started = time.perf_counter()
        while time.perf_counter() - started < seconds or min(len(times) for times in samples.values()) < 20:
            for name, model in models.items():
                began = time.perf_counter()
                model(batch)
                synchronize()
                samples[name].append((time.perf_counter() - began) * 1000)
    return {name: statistics.median(times) for name, times in samples.items()}


def size_bytes(model: torch.nn.Module) -> int:
    """Serialized state-dict size."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


def plain_figures(threads: int) -> dict[str, float]:
    """Static int8 and 50% channel pruning done by hand on a fresh CIFAR ResNet-18, with the suite's own data.

    Calibration uses the same four training batches the harness uses, and latency the same test batch,
    so that only the harness's machinery differs.
    """
    import torch_pruning as tp
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    from benchharness.plugins.datasets import Synthetic

    torch.set_num_threads(threads)
    data = Synthetic().load(Synthetic.Config(shape=[3, 32, 32], train_samples=256, test_samples=64))
    torch.manual_seed(0)
    model = ResNet18Cifar().build(10, (3, 32, 32)).eval()
    batch = data.x_test[:32].contiguous()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.backends.quantized.engine = "x86"
        prepared = prepare_fx(copy.deepcopy(model), get_default_qconfig_mapping("x86"), (data.x_train[:1],))
        with torch.inference_mode():
            for start in range(0, 4 * 32, 32):
                prepared(data.x_train[start : start + 32])
        int8 = convert_fx(prepared)
    pruned = copy.deepcopy(model)
    base_macs, _ = tp.utils.count_ops_and_params(model, batch[:1])
    tp.pruner.BasePruner(pruned, batch[:1], importance=tp.importance.GroupMagnitudeImportance(p=1), pruning_ratio=0.5, ignored_layers=[pruned.fc]).step()
    pruned_macs, _ = tp.utils.count_ops_and_params(pruned, batch[:1])
    latency = plain_latencies_ms({"fp32": model, "int8": int8, "pruned": pruned}, batch)
    fp32_ms, int8_ms, pruned_ms = latency["fp32"], latency["int8"], latency["pruned"]
    return {
        "int8_speedup": fp32_ms / int8_ms,
        "int8_size_ratio": size_bytes(model) / size_bytes(int8),
        "prune_speedup": fp32_ms / pruned_ms,
        "prune_macs_ratio": base_macs / pruned_macs,
        "fp32_ms": fp32_ms,
        "int8_ms": int8_ms,
    }


def run_cli_once(workdir: Path, suite_text: str, name: str) -> tuple[float, list[dict]]:
    """Time one `benchharness run` of a suite, as a user would run it; return the wall time and records."""
    suite = workdir / f"{name}.toml"
    suite.write_text(suite_text)
    out = workdir / name
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "benchharness.cli", "run", str(suite), "--out", str(out), "--cache-dir", str(workdir / "cache")],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - started
    (run_path,) = out.iterdir()
    return wall, RunDir(run_path).records()


def line(label: str, harness: float, plain: float, target: float) -> str:
    """One comparison line with the 10% agreement check and the target."""
    agree = abs(harness / plain - 1) <= 0.10
    return f"{label:<34} harness {harness:5.2f}x   plain {plain:5.2f}x   within 10%: {'yes' if agree else 'NO'}   target >= {target}x: {'met' if harness >= target else 'NOT met'}"


def main() -> None:
    """Run the three comparisons and print them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=psutil.cpu_count(logical=False) or 1)
    parser.add_argument("--skip-cache", action="store_true", help="Only the compression comparisons (the cache part takes minutes).")
    args = parser.parse_args()
    cpu = CpuProbe().describe()
    print(f"CPU: {cpu['model']}, {cpu['physical_cores']} cores, ISA: {' '.join(cpu['isa'])}; torch capability {cpu['torch_cpu_capability']}; threads {args.threads}")

    records, _ = run_suite(COMPRESSION_SUITE.format(threads=args.threads), None)
    plain = plain_figures(args.threads)

    def p50(key: str) -> float:
        return records[key]["latency"][0]["latency_p50_ms"]

    base = "resnet18_cifar/baseline"
    int8, pruned = "resnet18_cifar/int8-static", "resnet18_cifar/channels-50"
    print(f"\nCIFAR ResNet-18, batch 32: fp32 p50 harness {p50(base):.1f} ms, plain {plain['fp32_ms']:.1f} ms; int8 p50 harness {p50(int8):.1f} ms, plain {plain['int8_ms']:.1f} ms")
    print(line("static int8 latency speedup", p50(base) / p50(int8), plain["int8_speedup"], 3.0))
    print(line("static int8 size ratio", records[base]["metrics"]["size_bytes"] / records[int8]["metrics"]["size_bytes"], plain["int8_size_ratio"], 3.9))
    print(line("channels 50% latency speedup", p50(base) / p50(pruned), plain["prune_speedup"], 1.5))
    harness_flops = records[base]["metrics"]["flops"] / records[pruned]["metrics"]["flops"]
    print(f"{'channels 50% FLOPs ratio':<34} harness {harness_flops:5.2f}x   plain MACs ratio {plain['prune_macs_ratio']:5.2f}x")
    print(f"speedup expected flags: int8 {records[int8]['metrics']['speedup_expected']}, channels {records[pruned]['metrics']['speedup_expected']}")

    if args.skip_cache:
        return
    quick = (Path(__file__).resolve().parent.parent / "suites" / "quick.toml").read_text()
    for label, text in (("training-heavy CIFAR-shaped suite", CACHE_SUITE.format(threads=args.threads)), ("suites/quick.toml", quick)):
        with tempfile.TemporaryDirectory() as workdir:
            first_s, first = run_cli_once(Path(workdir), text, "first")
            second_s, second = run_cli_once(Path(workdir), text, "second")
        trained_again = sum(record["metrics"]["train_samples"] for record in second if record["status"] == "ok")
        ratio = first_s / second_s
        print(
            f"\ncache, {label}: `benchharness run` twice as separate commands: first {first_s:.1f} s, second {second_s:.1f} s: "
            f"{ratio:.1f}x faster (target >= 10x: {'met' if ratio >= 10 else 'NOT met'}); samples trained in the second run: {trained_again}"
        )

if __name__ == "__main__":
    main()
