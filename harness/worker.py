"""What runs inside a cell's worker process: build, train, transform and measure one cell.

This module is preloaded into the forkserver (together with torch), so a
worker starts by forking an interpreter that has already imported everything.
"""

from __future__ import annotations

import copy
import importlib
import json
import os
import platform
import random
import traceback
from pathlib import PurePath
from typing import Any

import numpy as np
import torch
import torchvision  # noqa: F401  (preloaded for the forkserver)

from benchharness import conditions
from benchharness.artifact import load_model, save_model
from benchharness.api import CellContext, Data, Probe, Step, Technique, rebuild_config
from benchharness.cache import ArtifactCache, cache_key, library_versions
from benchharness.errors import Diverged, Unsupported
from benchharness.measure import count_flops, example_batch, size_metrics, time_interleaved
from benchharness.memory import inference_memory
from benchharness.representation import count_parameters, inspect_representation, layer_flops, nonfinite_tensor
from benchharness.host import DEFAULT_PLUGINS, PluginHost
from benchharness.suite import MeasureSettings, Suite, split_model_name
from benchharness.system import OtherCpuMeter
from benchharness.tasks import CellTask, TimingTask  # noqa: F401  (CellTask: for callers that build cells in-process)
from benchharness.train import Trainer, encode_correct_bits, evaluate_correct, to_memory_format

TRACEBACK_LINES = 40
CPU_OOM_MARKERS = ("not enough memory", "DefaultCPUAllocator", "out of memory")


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


