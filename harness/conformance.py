"""check_technique: does a technique plugin keep the contract the harness relies on?

Each check runs the technique the way a cell's worker does, on the kit's tiny data with one
epoch of training, and says what to fix when it fails. :func:`check_technique` raises
:class:`TechniqueNotConforming` listing every failed check, or returns the
:class:`ConformanceReport`. Nothing here imports torch until a check runs.
"""

from __future__ import annotations

import io
import re
import tempfile
import traceback
import types
import typing
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from benchharness.api import CellContext, StrictConfig, Technique
    from benchharness.host import PluginHost, PluginOptions

PASSED, FAILED, NOT_APPLICABLE = "passed", "failed", "not applicable"
REGISTERS = "registers"
CONFIG_VALIDATES = "config validates"
UNKNOWN_KEYS = "config rejects unknown keys"
WRONG_TYPES = "config rejects wrong types"
UNSUPPORTED_REASON = "unsupported_reason"
SUITE_LOADS = "suite loads"
APPLY = "apply returns a module"
LOGITS = "logits"
NOTES = "notes are JSON values"
MEASURES = "measures like a cell"
SPEEDUP = "declares its speedup expectation"
CACHE = "cache round trip"
RUNTIME_CHECKS = (SUITE_LOADS, APPLY, LOGITS, NOTES, MEASURES, SPEEDUP, CACHE)
BATCH = 16
STRICT_HINT = "subclass benchharness.StrictConfig, which forbids unknown keys and validates strictly"
WRAPPER_HINT = (
    "set self.benchharness_speedup = (expected: bool, reason: str) in the wrapper's __init__, e.g. "
    "(True, \"runs under autocast bf16: faster where the device has bf16 kernels\")"
)


@dataclass
class Check:
    """One check of a technique: its name, ``passed``, ``failed`` or ``not applicable``, and what was found (and what to fix)."""

    name: str
    """The check's name, e.g. ``config rejects wrong types`` or ``cache round trip``."""
    outcome: str
    """``passed``, ``failed`` or ``not applicable``."""
    detail: str = ""
    """What was found; for a failed check, what is wrong and what to fix; for one not applicable, why."""

    def __str__(self) -> str:
        return f"{self.outcome.upper():>14}  {self.name}: {self.detail}" if self.detail else f"{self.outcome.upper():>14}  {self.name}"


@dataclass
class ConformanceReport:
    """What :func:`check_technique` found: every check with its outcome, in the order they ran.

    ``skip_reason`` says why the checks that run the technique were not run (the device is
    unavailable here, or the technique's ``unsupported_reason`` refuses it); they are then
    ``not applicable``.
    """

    technique: str
    """The technique's name."""
    config: dict[str, Any]
    """The config it was checked with, as given."""
    model: str
    """The model of the cell it ran in."""
    device: str
    """The device of the cell it ran in."""
    checks: list[Check] = field(default_factory=list)
    """Every check, in the order they ran."""
    skip_reason: str | None = None
    """Why the checks that run the technique did not run (device unavailable, or the technique refuses it), or None."""

    def add(self, name: str, outcome: str, detail: str = "") -> None:
        """Record a check's outcome."""
        self.checks.append(Check(name, outcome, detail))

    def _with(self, outcome: str) -> list[Check]:
        return [check for check in self.checks if check.outcome == outcome]

    @property
    def passed(self) -> list[Check]:
        """The checks that passed."""
        return self._with(PASSED)

    @property
    def failed(self) -> list[Check]:
        """The checks that failed."""
        return self._with(FAILED)

    @property
    def not_applicable(self) -> list[Check]:
        """The checks that did not apply (e.g. the cache round trip of a technique that caches nothing)."""
        return self._with(NOT_APPLICABLE)

    @property
    def ok(self) -> bool:
        """Whether no check failed."""
        return not self.failed

    def outcome(self, name: str) -> str | None:
        """The outcome of the check ``name``, or None when it was not reached."""
        return next((check.outcome for check in self.checks if check.name == name), None)

    def title(self) -> str:
        """The technique, its config, the model and the device, in one line."""
        return f"technique {self.technique!r} with config {self.config} on {self.model}/{self.device}"

    def __str__(self) -> str:
        return "\n".join([self.title(), *(str(check) for check in self.checks)])


