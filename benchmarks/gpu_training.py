"""Training speed of the harness: its trainer vs a minimal PyTorch loop, amp vs fp32, DDP scaling.

1. The harness's Trainer vs a minimal hand-written loop: same model, batch size, dtype
   (autocast), memory format, optimizer and CIFAR-shaped synthetic data kept on the device.
   Target: the trainer reaches at least 0.9x the loop's images/s.
2. amp: training and inference speedup of autocast (fp16 on CUDA, bf16 on CPU) over fp32,
   measured in the same run.
3. ddp: the scaling efficiency of 2 gloo processes against 1 on the CPU, as the harness records it.

On a GPU machine: python benchmarks/gpu_training.py   (50,000 images, CIFAR ResNet-18, batch 512)
CPU-sized:        python benchmarks/gpu_training.py --device cpu --images 2048 --model small_cnn --batch-size 128
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from torch import nn

from benchharness.api import Data
from benchharness.host import PluginHost, PluginOptions
from benchharness.matrix import expand
from benchharness.runner import Runner
from benchharness.store import RunDir
from benchharness.suite import TrainBudget, load_suite_text
from benchharness.train import Trainer

DDP_SUITE = """
name = "bench-ddp"
models = ["small_cnn"]
[data]
name = "synthetic"
shape = [3, 32, 32]
train_samples = 4096
test_samples = 256
[[techniques]]
steps = ["ddp"]
ddp = { world_size = 2 }
[train]
epochs = 2
batch_size = 128
[measure]
batch_sizes = [1]
warmup = 1
min_iterations = 3
min_seconds = 0
threads = 2
"""


def synchronize(device: torch.device) -> None:
    """Wait for the device."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def build(model_name: str, device: torch.device, channels_last: bool) -> nn.Module:
    """A fresh model of the built-in family, seeded."""
    torch.manual_seed(0)
    host = PluginHost(PluginOptions(entry_points=False))
    model = host.models[model_name].build(10, (3, 32, 32)).to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def plain_loop_images_per_s(model, inputs, targets, budget: TrainBudget, dtype, device) -> float:
    """One epoch of the most direct loop: shuffled index slices, autocast, SGD, OneCycle."""
    optimizer = torch.optim.SGD(model.parameters(), lr=budget.lr, momentum=budget.momentum, nesterov=True, weight_decay=budget.weight_decay)
    steps = -(-inputs.shape[0] // budget.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=budget.lr, total_steps=steps)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    criterion = nn.CrossEntropyLoss(label_smoothing=budget.label_smoothing)
    model.train()
    synchronize(device)
    started = time.perf_counter()
    order = torch.randperm(inputs.shape[0], device=device)
    for start in range(0, inputs.shape[0], budget.batch_size):
        index = order[start : start + budget.batch_size]
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = criterion(model(inputs[index]), targets[index])
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        schedule.step()
    synchronize(device)
    return inputs.shape[0] / (time.perf_counter() - started)


def trainer_images_per_s(model, data: Data, budget: TrainBudget, dtype, device) -> float:
    """One epoch of the harness's Trainer under the same settings."""
    trainer = Trainer(budget, device, 0, lambda: synchronize(device))
    trainer.autocast_dtype = dtype
    trainer.fit(model, data, epochs=1)
    return trainer.samples_seen / trainer.train_seconds


def inference_images_per_s(model, inputs, dtype, device, batch_size: int, iterations: int = 20) -> float:
    """Inference throughput under autocast (or fp32)."""
    model.eval()
    batch = inputs[:batch_size]
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        for _ in range(3):
            model(batch)
        synchronize(device)
        started = time.perf_counter()
        for _ in range(iterations):
            model(batch)
        synchronize(device)
    return batch_size * iterations / (time.perf_counter() - started)


def main() -> None:
    """Run the three comparisons and print them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--model", default="resnet18_cifar")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--skip-ddp", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    channels_last = device.type == "cuda"
    budget = TrainBudget(epochs=1, batch_size=args.batch_size, lr=0.4, label_smoothing=0.1, channels_last=channels_last)
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(args.images, 3, 32, 32, generator=generator).to(device)
    if channels_last:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    targets = torch.randint(10, (args.images,), generator=generator).to(device)
    data = Data("synthetic", inputs, targets, inputs[:1024], targets[:1024], 10)
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU"
    print(f"{name}: {args.model}, {args.images} CIFAR-shaped images on the device, batch {args.batch_size}, channels_last {channels_last}")

    results = {}
    for label, dtype in (("fp32", None), (str(amp_dtype).replace("torch.", ""), amp_dtype)):
        plain_loop_images_per_s(build(args.model, device, channels_last), inputs[: args.batch_size * 4], targets[: args.batch_size * 4], budget, dtype, device)
        plain = plain_loop_images_per_s(build(args.model, device, channels_last), inputs, targets, budget, dtype, device)
        harness = trainer_images_per_s(build(args.model, device, channels_last), data, budget, dtype, device)
        inference = inference_images_per_s(build(args.model, device, channels_last), inputs, dtype, device, args.batch_size)
        results[label] = (plain, harness, inference)
        verdict = "met" if harness >= 0.9 * plain else "NOT met"
        print(f"{label:>9} training: trainer {harness:9.0f} img/s, minimal loop {plain:9.0f} img/s, ratio {harness / plain:.2f} (target >= 0.9: {verdict})")
    (fp32_plain, fp32_harness, fp32_inference), (_, amp_harness, amp_inference) = results.values()
    print(f"amp vs fp32 (same run): training {amp_harness / fp32_harness:.2f}x, inference {amp_inference / fp32_inference:.2f}x")

    if not args.skip_ddp:
        host = PluginHost(PluginOptions(entry_points=False))
        suite = load_suite_text(DDP_SUITE, "bench-ddp.toml", host)
        with tempfile.TemporaryDirectory() as out:
            run_dir = RunDir.create(Path(out), suite.name)
            Runner(suite, host, run_dir, Console(stderr=True, quiet=True)).run(expand(suite))
            (record,) = run_dir.records()
        notes = record["notes"]
        print(
            f"ddp on CPU (gloo, {notes['ddp_threads_per_process']} thread per process, small_cnn, 4096 images): "
            f"1 process {notes['ddp_single_process_samples_per_s']:.0f} img/s, 2 processes {notes['ddp_samples_per_s']:.0f} img/s, "
            f"speedup {notes['ddp_speedup']:.2f}x, scaling efficiency {notes['ddp_scaling_efficiency']:.2f}"
        )


if __name__ == "__main__":
    main()
