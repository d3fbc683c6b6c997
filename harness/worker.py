"""What runs inside a cell's worker process: build, train, transform and measure one cell.

This module is preloaded into the forkserver (together with torch), so a
worker starts by forking an interpreter that has already imported everything.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
import torchvision  # noqa: F401  (preloaded for the forkserver)

import benchharness.plugins.cpu_probe  # noqa: F401
from benchharness.api import CellContext, Cell, Data, Probe
from benchharness.errors import Diverged, Unsupported
from benchharness.measure import count_flops, count_parameters, example_batch, serialized_size_bytes, summarise_latency, time_inference
from benchharness.host import PluginHost, PluginOptions
from benchharness.suite import Suite, split_model_name
from benchharness.train import Trainer, evaluate_accuracy

TRACEBACK_LINES = 40


@dataclass
class CellTask:
    """Everything a worker needs to run one cell; pickled to the worker."""

    cell: Cell
    suite: Suite
    plugins: PluginOptions
    workdir: Path


def failure_record(error: BaseException) -> dict[str, Any]:
    """The status fields of a record for a cell that raised ``error``."""
    tail = "".join(traceback.format_exception(error)).splitlines()[-TRACEBACK_LINES:]
    if isinstance(error, Unsupported):
        status, error_type = "skipped", "unsupported"
    elif isinstance(error, Diverged):
        status, error_type = "failed", "diverged"
    elif isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        status, error_type = "failed", "oom"
    else:
        status, error_type = "failed", "exception"
    return {"status": status, "error_type": error_type, "error_message": f"{type(error).__name__}: {error}", "traceback": "\n".join(tail)}


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def measure_model(model: torch.nn.Module, data: Data, suite: Suite, probe: Probe, device: torch.device) -> dict[str, Any]:
    """Accuracy, size, parameters, FLOPs, peak inference memory and latency at every batch size."""
    settings = suite.spec.measure
    inputs = data.x_test.to(device)
    accuracy = evaluate_accuracy(model, data, settings.eval_batch_size, device)
    params, params_nonzero = count_parameters(model)
    probe.reset_peak_memory()
    latency = [
        summarise_latency(time_inference(model, example_batch(inputs, size), settings, probe.synchronize), size)
        for size in settings.batch_sizes
    ]
    metrics = {
        "accuracy_top1": accuracy,
        "size_bytes": serialized_size_bytes(model),
        "params": params,
        "params_nonzero": params_nonzero,
        "flops": count_flops(model, inputs[:1]),
        "peak_mem_bytes": probe.peak_memory_bytes(),
    }
    return {"metrics": metrics, "latency": latency}


def execute(task: CellTask) -> dict[str, Any]:
    """Run the cell and return the measured part of its record (raises on failure)."""
    cell, suite = task.cell, task.suite
    host = PluginHost(task.plugins)
    probe = host.probes[cell.device]
    reason = probe.unavailable_reason()
    if reason:
        raise Unsupported(reason)
    steps = [(host.techniques[step.technique], step) for step in cell.steps]
    configs = [technique.Config.model_validate(step.config) for technique, step in steps]
    for (technique, step), config in zip(steps, configs):
        reason = technique.unsupported_reason(config, probe)
        if reason:
            raise Unsupported(f"{step.technique}: {reason}")
    threads = suite.spec.measure.threads or psutil.cpu_count(logical=False) or 1
    torch.set_num_threads(threads)
    _seed_everything(cell.seed)
    device = torch.device(probe.DEVICE)
    dataset = host.datasets[suite.spec.data.name]
    data = dataset.load(dataset.Config.model_validate(suite.data_config)).to(device)

    def build_model(name: str) -> torch.nn.Module:
        family, variant = split_model_name(name)
        return host.models[family].build(data.num_classes, data.input_shape, variant).to(device)

    model = build_model(cell.model)
    trainer = Trainer(suite.spec.train, device, cell.seed, probe.synchronize)
    context = CellContext(cell, suite, data, probe, device, trainer, build_model, workdir=task.workdir)
    step_records = []
    probe.reset_peak_memory()
    if not steps[0][0].TRAINS:
        trainer.fit(model, data)
        step_records.append({"step": "train", **measure_model(model, data, suite, probe, device)})
    for (technique, step), config in zip(steps, configs):
        model = technique.apply(model, config, context)
        step_records.append({"step": step.technique, **measure_model(model, data, suite, probe, device)})
    final = step_records[-1]
    for record in step_records[:-1]:
        for entry in record["latency"]:
            entry.pop("samples_ms")
    metrics = {**final["metrics"], "train_s": trainer.train_seconds, "train_samples": trainer.samples_seen}
    return {
        "status": "ok",
        "metrics": metrics,
        "latency": final["latency"],
        "steps": step_records,
        "notes": context.notes,
        "threads": torch.get_num_threads(),
        "torch_device": str(device),
    }


def ready() -> None:
    """A no-op worker: returns once the forkserver can fork workers with everything imported."""


def run_in_worker(task: CellTask, connection: Any, log_path: str) -> None:
    """Entry point of a worker process: run the cell, send its record, exit."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    started = time.perf_counter()
    try:
        result = execute(task)
    except BaseException as error:  # every failure becomes a record, never a lost cell
        traceback.print_exc()
        result = failure_record(error)
    result["worker_wall_s"] = time.perf_counter() - started
    sys.stdout.flush()
    sys.stderr.flush()
    connection.send(result)
    connection.close()