class TechniqueNotConforming(AssertionError):
    """A technique that fails :func:`check_technique`; the message lists every failed check with what to fix.

    ``report`` is the full :class:`ConformanceReport`.
    """

    def __init__(self, report: ConformanceReport):
        self.report = report
        failed = report.failed
        lines = [f"{report.title()} does not conform: {len(failed)} of {len(report.checks)} checks failed"]
        lines += [f"  - {check.name}: {check.detail}" for check in failed]
        if report.passed:
            lines.append("passed: " + ", ".join(check.name for check in report.passed))
        reasons: dict[str, list[str]] = {}
        for check in report.not_applicable:
            reasons.setdefault(check.detail, []).append(check.name)
        lines += [f"not applicable ({reason}): {', '.join(names)}" for reason, names in reasons.items()]
        super().__init__("\n".join(lines))


def check_technique(
    technique: "str | Technique | type[Technique]",
    config: Mapping[str, Any] | None = None,
    *,
    plugins: Sequence[str] = (),
    entry_points: bool | None = None,
    model: str = "small_cnn",
    device: str = "cpu",
    tmp_path: str | Path | None = None,
) -> ConformanceReport:
    """Check that ``technique`` with ``config`` keeps the plugin contract; raise :class:`TechniqueNotConforming` if not.

    ``technique`` is a registered name (looked up with the built-in plugins, ``plugins`` and, as
    ``entry_points`` says, installed ones) or a Technique instance or class. The checks: it
    registers; its Config validates ``config``, rejects unknown keys and values of the wrong type;
    ``unsupported_reason`` answers for every device without raising; and, on ``model`` and
    ``device`` with the kit's tiny data (one epoch), a one-cell suite loads, ``apply`` returns a
    module whose logits have the shape (batch, classes) and are finite, its notes are JSON
    values, the result measures like a cell, it declares its speedup expectation (a wrapper
    module must set ``benchharness_speedup``), and, when ``cacheable(config)``, its
    ``cache_state`` survives the artifact cache and ``restore`` rebuilds the same outputs.
    Files go under ``tmp_path`` (default: a temporary directory removed afterwards).
    """
    from benchharness.host import PluginHost
    from benchharness.testing import plugin_options, preserved_process_state

    options = plugin_options(plugins, entry_points)
    checker = _Checker(PluginHost(options), options, technique, dict(config or {}), model, device)
    with preserved_process_state():
        if tmp_path is None:
            with tempfile.TemporaryDirectory(prefix="benchharness-check-") as directory:
                report = checker.run(Path(directory))
        else:
            report = checker.run(Path(tmp_path))
    if report.failed:
        raise TechniqueNotConforming(report)
    return report


def _describe(error: BaseException) -> str:
    from benchharness.host import describe_error

    return describe_error(error)


def _traceback_tail(error: BaseException, lines: int = 6) -> str:
    tail = "".join(traceback.format_exception(error)).rstrip().splitlines()[-lines:]
    return "\n      ".join(tail)


