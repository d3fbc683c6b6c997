"""What runs inside a cell's worker process: build, train, transform and measure one cell.

This module is preloaded into the forkserver (together with torch), so a
worker starts by forking an interpreter that has already imported everything.
"""

from __future__ import annotations

import faulthandler
import importlib
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
import torch
import torchvision  # noqa: F401  (preloaded for the forkserver)

from benchharness.api import Cell, CellContext, Data, Probe, Step, Technique
from benchharness.cache import ArtifactCache, cache_key, library_versions
from benchharness.errors import Diverged, Unsupported
from benchharness.measure import count_flops, example_batch, size_metrics, summarise_latency, time_inference
from benchharness.representation import count_parameters, inspect_representation
from benchharness.host import DEFAULT_PLUGINS, PluginHost, PluginOptions
from benchharness.suite import Suite, split_model_name
from benchharness.train import Trainer, evaluate_accuracy, to_memory_format

TRACEBACK_LINES = 40


def preload_builtin_plugins() -> None:
    """Import the built-in plugins and the libraries they name in ``PRELOAD``, once, in the forkserver."""
    for name in DEFAULT_PLUGINS:
        module = importlib.import_module(name)
        for library in getattr(module, "PRELOAD", ()):
            try:
                importlib.import_module(library)
            except ImportError:
                pass


preload_builtin_plugins()


@dataclass
class CellTask:
    """Everything a worker needs to run one cell; pickled to the worker."""

    cell: Cell
    suite: Suite
    plugins: PluginOptions
    workdir: Path
    cache_dir: Path | None = None


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


def time_batch_size(model: torch.nn.Module, inputs: torch.Tensor, size: int, settings: Any, probe: Probe) -> dict[str, Any]:
    """Latency statistics at one batch size, with the probe's samples (power, energy, throttling) taken meanwhile."""
    with probe.sample() as samples:
        times = time_inference(model, example_batch(inputs, size), settings, probe.synchronize)
    entry = summarise_latency(times, size)
    entry.update(samples)
    if "energy_j" in samples:
        entry["energy_j_per_sample"] = samples["energy_j"] / ((settings.warmup + len(times)) * size)
    return entry


def measure_model(model: torch.nn.Module, data: Data, suite: Suite, probe: Probe, device: torch.device, reference_params: int) -> dict[str, Any]:
    """Accuracy, size, parameters, FLOPs, representation, peak inference memory and latency at every batch size."""
    settings = suite.spec.measure
    representation = inspect_representation(model, reference_params)
    channels_last = suite.spec.train.channels_last
    if channels_last and not representation["quantized_modules"]:
        model.to(memory_format=torch.channels_last)
    inputs = to_memory_format(data.x_test.to(device), channels_last)
    accuracy = evaluate_accuracy(model, data, settings.eval_batch_size, device)
    probe.reset_peak_memory()
    latency = [time_batch_size(model, inputs, size, settings, probe) for size in settings.batch_sizes]
    metrics = {
        "accuracy_top1": accuracy,
        **size_metrics(model),
        "flops": count_flops(model, inputs[:1]),
        "peak_mem_bytes": probe.peak_memory_bytes(),
        **representation,
    }
    if any("gpu_throttled" in entry for entry in latency):
        metrics["gpu_throttled"] = any(entry.get("gpu_throttled") for entry in latency)
    return {"metrics": metrics, "latency": latency}


class TrainStep(Technique):
    """The training that precedes a pipeline whose first step does not train (cached like baseline)."""

    NAME = "train"
    TRAINS = True
    CACHE_AS = "train"

    def apply(self, model, config, context):
        return context.trainer.fit(model, context.data)

    def cacheable(self, config):
        return True