def failure_record(error: BaseException) -> dict[str, Any]:
    """The status fields of a record for a cell that raised ``error``."""
    tail = "".join(traceback.format_exception(error)).splitlines()[-TRACEBACK_LINES:]
    if isinstance(error, Unsupported):
        status, error_type = "skipped", "unsupported"
    elif isinstance(error, Diverged):
        status, error_type = "failed", "diverged"
    elif is_out_of_memory(error):
        status, error_type = "failed", "oom"
    else:
        status, error_type = "failed", "exception"
    return {"status": status, "error_type": error_type, "error_message": f"{type(error).__name__}: {error}", "traceback": "\n".join(tail)}


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` says memory ran out: torch's OutOfMemoryError, MemoryError, or the CPU allocator's RuntimeError."""
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(error, RuntimeError) and any(marker in str(error) for marker in CPU_OOM_MARKERS)


def json_safe_notes(notes: dict[str, Any]) -> dict[str, Any]:
    """``notes`` with every value a plain JSON value, so that the record pickles and serialises safely.

    Tensors and numpy arrays become numbers or (nested) lists, numpy scalars Python numbers,
    paths, dtypes and devices strings, tuples and sets lists, dict keys strings; dicts and
    lists are converted recursively. Anything else raises ``TypeError`` naming the note.
    """
    return {str(name): _json_value(value, str(name)) for name, value in notes.items()}


def _json_value(value: Any, path: str) -> Any:
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, (int, float, str)):  # subclasses (IntEnum, np.float64) as plain builtins
        return (int if isinstance(value, int) else float if isinstance(value, float) else str)(value)
    if isinstance(value, torch.Tensor):
        try:
            tensor = value.detach()
            tensor = tensor.dequantize() if tensor.is_quantized else tensor
            tensor = tensor.to_dense() if tensor.layout != torch.strided else tensor
            listed = tensor.cpu().tolist()
        except Exception as error:
            raise TypeError(f"note '{path}' is a tensor that cannot be converted to numbers ({type(error).__name__}: {error})") from error
        return _json_value(listed, path)
    if isinstance(value, (np.ndarray, np.generic)):
        return _json_value(value.tolist(), path)
    if isinstance(value, (PurePath, torch.dtype, torch.device)):
        return str(value)
    if isinstance(value, os.PathLike):
        return _json_value(os.fspath(value), path)
    if isinstance(value, dict):
        return {_json_key(key, path): _json_value(item, f"{path}.{key}") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(item, f"{path}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        items = [_json_value(item, f"{path}[{index}]") for index, item in enumerate(value)]
        try:
            return sorted(items)
        except TypeError:
            return items
    raise TypeError(f"note '{path}' is a {type(value).__name__}; notes must be JSON values (numbers, strings, lists, dicts) or tensors and arrays")


def _json_key(key: Any, path: str) -> str:
    key = _json_value(key, path) if isinstance(key, np.generic) else key
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, (bool, int, float)):
        return json.dumps(key)
    raise TypeError(f"note '{path}' has a key of type {type(key).__name__}; notes must be JSON values, whose keys are strings")


def _convert_notes(notes: dict[str, Any]) -> None:
    """Replace ``notes``' contents, in place, by :func:`json_safe_notes` of them."""
    converted = json_safe_notes(notes)
    notes.clear()
    notes.update(converted)


def require_module(result: Any, technique: Technique, method: str) -> torch.nn.Module:
    """``result`` when it is an ``nn.Module``; otherwise a ``TypeError`` naming the technique and what it returned."""
    if not isinstance(result, torch.nn.Module):
        raise TypeError(f"technique '{technique.NAME}' returned {type(result).__name__}; {method}() must return an nn.Module")
    return result


def check_finite_weights(model: torch.nn.Module) -> None:
    """Raise :class:`Diverged` naming the first parameter or buffer that holds a NaN or an infinity."""
    name = nonfinite_tensor(model)
    if name is not None:
        raise Diverged(f"non-finite weights in layer '{name}' (NaN or inf): the technique or its training diverged")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@torch.inference_mode()
def forward_at_largest_batch(model: torch.nn.Module, inputs: torch.Tensor, settings: MeasureSettings) -> None:
    """One forward pass at the largest batch size at every timed thread count, so that every (threads, batch size) is timed after the same allocations.

    torch's thread count is left as it was.
    """
    batch, previous = example_batch(inputs, max(settings.batch_sizes)), torch.get_num_threads()
    try:
        for threads in settings.thread_counts():
            conditions.AtThreads(model.eval(), threads)(batch)
    finally:
        torch.set_num_threads(previous)


def time_batch_sizes(
    models: dict[str, torch.nn.Module], inputs: dict[str, torch.Tensor], settings: MeasureSettings, probe: Probe
) -> dict[str, list[dict[str, Any]]]:
    """Latency samples of every model at every (thread count, batch size), timed in turns, with the probe's readings.

    At each batch size, every model at every count of ``settings.thread_counts()`` is a
    contender of its own in the turns, and torch's intra-op threads are switched to the
    turn's count (:class:`benchharness.conditions.AtThreads`; the affinity stays). Each model's
    entries come in the order of :func:`benchharness.rounds.timing_points` and say the
    ``threads`` applied and whether they were ``threads_oversubscribed`` (more than the CPUs
    this process may use). Every model must have run :func:`forward_at_largest_batch` first.
    The CPU time other processes used over the whole timing is in every entry's
    ``other_cores``. A compiled model (one with ``benchharness_compilations()``) first runs
    once at each batch size so that it compiles before it is timed; its entries count the
    graphs compiled while it was timed in ``recompilations`` (0 unless something recompiled).
    When the probe measures energy, each model is also run alone for as many
    iterations as it was timed, so that its energy per sample is its own. torch's thread
    count is left as it was.
    """
    probe.synchronize()
    counts, previous = settings.thread_counts(), torch.get_num_threads()
    runners = {(name, threads): conditions.AtThreads(model, threads) for name, model in models.items() for threads in counts}
    compiling = {name: model for name, model in models.items() if callable(getattr(model, "benchharness_compilations", None))}
    found: dict[tuple[str, int, int], dict[str, Any]] = {}
    try:
        with OtherCpuMeter() as meter:
            for size in settings.batch_sizes:
                batches = {name: example_batch(inputs[name], size) for name in models}
                keyed = {key: batches[key[0]] for key in runners}
                compiled_before = _compile_for_shape(compiling, runners, keyed)
                with probe.sample() as shared:
                    times = time_interleaved(runners, keyed, settings, probe.synchronize)
                energy = _energy_per_sample(runners, keyed, times, probe) if "energy_j" in shared else {}
                readings = {key: value for key, value in shared.items() if key not in ("energy_j", "energy_method")}
                for (name, threads), runner in runners.items():
                    applied = runner.applied_threads or threads
                    flags = {"threads": applied, "threads_oversubscribed": conditions.oversubscribed(applied)}
                    found[(name, threads, size)] = {"batch_size": size, **flags, "samples_ms": times[(name, threads)], **readings, **energy.get((name, threads), {})}
                    if name in compiling:
                        found[(name, threads, size)]["recompilations"] = compiling[name].benchharness_compilations() - compiled_before[name]
    finally:
        torch.set_num_threads(previous)
    entries = {name: [found[(name, threads, size)] for threads in counts for size in settings.batch_sizes] for name in models}
    for timings in entries.values():
        for entry in timings:
            entry["other_cores"] = meter.other_cores
    return entries


@torch.inference_mode()
def _compile_for_shape(compiling: dict[str, torch.nn.Module], runners: dict, batches: dict) -> dict[str, int]:
    """One call of every compiled model's runners at this batch size, so it compiles before it is timed; the graphs each has compiled so far."""
    for key, runner in runners.items():
        if key[0] in compiling:
            runner(batches[key])
    return {name: model.benchharness_compilations() for name, model in compiling.items()}


@torch.inference_mode()
def _energy_per_sample(models: dict[str, torch.nn.Module], batches: dict[str, torch.Tensor], times: dict[str, list[float]], probe: Probe) -> dict[str, dict[str, Any]]:
    """Each model run alone for as many iterations as it was timed, under the probe: its energy per sample."""
    found = {}
    for name, model in models.items():
        iterations = max(1, len(times[name]))
        with probe.sample() as readings:
            for _ in range(iterations):
                model(batches[name])
            probe.synchronize()
        if "energy_j" in readings:
            size = batches[name].shape[0]
            found[name] = {"energy_j": readings["energy_j"], "energy_method": readings.get("energy_method"), "energy_j_per_sample": readings["energy_j"] / (iterations * size)}
    return found


def time_round(task: TimingTask) -> dict[str, Any]:
    """Restore every slot's model in this fresh process and time them in turns, under the controlled conditions.

    A model that cannot be restored or fails its first forward pass is reported in ``failures``
    and left out; the others are timed.
    """
    settings = task.settings
    applied = conditions.apply(settings.cpus, settings.thread_count())
    probe = PluginHost(task.plugins).probes[task.device]
    models, inputs, failures = {}, {}, {}
    for slot, artifact in task.slots:
        try:
            model, example = load_model(artifact, probe.DEVICE)
            forward_at_largest_batch(model, example, settings)
        except Exception as error:
            traceback.print_exc()
            failures[slot] = failure_record(error)
            continue
        models[slot], inputs[slot] = model, example
    timings = time_batch_sizes(models, inputs, settings, probe) if models else {}
    other = max((entry["other_cores"] for entries in timings.values() for entry in entries), default=0.0)
    return {"status": "ok", "timings": timings, "failures": failures, "other_cores": other, "conditions": applied, "node": node_facts()}


def node_facts(probe: Probe | None = None) -> dict[str, Any]:
    """Where this process runs: the host name and, given the cell's device probe, that device's facts."""
    facts: dict[str, Any] = {"hostname": platform.node()}
    if probe is not None:
        try:
            facts["device"] = json.loads(json.dumps(probe.describe(), default=str))
        except Exception as error:  # a probe that cannot describe itself must not fail the cell
            facts["device"] = {"error": f"{type(error).__name__}: {error}"}
    return facts


def measure_model(
    model: torch.nn.Module,
    data: Data,
    suite: Suite,
    probe: Probe,
    device: torch.device,
    reference_params: int,
    reference_flops: dict[str, float],
    channels_last: bool = False,
) -> tuple[dict[str, Any], torch.Tensor]:
    """Accuracy (and which test images were right), size, parameters, FLOPs, representation and inference memory; and the inputs latency is timed on.

    Latency is not timed here: the runner times every cell's final model in interleaved rounds.
    Raises :class:`Diverged` when a weight, a buffer or an output on the test split is not finite.
    """
    check_finite_weights(model)
    settings = suite.spec.measure
    inputs = to_memory_format(data.x_test.to(device), channels_last)
    representation = inspect_representation(model, reference_params, reference_flops, inputs[:1])
    if channels_last and not representation["quantized_modules"]:
        model.to(memory_format=torch.channels_last)
    correct = evaluate_correct(model, data, settings.eval_batch_size, device)
    memory = inference_memory(model, example_batch(inputs, max(settings.batch_sizes)), probe)
    metrics = {
        "accuracy_top1": int(correct.sum()) / max(correct.numel(), 1),
        "accuracy_samples": int(data.y_test.shape[0]),
        "accuracy_correct_bits": encode_correct_bits(correct.numpy()),
        "train_split_samples": int(data.x_train.shape[0]),
        **size_metrics(model),
        "flops": count_flops(model, inputs[:1]),
        **memory,
        **representation,
    }
    return metrics, inputs


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
        self.budget = self.suite.budget(self.cell.recipe)
        self.trainer = Trainer(self.budget, self.device, self.cell.seed, self.probe.synchronize)
        self.data: Data | None = None
        self.notes: dict[str, Any] = {}

    def lineage_root(self, model_name: str) -> dict[str, Any]:
        """What determines a freshly initialised, untrained model of this cell.

        The device is not part of it: a model trained on the GPU is reused by the same cell on
        the CPU (``notes.trained_on`` says where it was trained). The model family's and the data
        set's code fingerprints are part of it: a fixed model definition or loader must not reuse old weights.
        """
        suite = self.suite
        family, variant, options = suite.model_source(model_name)
        root: dict[str, Any] = {"model": model_name}
        if model_name in suite.spec.named_models:
            root["named_model"] = {"family": family, "variant": variant, "options": options}
        return {
            **root,
            "data": {"name": suite.spec.data.name, **suite.data_config},
            "train": self.budget.model_dump(mode="json"),
            "seed": self.cell.seed,
            "versions": library_versions(),
            "code": {
                "model": self.host.models.entries[family].fingerprint(),
                "data": self.host.datasets.entries[suite.spec.data.name].fingerprint(),
            },
        }

    def fresh_model(self, name: str) -> torch.nn.Module:
        """A newly initialised model, seeded like the cell."""
        _seed_everything(self.cell.seed)
        family, variant, options = self.suite.model_source(name)
        return self.host.models[family].build_with(self.data.num_classes, self.data.input_shape, variant, options).to(self.device)

    def apply_step(self, model, technique: Technique, config, context, lineage: list[dict[str, Any]], label: str):
        """Apply one step, or restore its cached result; returns the model and the step's lineage.

        The step's lineage entry holds its technique's code fingerprint; a step cached as ``train``
        (baseline) shares the implicit train step's entry, so it takes that step's fingerprint.
        """
        step_name = technique.CACHE_AS or technique.NAME
        code = self.host.technique_fingerprint(TrainStep() if step_name == TrainStep.NAME else technique)
        lineage = lineage + [{"step": step_name, "config": config.model_dump(mode="json"), "code": code}]
        use_cache = self.cache is not None and technique.cacheable(config)
        key = cache_key(lineage) if use_cache else None
        entry = self.cache.load(key, {"state": dict, "notes": dict}) if use_cache else None
        restored = self.restore_step(model, technique, config, context, key, entry) if entry is not None else None
        self.trainer.label = technique.NAME
        if restored is not None:
            model = restored
            context.notes.update(entry["notes"])
            _convert_notes(context.notes)
            for curve in entry.get("curves", []):
                self.trainer.add_curve(curve["label"], curve["epochs"], {**curve.get("notes", {}), "cached": True})
            self.cache_hits.append(label)
        else:
            notes_before, samples_before, curves_before = dict(context.notes), self.trainer.samples_seen, len(self.trainer.curves)
            model = require_module(technique.apply(model, config, context), technique, "apply")
            if self.trainer.samples_seen > samples_before:
                context.notes["trained_on"] = self.probe.DEVICE
            _convert_notes(context.notes)
            if use_cache:
                notes = {name: value for name, value in context.notes.items() if notes_before.get(name, object()) != value}
                description = f"{step_name} of {lineage[0]['model']} on {lineage[0]['data']['name']}"
                curves = self.trainer.curves[curves_before:]
                self.cache.save(key, {"state": technique.cache_state(model, config), "notes": notes, "curves": curves}, description)
        return model, lineage

    def restore_step(self, model, technique: Technique, config, context, key: str, entry: dict[str, Any]) -> torch.nn.Module | None:
        """The step's result restored from its cache entry, or None when the entry cannot be restored (it is then evicted).

        The state is restored into a copy, so that ``model`` is left as it was for the caller to
        rebuild the step as on a cache miss. Running out of memory is raised, never evicted.
        """
        try:
            target = copy.deepcopy(model)
        except Exception:  # a model that cannot be copied: a failing restore fails the cell
            target = None
        try:
            restored = technique.restore(model if target is None else target, config, context, entry["state"])
            return require_module(restored, technique, "restore")
        except Exception as error:
            if is_out_of_memory(error):
                raise
            self.cache.evict(key, f"step '{technique.NAME}' cannot restore it ({type(error).__name__}: {error})")
            if target is None:
                raise
            return None

    def trained_model(self, name: str) -> torch.nn.Module:
        """``name`` trained with the suite's budget (the same artifact as that model's baseline cell)."""
        model = self.fresh_model(name)
        context = self.context()
        context.model_trained = False
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
        """Set the controlled conditions, load the data onto the device and return the techniques' context."""
        settings = self.suite.spec.measure
        conditions.apply(settings.cpus, settings.thread_count())
        dataset = self.host.datasets[self.suite.spec.data.name]
        self.data = dataset.load(rebuild_config(dataset.Config, self.suite.data_config)).to(self.device)
        return self.context()

    def execute(self) -> dict[str, Any]:
        """Run the cell and return the measured part of its record (raises on failure)."""
        cell, suite, probe = self.cell, self.suite, self.probe
        self.check_supported()
        context = self.prepare()
        steps = [(self.host.techniques[step.technique], step) for step in cell.steps]
        configs = [rebuild_config(technique.Config, step.config) for technique, step in steps]
        model = self.fresh_model(cell.model)
        reference_params = count_parameters(model)[0]
        reference_flops = layer_flops(model, self.data.x_test[:1].to(self.device))
        if not steps[0][0].TRAINS:
            steps.insert(0, (TrainStep(), Step("train")))
            configs.insert(0, TrainStep.Config())
        lineage = [self.lineage_root(cell.model)]
        step_records: list[dict[str, Any]] = []
        for index, ((technique, step), config) in enumerate(zip(steps, configs)):
            context.model_trained = index > 0
            model, lineage = self.apply_step(model, technique, config, context, lineage, step.technique)
            metrics, inputs = measure_model(model, self.data, suite, probe, self.device, reference_params, reference_flops, self.budget.channels_last)
            if (metrics["quantized_modules"] or not metrics["flops"]) and step_records:
                metrics["flops"] = step_records[-1]["metrics"]["flops"]
                metrics["flops_note"] = "FLOPs of the float model before quantization; int8 kernels are not counted by torch.utils.flop_counter"
            step_records.append({"step": step.technique, "cached": step.technique in self.cache_hits, "metrics": metrics})
        metrics = {**step_records[-1]["metrics"], "train_s": self.trainer.train_seconds, "train_samples": self.trainer.samples_seen}
        result = {
            "status": "ok",
            "metrics": metrics,
            "steps": step_records,
            "cache_hits": self.cache_hits,
            "notes": json_safe_notes(self.notes),
            "curves": json_safe_notes({"curves": self.trainer.curves})["curves"],
            "threads": torch.get_num_threads(),
            "torch_device": str(self.device),
            "node": node_facts(self.probe),
        }
        result.update(self.save_final(model, inputs))
        return result

    def save_final(self, model: torch.nn.Module, inputs: torch.Tensor) -> dict[str, Any]:
        """Save the final model for timing; a model that cannot be pickled is timed here instead, and says so."""
        settings = self.suite.spec.measure
        if self.task.artifact is None:
            return {}
        try:
            save_model(model, example_batch(inputs, max(settings.batch_sizes)), self.task.artifact)
            return {"artifact": str(self.task.artifact)}
        except Exception as error:  # e.g. a plugin's module class defined inside a function
            forward_at_largest_batch(model, inputs, settings)
            rounds = [time_batch_sizes({"cell": model}, {"cell": inputs}, settings, self.probe)["cell"] for _ in range(settings.min_rounds)]
            reason = f"the model could not be saved for timing in fresh processes ({type(error).__name__}: {error})"
            return {"timed_in_build_process": reason, "in_process_rounds": rounds}