class _Checker:
    """Runs the checks of one technique with one config, filling a report."""

    def __init__(self, host: "PluginHost", options: "PluginOptions", technique: Any, config: dict[str, Any], model: str, device: str):
        self.host, self.options, self.given, self.config = host, options, technique, config
        self.model_name, self.device = model, device
        label = technique if isinstance(technique, str) else getattr(technique, "NAME", repr(technique))
        self.report = ConformanceReport(str(label), config, model, device)
        self.technique: Technique | None = None
        self.name = ""

    def pass_(self, name: str, detail: str = "") -> None:
        """Record a passed check."""
        self.report.add(name, PASSED, detail)

    def fail(self, name: str, detail: str) -> None:
        """Record a failed check: ``detail`` says what is wrong and what to fix."""
        self.report.add(name, FAILED, detail)

    def skip(self, names: Sequence[str], why: str) -> None:
        """Record the checks among ``names`` not reached yet as not applicable, because of ``why``."""
        for name in names:
            if self.report.outcome(name) is None:
                self.report.add(name, NOT_APPLICABLE, why)

    def run(self, directory: Path) -> ConformanceReport:
        """Every check, in order; a check that the next ones need stops them (they are then not applicable)."""
        if not self.check_registers():
            self.skip([CONFIG_VALIDATES, UNKNOWN_KEYS, WRONG_TYPES, UNSUPPORTED_REASON, *RUNTIME_CHECKS], "the technique cannot be registered")
            return self.report
        config = self.check_config()
        if config is None:
            self.skip([UNSUPPORTED_REASON, *RUNTIME_CHECKS], "the config does not validate")
            return self.report
        reason = self.check_unsupported_reason(config)
        if reason:
            self.report.skip_reason = reason
            self.skip(RUNTIME_CHECKS, reason)
            return self.report
        self.check_runtime(config, directory)
        return self.report

    def check_registers(self) -> bool:
        """The technique is registered under its name, or can be (a valid instance with a NAME, a pydantic Config, a unique name)."""
        from benchharness.api import Technique
        from benchharness.errors import PluginError
        from benchharness.host import checked_item
        from benchharness.testing import technique_name

        try:
            if isinstance(self.given, str):
                self.name = technique_name(self.host, self.given)
                self.technique = self.host.techniques[self.name]
            else:
                self.technique = checked_item(self.given, "technique", Technique)
                self.name = technique_name(self.host, self.technique)
        except LookupError as error:
            self.fail(REGISTERS, f"{error.args[0]}; install the plugin or pass it with plugins=[...] (a module name or a .py file)")
            return False
        except PluginError as error:
            self.fail(REGISTERS, str(error))
            return False
        self.report.technique = self.name
        entry = self.host.techniques.entries[self.name]
        self.pass_(REGISTERS, f"{type(self.technique).__name__} as {self.name!r} (plugin {entry.plugin!r})")
        return True

    def check_config(self) -> "StrictConfig | None":
        """The given config validates; unknown keys and wrong types are rejected. Returns the config as the worker rebuilds it."""
        from benchharness.api import rebuild_config

        config_type = self.technique.Config
        problem = _validation_problem(config_type, self.config)
        if problem is not None:
            self.fail(CONFIG_VALIDATES, f"{config_type.__name__} does not accept the config {self.config}: {problem}; pass parameters a suite may give")
            return None
        validated = config_type.model_validate(self.config)
        self.pass_(CONFIG_VALIDATES, f"{config_type.__name__}: {validated.model_dump(mode='json')}")
        self.check_unknown_keys(config_type)
        self.check_wrong_types(config_type)
        return rebuild_config(config_type, validated.model_dump(mode="json"))

    def check_unknown_keys(self, config_type: type) -> None:
        """``{**config, "no_such_key": 1}`` must fail validation."""
        problem = _validation_problem(config_type, {**self.config, "no_such_key": 1})
        if problem is None:
            self.fail(UNKNOWN_KEYS, f"{config_type.__name__} accepted the unknown key 'no_such_key', so a typo in a suite would be ignored silently; {STRICT_HINT}")
        elif problem.startswith("raised "):
            self.fail(UNKNOWN_KEYS, f"{config_type.__name__} {problem} for an unknown key instead of a ValidationError; {STRICT_HINT}")
        else:
            self.pass_(UNKNOWN_KEYS, problem)

    def check_wrong_types(self, config_type: type) -> None:
        """For every bool, int, float, str and Literal field, values of a wrong type must fail validation."""
        accepted, crashed, checked, unchecked = [], [], [], []
        for field_name, field_info in config_type.model_fields.items():
            probes = wrong_type_probes(field_info.annotation, self.config.get(field_name, field_info.default))
            if probes is None:
                unchecked.append(f"{field_name} ({_type_name(field_info.annotation)})")
                continue
            kind, values = probes
            checked.append(f"{field_name} ({kind})")
            for value in values:
                problem = _validation_problem(config_type, {**self.config, field_name: value})
                if problem is None:
                    accepted.append(f"{field_name} ({kind}) accepted {value!r}")
                elif problem.startswith("raised "):
                    crashed.append(f"{field_name} ({kind}) {problem} for {value!r}")
        if accepted:
            self.fail(WRONG_TYPES, f"{config_type.__name__}: {'; '.join(accepted)}; a suite's wrong value must fail validation, not be coerced: {STRICT_HINT}")
        elif crashed:
            self.fail(WRONG_TYPES, f"{config_type.__name__}: {'; '.join(crashed)}; validators must raise ValueError (pydantic reports it as a ValidationError)")
        else:
            detail = f"checked {', '.join(checked) or 'no fields'}"
            self.pass_(WRONG_TYPES, detail + (f"; not checked: {', '.join(unchecked)}" if unchecked else ""))

    def check_unsupported_reason(self, config: "StrictConfig") -> str | None:
        """``unsupported_reason`` answers None or a non-empty string for every registered device; returns why ``device`` cannot run the checks."""
        problems, answers = [], {}
        for device, probe in self.host.devices().items():
            try:
                answer = self.technique.unsupported_reason(config, probe)
            except Exception as error:
                problems.append(f"on device {device!r} it raised {_describe(error)}")
                answers[device] = f"unsupported_reason raised on {device!r}"
                continue
            if answer is not None and not (isinstance(answer, str) and answer.strip()):
                problems.append(f"on device {device!r} it returned {answer!r}")
            answers[device] = answer or None
        if problems:
            self.fail(UNSUPPORTED_REASON, f"{'; '.join(problems)}; return None when the step can run on the device, else a non-empty reason (never raise: it is called for every device before a cell starts)")
        else:
            self.pass_(UNSUPPORTED_REASON, ", ".join(f"{device}: {answer or 'supported'}" for device, answer in answers.items()))
        if self.device not in self.host.devices():
            return None
        unavailable = self.host.devices()[self.device].unavailable_reason()
        if unavailable:
            return f"device {self.device!r} unavailable: {unavailable}"
        return f"{self.name}: {answers[self.device]}" if answers.get(self.device) else None

    def check_runtime(self, config: "StrictConfig", directory: Path) -> None:
        """Apply the technique on a real context and check the result, then the cache round trip."""
        from benchharness.errors import SuiteError, Unsupported
        from benchharness.testing import context_of_suite, fresh_directory, load_kit_suite

        folder = fresh_directory(directory, "apply")
        configs = {self.name: self.config} if self.config else {}
        try:
            suite = load_kit_suite(folder, self.host, [self.name], configs, model=self.model_name, device=self.device, suite=None)
        except SuiteError as error:
            self.fail(SUITE_LOADS, f"{error}; check_suite() must accept a one-cell suite with this config")
            self.skip(RUNTIME_CHECKS, "the suite does not load")
            return
        except Exception as error:
            self.fail(SUITE_LOADS, f"loading a one-cell suite raised {_describe(error)}; check_suite() must return a problem (a string) or None, never raise")
            self.skip(RUNTIME_CHECKS, "the suite does not load")
            return
        try:
            context = context_of_suite(suite, self.host, self.options, folder, self.name, directory / "cache")
        except Unsupported as error:
            self.report.skip_reason = str(error)
            self.skip(RUNTIME_CHECKS, str(error))
            return
        self.pass_(SUITE_LOADS, f"cell {context.cell.id}, model_trained={context.model_trained}")
        self.run_technique(config, context, directory)

    def _cell(self, directory: Path) -> dict[str, Any]:
        """The cell's model and device, and the cache shared by the check's contexts."""
        return {"model": self.model_name, "device": self.device, "cache_dir": directory / "cache"}

    def input_model(self, context: "CellContext") -> "nn.Module":
        """What the step gets as a pipeline's only step: a fresh model when it TRAINS, else the model trained with the budget."""
        return context.build_model(self.model_name) if self.technique.TRAINS else context.trained_model(self.model_name)

    def run_technique(self, config: "StrictConfig", context: "CellContext", directory: Path) -> None:
        """Apply the technique to the model its step would get and check the result."""
        from benchharness.representation import count_parameters, layer_flops

        reference = context.build_model(self.model_name)
        sample = context.data.x_test[:1].to(context.torch_device)
        reference_params, reference_flops = count_parameters(reference)[0], layer_flops(reference, sample)
        given = self.input_model(context)
        result = self.check_apply(given, config, context)
        if result is None:
            self.skip(RUNTIME_CHECKS, "apply() did not return a module")
            return
        outputs = self.check_logits(result, context)
        self.check_notes(context)
        metrics = self.check_measures(result, context, reference_params, reference_flops)
        self.check_speedup(result, given, metrics, reference_params, reference_flops, sample)
        if outputs is None:
            self.skip([CACHE], "the applied model gives no usable logits to compare with")
        else:
            self.check_cache(result, config, outputs, directory)

    def check_apply(self, model: "nn.Module", config: "StrictConfig", context: "CellContext") -> "nn.Module | None":
        """``apply`` returns an nn.Module without raising."""
        from torch import nn

        try:
            result = self.technique.apply(model, config, context)
        except Exception as error:
            self.fail(APPLY, f"apply() raised {_describe(error)}; a cell would fail with it:\n      {_traceback_tail(error)}")
            return None
        if not isinstance(result, nn.Module):
            self.fail(APPLY, f"apply() returned {type(result).__name__}; return an nn.Module: the model it was given (changed in place), a new one, or a wrapper module")
            return None
        self.pass_(APPLY, f"{type(result).__module__}.{type(result).__qualname__}" + (" (the model it was given)" if result is model else ""))
        return result

    def check_logits(self, result: "nn.Module", context: "CellContext") -> "Any | None":
        """Batches of 1 and of BATCH test images give finite float logits of shape (batch, classes); returns the BATCH logits."""
        import torch

        inputs = context.data.x_test[:BATCH].to(context.torch_device)
        classes = context.data.num_classes
        problems, outputs = [], None
        for batch in (inputs[:1], inputs):
            size = batch.shape[0]
            try:
                with torch.inference_mode():
                    logits = result.eval()(batch)
            except Exception as error:
                problems.append(f"a forward pass of a batch of {size} raised {_describe(error)}")
                continue
            if not isinstance(logits, torch.Tensor):
                problems.append(f"a batch of {size} gave a {type(logits).__name__}, not a tensor of logits")
            elif tuple(logits.shape) != (size, classes):
                problems.append(f"a batch of {size} gave logits of shape {tuple(logits.shape)}; expected ({size}, {classes}): one row of class scores per input")
            elif not logits.is_floating_point():
                problems.append(f"a batch of {size} gave {logits.dtype} logits; return floating-point class scores")
            elif not bool(torch.isfinite(logits).all()):
                problems.append(f"a batch of {size} gave NaN or infinite logits; a cell would fail as diverged")
            elif size == inputs.shape[0]:
                outputs = logits.float().clone()
        if problems:
            self.fail(LOGITS, "; ".join(problems) + "; the result must be a classifier taking the data set's inputs")
            return None
        self.pass_(LOGITS, f"finite logits of shape (1, {classes}) and ({inputs.shape[0]}, {classes})")
        return outputs

    def check_notes(self, context: "CellContext") -> None:
        """``context.notes`` convert to JSON values, as the worker converts them after every step."""
        from benchharness.worker import json_safe_notes

        try:
            notes = json_safe_notes(context.notes)
        except TypeError as error:
            self.fail(NOTES, f"{error}; put numbers, strings, lists, dicts, tensors or arrays in context.notes")
            return
        self.pass_(NOTES, ", ".join(sorted(notes)) or "no notes")

    def check_measures(self, result: "nn.Module", context: "CellContext", reference_params: int, reference_flops: dict[str, float]) -> dict[str, Any] | None:
        """The worker's measurements of a step's result succeed: finite weights, accuracy, size, FLOPs, representation, memory."""
        from benchharness.worker import measure_model

        try:
            metrics, _ = measure_model(result, context.data, context.suite, context.device, context.torch_device, reference_params, reference_flops)
        except Exception as error:
            self.fail(MEASURES, f"measuring the result as a cell's worker does raised {_describe(error)}; a cell would fail with it")
            return None
        self.pass_(MEASURES, f"accuracy {metrics['accuracy_top1']:.1%} after the kit's one epoch, {metrics.get('size_bytes', '?')} bytes")
        return metrics

    def check_speedup(self, result, given, metrics, reference_params, reference_flops, sample) -> None:
        """The representation gives a speedup expectation with a reason; a wrapper module declares ``benchharness_speedup``."""
        from benchharness.representation import inspect_representation

        problems = [f"module {name or '(the result)'} has benchharness_speedup = {value!r}; {WRAPPER_HINT}" for name, value in malformed_declarations(result)]
        wrapper = wrapped_child(result, given)
        if wrapper is not None and not hasattr(result, "benchharness_speedup"):
            kind = type(result)
            problems.append(
                f"apply() returned a {kind.__qualname__} (from {kind.__module__}) that wraps the model ({wrapper}) in its own forward "
                "but has no benchharness_speedup: what a wrapper's forward does to inference speed is not visible in the weights, so "
                f"the report's 'speedup expected' would be a guess; {WRAPPER_HINT}"
            )
        if metrics is None:
            try:
                metrics = inspect_representation(result, reference_params, reference_flops, sample)
            except Exception as error:
                problems.append(f"inspect_representation raised {_describe(error)}")
                metrics = {}
        expected, reason = metrics.get("speedup_expected"), metrics.get("speedup_reason")
        if metrics and not (isinstance(expected, bool) and isinstance(reason, str) and reason.strip()):
            problems.append(f"inspect_representation gave speedup_expected={expected!r} with reason {reason!r}; a declared benchharness_speedup must be (bool, non-empty str)")
        if problems:
            self.fail(SPEEDUP, "; ".join(problems))
        else:
            self.pass_(SPEEDUP, f"speedup_expected={expected}: {reason}")

    def check_cache(self, result: "nn.Module", config: "StrictConfig", outputs: Any, directory: Path) -> None:
        """``cache_state`` survives torch.save and torch.load(weights_only=True); ``restore`` on a fresh input rebuilds the same outputs without training."""
        if not self.technique.cacheable(config):
            self.skip([CACHE], "cacheable(config) is False: nothing is cached")
            return
        state = self.cached_state(result, config)
        if state is None:
            return
        self.check_restore(config, state, outputs, directory)

    def cached_state(self, result: "nn.Module", config: "StrictConfig") -> dict[str, Any] | None:
        """``cache_state(result)`` after a trip through torch.save and torch.load(weights_only=True), or None (failed)."""
        import torch

        try:
            state = self.technique.cache_state(result, config)
        except Exception as error:
            self.fail(CACHE, f"cache_state() raised {_describe(error)}")
            return None
        if not isinstance(state, dict):
            self.fail(CACHE, f"cache_state() returned {type(state).__name__}; return a dict of tensors and plain values, e.g. {{'state_dict': model.state_dict()}}")
            return None
        buffer = io.BytesIO()
        try:
            torch.save({"state": state, "notes": {}}, buffer)
        except Exception as error:
            self.fail(CACHE, f"torch.save cannot store what cache_state() returned: {_describe(error)}; return tensors and plain values only")
            return None
        buffer.seek(0)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="TypedStorage is deprecated")  # torch's own, loading quantized tensors
                return torch.load(buffer, weights_only=True, map_location="cpu")["state"]
        except Exception as error:
            self.fail(
                CACHE,
                f"what cache_state() returned cannot be loaded with torch.load(weights_only=True), as the artifact cache loads it "
                f"({type(error).__name__}: {_load_problem(error)}); return tensors and plain values (numbers, strings, lists, dicts), not modules or other objects",
            )
            return None

    def check_restore(self, config: "StrictConfig", state: dict[str, Any], outputs: Any, directory: Path) -> None:
        """``restore`` in a fresh context, on a fresh input model, gives the applied result's outputs without training."""
        import torch
        from torch import nn

        from benchharness.testing import build_cell_context, fresh_directory

        context = build_cell_context(self.host, self.options, fresh_directory(directory, "restore"), self.name, self.config, **self._cell(directory))
        given = self.input_model(context)
        samples = context.trainer.samples_seen
        try:
            restored = self.technique.restore(given, config, context, state)
        except Exception as error:
            self.fail(CACHE, f"restore() raised {_describe(error)}; every cell would evict the cache entry and apply the step again:\n      {_traceback_tail(error)}")
            return
        if not isinstance(restored, nn.Module):
            self.fail(CACHE, f"restore() returned {type(restored).__name__}; return an nn.Module, as apply() does")
            return
        trained = context.trainer.samples_seen - samples
        inputs = context.data.x_test[:BATCH].to(context.torch_device)
        try:
            with torch.inference_mode():
                again = restored.eval()(inputs).float()
        except Exception as error:
            self.fail(CACHE, f"the restored model's forward pass raised {_describe(error)}")
            return
        if again.shape != outputs.shape or not torch.allclose(again, outputs.to(again.device), rtol=1e-4, atol=1e-5):
            difference = (again - outputs.to(again.device)).abs().max().item() if again.shape == outputs.shape else f"shape {tuple(again.shape)}"
            self.fail(
                CACHE,
                f"restore() from the cached state gives other outputs than apply() (largest difference {difference}); cache_state() must hold "
                "everything restore() needs, and a technique that changes the architecture must redo that change in restore() before loading",
            )
        elif trained:
            self.fail(CACHE, f"restore() trained ({trained} samples); it must rebuild the result from the cached state without training")
        else:
            self.pass_(CACHE, f"{', '.join(sorted(state))} restored into a {type(restored).__qualname__} with the same outputs")