class CellRun:
    """One cell's pipeline in its worker: steps applied in order, restored from the cache where possible."""

    def __init__(self, task: CellTask):
        self.task = task
        self.cell, self.suite = task.cell, task.suite
        self.host = PluginHost(task.plugins)
        self.probe = self.host.probes[self.cell.device]
        self.device = torch.device(self.probe.DEVICE)
        self.cache = ArtifactCache(task.cache_dir) if task.cache_dir else None
        self.cache_hits: list[str] = []
        self.trainer = Trainer(self.suite.spec.train, self.device, self.cell.seed, self.probe.synchronize)
        self.data: Data | None = None
        self.notes: dict[str, Any] = {}

    def lineage_root(self, model_name: str) -> dict[str, Any]:
        """What determines a freshly initialised, untrained model of this cell.

        The device is not part of it: a model trained on the GPU is reused by the same cell on
        the CPU (``notes.trained_on`` says where it was trained).
        """
        suite = self.suite
        return {
            "model": model_name,
            "data": {"name": suite.spec.data.name, **suite.data_config},
            "train": suite.spec.train.model_dump(mode="json"),
            "seed": self.cell.seed,
            "versions": library_versions(),
        }

    def fresh_model(self, name: str) -> torch.nn.Module:
        """A newly initialised model, seeded like the cell."""
        _seed_everything(self.cell.seed)
        family, variant = split_model_name(name)
        return self.host.models[family].build(self.data.num_classes, self.data.input_shape, variant).to(self.device)

    def apply_step(self, model, technique: Technique, config, context, lineage: list[dict[str, Any]], label: str):
        """Apply one step, or restore its cached result; returns the model and the step's lineage."""
        step_name = technique.CACHE_AS or technique.NAME
        lineage = lineage + [{"step": step_name, "config": config.model_dump(mode="json")}]
        use_cache = self.cache is not None and technique.cacheable(config)
        key = cache_key(lineage) if use_cache else None
        entry = self.cache.load(key) if use_cache else None
        if entry is not None:
            model = technique.restore(model, config, context, entry["state"])
            context.notes.update(entry["notes"])
            self.cache_hits.append(label)
        else:
            notes_before, samples_before = dict(context.notes), self.trainer.samples_seen
            model = technique.apply(model, config, context)
            if self.trainer.samples_seen > samples_before:
                context.notes["trained_on"] = self.probe.DEVICE
            if use_cache:
                notes = {name: value for name, value in context.notes.items() if notes_before.get(name, object()) != value}
                description = f"{step_name} of {lineage[0]['model']} on {lineage[0]['data']['name']}"
                self.cache.save(key, {"state": technique.cache_state(model, config), "notes": notes}, description)
        return model, lineage

    def trained_model(self, name: str) -> torch.nn.Module:
        """``name`` trained with the suite's budget (the same artifact as that model's baseline cell)."""
        model = self.fresh_model(name)
        context = self.context()
        model, _ = self.apply_step(model, TrainStep(), TrainStep.Config(), context, [self.lineage_root(name)], f"train:{name}")
        return model.eval()

    def context(self) -> CellContext:
        """The context techniques see."""
        return CellContext(
            self.cell, self.suite, self.data, self.probe, self.device, self.trainer, self.fresh_model, self.trained_model,
            notes=self.notes, workdir=self.task.workdir, plugin_options=self.task.plugins,
        )

    def check_supported(self) -> None:
        """Raise :class:`Unsupported` when the device or a step cannot run here."""
        reason = self.host.skip_reason(self.cell)
        if reason:
            raise Unsupported(reason)

    def prepare(self) -> CellContext:
        """Set threads, load the data onto the device and return the techniques' context."""
        torch.set_num_threads(self.suite.spec.measure.thread_count())
        dataset = self.host.datasets[self.suite.spec.data.name]
        self.data = dataset.load(dataset.Config.model_validate(self.suite.data_config)).to(self.device)
        return self.context()

    def execute(self) -> dict[str, Any]:
        """Run the cell and return the measured part of its record (raises on failure)."""
        cell, suite, probe = self.cell, self.suite, self.probe
        self.check_supported()
        context = self.prepare()
        steps = [(self.host.techniques[step.technique], step) for step in cell.steps]
        configs = [technique.Config.model_validate(step.config) for technique, step in steps]
        model = self.fresh_model(cell.model)
        reference_params = count_parameters(model)[0]
        if not steps[0][0].TRAINS:
            steps.insert(0, (TrainStep(), Step("train")))
            configs.insert(0, TrainStep.Config())
        lineage = [self.lineage_root(cell.model)]
        step_records: list[dict[str, Any]] = []
        for (technique, step), config in zip(steps, configs):
            model, lineage = self.apply_step(model, technique, config, context, lineage, step.technique)
            measured = measure_model(model, self.data, suite, probe, self.device, reference_params)
            if measured["metrics"]["quantized_modules"] and step_records:
                measured["metrics"]["flops"] = step_records[-1]["metrics"]["flops"]
                measured["metrics"]["flops_note"] = "FLOPs of the float model before quantization; int8 kernels are not counted by torch.utils.flop_counter"
            step_records.append({"step": step.technique, "cached": step.technique in self.cache_hits, **measured})
        final = step_records[-1]
        for record in step_records[:-1]:
            for entry in record["latency"]:
                entry.pop("samples_ms")
        metrics = {**final["metrics"], "train_s": self.trainer.train_seconds, "train_samples": self.trainer.samples_seen}
        return {
            "status": "ok",
            "metrics": metrics,
            "latency": final["latency"],
            "steps": step_records,
            "cache_hits": self.cache_hits,
            "notes": self.notes,
            "threads": torch.get_num_threads(),
            "torch_device": str(self.device),
        }


def execute(task: CellTask) -> dict[str, Any]:
    """Run the cell described by ``task`` and return the measured part of its record."""
    return CellRun(task).execute()


def die_with_parent() -> None:
    """Ask Linux to kill this worker when its parent (the forkserver, which dies with the runner) dies."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def ready() -> None:
    """A no-op worker: returns once the forkserver can fork workers with everything imported."""


def run_in_worker(task: CellTask, connection: Any, log_path: str) -> None:
    """Entry point of a worker process: run the cell, send its record, exit."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.setpgrp()
    die_with_parent()
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    faulthandler.enable()
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