def _load_problem(error: BaseException) -> str:
    """The line of a torch.load error that names what could not be loaded (torch's message is long and styled)."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(error).splitlines()]
    lines = [line for line in lines if line]
    named = [line for line in lines if "Unsupported global" in line or "WeightsUnpickler error" in line]
    return (named or lines or [type(error).__name__])[0].split(". Please use")[0]


def _validation_problem(config_type: type, values: dict[str, Any]) -> str | None:
    """None when ``config_type`` accepts ``values``; else the first validation error, or ``raised ...`` for another exception."""
    from pydantic import ValidationError

    try:
        config_type.model_validate(values)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())) or "(config)"
        return f"{where}: {first.get('msg')}"
    except Exception as error:
        return f"raised {_describe(error)}"
    return None


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _without_none(annotation: Any) -> Any:
    """``X`` for ``X | None`` (or ``Optional[X]``); None for another union; the annotation itself otherwise."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [argument for argument in typing.get_args(annotation) if argument is not type(None)]
        return rest[0] if len(rest) == 1 else None
    return annotation


def wrong_type_probes(annotation: Any, valid: Any) -> tuple[str, list[Any]] | None:
    """(the field's kind, values of a wrong type for it) for bool, int, float, str and Literal fields (optional or not); None for others.

    ``valid`` is a valid value of the field, so that a number written as a string is inside the field's bounds:
    only a strict config rejects it.
    """
    inner = _without_none(annotation)
    if typing.get_origin(inner) is typing.Literal:
        choices = typing.get_args(inner)
        invalid = next(candidate for candidate in ("no_such_choice", "no_such_choice_2") if candidate not in choices)
        return f"one of {', '.join(map(repr, choices))}", [invalid]
    if inner is bool:
        return "bool", [1, "yes"]
    if inner is int:
        example = valid if isinstance(valid, int) and not isinstance(valid, bool) else 2
        return "int", list(dict.fromkeys(["2", str(example)]))
    if inner is float:
        example = valid if isinstance(valid, (int, float)) and not isinstance(valid, bool) else 0.5
        return "float", list(dict.fromkeys(["x", str(example)]))
    if inner is str:
        return "str", [3]
    return None


def malformed_declarations(model: "nn.Module") -> list[tuple[str, Any]]:
    """(module name, value) of every ``benchharness_speedup`` in ``model`` that is not ``(bool, non-empty str)``."""
    found = []
    for name, module in model.named_modules():
        if not hasattr(module, "benchharness_speedup"):
            continue
        value = module.benchharness_speedup
        if not (isinstance(value, (tuple, list)) and len(value) == 2 and isinstance(value[0], bool) and isinstance(value[1], str) and value[1].strip()):
            found.append((name, value))
    return found


def wrapped_child(result: "nn.Module", given: "nn.Module") -> str | None:
    """The name of the child through which ``result`` wraps the model it was given, when ``result`` is a wrapper defined outside torch; else None.

    A wrapper holds, as a direct child, the given model itself or a module of its class.
    """
    kind = type(result)
    if result is given or kind is type(given) or kind.__module__.split(".")[0] in ("torch", "torchvision"):
        return None
    for name, child in result.named_children():
        if child is given or type(child) is type(given):
            return name
    return None
