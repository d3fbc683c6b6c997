"""Every hook has a test (``test_hook_<name>``): an inline plugin implements it on a real host, and its effect is used for real.

tests/test_docs.py fails when a hook of benchharness.hookspecs has no ``test_hook_<name>`` here.
"""

from __future__ import annotations

import io
import json
import math
import re
import shutil
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import pluggy
import pytest
import torch
from click.testing import CliRunner
from pydantic import Field
from rich.console import Console
from torch import nn

from benchharness import Data, Dataset, ModelFamily, Probe, StrictConfig, Technique, hookimpl
from benchharness.api import Cell, rebuild_config
from benchharness.cli import cli
from benchharness.describe import describe_probes
from benchharness.errors import SuiteError
from benchharness.executor import Executor, TaskSpec
from benchharness import host as host_module
from benchharness.host import HookCaller, PluginHost, PluginOptions, hook_problems
from benchharness.hookspecs import hookspec
from benchharness.matrix import expand
from benchharness.report.frame import load_run
from benchharness.report.html import build_report
from benchharness.runner import Runner
from benchharness.store import RunDir
from benchharness.suite import Suite, load_suite_text
from tests.conftest import ROOT

FIXTURE_RUN = ROOT / "tests" / "fixtures" / "run-small"
SUITE = """
name = "hooks"
models = [{models}]
devices = [{devices}]
[data]
name = "{data}"
{data_keys}
[[techniques]]
steps = [{steps}]
{step_keys}
[run]
executor = "{executor}"
"""


def suite_text(models: str = '"mlp"', devices: str = '"cpu"', data: str = "digits", data_keys: str = "", steps: str = '"baseline"', step_keys: str = "", executor: str = "local") -> str:
    """A one-model suite's TOML, with the given parts."""
    return SUITE.format(models=models, devices=devices, data=data, data_keys=data_keys, steps=steps, step_keys=step_keys, executor=executor)


def bare_host() -> PluginHost:
    """A host with the built-in plugins only (no entry points, no block list)."""
    return PluginHost(PluginOptions(entry_points=False, disabled=()))


@contextmanager
def registered(host: PluginHost, plugin: Any, name: str) -> Iterator[Any]:
    """``plugin`` registered inline on ``host`` while the block runs."""
    host.register(plugin, name=name)
    try:
        yield plugin
    finally:
        host.unregister(plugin)


# ------------------------------------------------------------------ register_techniques


class ScaleConfig(StrictConfig):
    """Parameters of ``hook_scale``."""

    factor: float = Field(1.0, description="What every weight is multiplied by.")


class Scale(Technique):
    """Multiplies every weight by ``factor``; a suite must not ask for a factor of 0."""

    NAME = "hook_scale"
    DESCRIPTION = "scale the weights"
    Config = ScaleConfig

    def check_suite(self, config, suite):
        """A factor of 0 would zero the model."""
        return "factor 0 zeroes the model" if config.factor == 0 else None

    def apply(self, model, config, context):
        """Scale the weights in place."""
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.mul_(config.factor)
        return model


class TechniquePlugin:
    """Registers ``hook_scale`` (as a class)."""

    @hookimpl
    def register_techniques(self, register):
        register(Scale)


def test_hook_register_techniques():
    """A registered technique is validated in suites (its Config, its check_suite) and applies; unregistered, suites no longer find it."""
    host = bare_host()
    text = suite_text(steps='"baseline", "hook_scale"', step_keys="hook_scale = { factor = 2 }")
    with registered(host, TechniquePlugin(), "scaling"):
        assert host.techniques.entries["hook_scale"].plugin == "scaling"
        suite = load_suite_text(text, "hooks.toml", host)
        assert suite.step_configs[0]["hook_scale"] == {"factor": 2.0}
        technique = host.techniques["hook_scale"]
        model = nn.Linear(2, 1)
        before = model.weight.detach().clone()
        assert technique.apply(model, rebuild_config(technique.Config, suite.step_configs[0]["hook_scale"]), None) is model
        assert torch.equal(model.weight, before * 2)
        with pytest.raises(SuiteError, match="factor 0 zeroes the model"):
            load_suite_text(text.replace("factor = 2", "factor = 0"), "hooks.toml", host)
        with pytest.raises(SuiteError, match="hook_scale.factor"):
            load_suite_text(text.replace("factor = 2", 'factor = "2"'), "hooks.toml", host)
    with pytest.raises(SuiteError, match="unknown technique 'hook_scale'"):
        load_suite_text(text, "hooks.toml", host)


# ------------------------------------------------------------------ register_models


class Linear(ModelFamily):
    """One linear layer over the flattened input, narrow or wide (a hidden layer)."""

    NAME = "hook_linear"
    DESCRIPTION = "a linear model"

    def variants(self):
        """Two sizes."""
        return ["narrow", "wide"]

    def build(self, num_classes, input_shape, variant=None):
        """The model for ``input_shape`` inputs."""
        features = math.prod(input_shape)
        if variant == "wide":
            return nn.Sequential(nn.Flatten(), nn.Linear(features, 64), nn.ReLU(), nn.Linear(64, num_classes))
        return nn.Sequential(nn.Flatten(), nn.Linear(features, num_classes))


class ModelPlugin:
    """Registers ``hook_linear``."""

    @hookimpl
    def register_models(self, register):
        register(Linear())


def test_hook_register_models():
    """A registered model family is addressed by a suite as NAME:variant, its variants checked, and it builds a working model."""
    host = bare_host()
    with registered(host, ModelPlugin(), "linear"):
        suite = load_suite_text(suite_text(models='"hook_linear:wide"'), "hooks.toml", host)
        assert [cell.model for cell in expand(suite)] == ["hook_linear:wide"]
        with pytest.raises(SuiteError, match="unknown hook_linear model 'huge'"):
            load_suite_text(suite_text(models='"hook_linear:huge"'), "hooks.toml", host)
        model = host.models["hook_linear"].build(10, (1, 8, 8), "wide")
        assert model(torch.zeros(4, 1, 8, 8)).shape == (4, 10)


# ------------------------------------------------------------------ register_datasets


class NoiseConfig(StrictConfig):
    """Parameters of ``hook_noise``."""

    samples: int = Field(32, gt=0, description="Samples in each split.")


class Noise(Dataset):
    """Random 8x8 images in 4 classes; refuses more than 1000 samples."""

    NAME = "hook_noise"
    DESCRIPTION = "random images"
    Config = NoiseConfig

    def problem(self, config):
        """Too many samples for a test."""
        return "at most 1000 samples" if config.samples > 1000 else None

    def load(self, config):
        """Both splits."""
        count = config.samples
        generator = torch.Generator().manual_seed(0)
        images = torch.randn(2 * count, 1, 8, 8, generator=generator)
        labels = torch.randint(0, 4, (2 * count,), generator=generator)
        return Data(self.NAME, images[:count], labels[:count], images[count:], labels[count:], num_classes=4)


class DatasetPlugin:
    """Registers ``hook_noise``."""

    @hookimpl
    def register_datasets(self, register):
        register(Noise())


def test_hook_register_datasets():
    """A registered data set is named in [data], its keys validated by its Config and its problem(), and it loads."""
    host = bare_host()
    with registered(host, DatasetPlugin(), "noise"):
        suite = load_suite_text(suite_text(data="hook_noise", data_keys="samples = 16"), "hooks.toml", host)
        assert suite.data_config == {"samples": 16}
        with pytest.raises(SuiteError, match="at most 1000 samples"):
            load_suite_text(suite_text(data="hook_noise", data_keys="samples = 5000"), "hooks.toml", host)
        dataset = host.datasets["hook_noise"]
        data = dataset.load(rebuild_config(dataset.Config, suite.data_config))
        assert data.input_shape == (1, 8, 8) and data.x_train.shape[0] == 16 and data.num_classes == 4


# ------------------------------------------------------------------ register_probes


class Offline(Probe):
    """A device no machine has: its cells are skipped, without a worker."""

    NAME = "hook_offline"
    DESCRIPTION = "never available"
    DEVICE = "hook_offline"

    def unavailable_reason(self):
        """Always unavailable."""
        return "no machine has it"


class Kernel(Probe):
    """A probe that is not a device: facts recorded in every run."""

    NAME = "hook_kernel"
    DESCRIPTION = "a fact about the machine"

    def describe(self):
        """One fact."""
        return {"release": "test-1.0"}


class ProbePlugin:
    """Registers a device probe and a plain probe."""

    @hookimpl
    def register_probes(self, register):
        register(Offline())
        register(Kernel)


def test_hook_register_probes():
    """A probe with a DEVICE is a device suites name; every probe's facts are described; an unavailable device skips its cells."""
    host = bare_host()
    with registered(host, ProbePlugin(), "probes"):
        assert "hook_offline" in host.devices() and "hook_kernel" not in host.devices()
        suite = load_suite_text(suite_text(devices='"hook_offline"'), "hooks.toml", host)
        (cell,) = expand(suite)
        assert host.skip_reason(cell) == "device 'hook_offline' unavailable: no machine has it"
        facts = describe_probes(host)
        assert facts["hook_kernel"] == {"release": "test-1.0", "available": True}
        assert facts["hook_offline"] == {"available": False, "reason": "no machine has it"}


# ------------------------------------------------------------------ register_executors


class InProcess(Executor):
    """Runs each task in the test's own process, remembering what it was asked to do."""

    NAME = "hook_in_process"
    DESCRIPTION = "tasks in this process (tests only)"

    def __init__(self) -> None:
        self.calls: list[str] = []

    def start(self, config, run_dir):
        """Remember the start."""
        self.calls.append(f"start {Path(run_dir).name}")

    def run(self, spec: TaskSpec) -> dict[str, Any]:
        """Run the task here."""
        self.calls.append(f"run {spec.kind}")
        return spec.task.run()

    def stop(self):
        """Remember the stop."""
        self.calls.append("stop")

    def describe(self, config):
        """Where tasks ran."""
        return {"where": "the test process"}


class ExecutorPlugin:
    """Registers the in-process executor (and the offline device, so that runs need no worker)."""

    @hookimpl
    def register_executors(self, register):
        register(InProcess())

    @hookimpl
    def register_probes(self, register):
        register(Offline())


def test_hook_register_executors(tmp_path):
    """A suite chooses a registered executor; the runner starts it, runs its describe task through it, and stops it."""
    host = bare_host()
    with registered(host, ExecutorPlugin(), "in-process"):
        suite = load_suite_text(suite_text(devices='"hook_offline"', executor="hook_in_process"), "hooks.toml", host)
        executor = host.executors["hook_in_process"]
        runner = Runner(suite, host, RunDir.create(tmp_path, suite.name), console=Console(file=io.StringIO()))
        try:
            info = runner.describe()
        finally:
            runner.close()
        assert executor.calls == [f"start {runner.run_dir.path.name}", "run describe", "stop"]
        assert info["executor"] == {"name": "hook_in_process", "options": {}, "where": "the test process"}
        assert "probes" in info


# ------------------------------------------------------------------ register_commands


class CommandPlugin:
    """Adds a ``greet`` command."""

    @hookimpl
    def register_commands(self, cli):
        @cli.command()
        @click.argument("name")
        def greet(name):
            """Greet NAME."""
            click.echo(f"hello, {name}")


def test_hook_register_commands():
    """A plugin's command is added to the benchharness group, listed in --help and runs; the built-in commands stay."""
    host = bare_host()
    group = click.Group("benchharness", commands=dict(cli.commands))
    with registered(host, CommandPlugin(), "greeter"):
        host.hooks.register_commands(cli=group)
    assert {"run", "report", "greet"} <= set(group.commands)
    assert group.commands["run"] is cli.commands["run"]
    result = CliRunner().invoke(group, ["greet", "plugin"])
    assert result.exit_code == 0, result.output
    assert result.output == "hello, plugin\n"
    assert "Greet NAME." in CliRunner().invoke(group, ["--help"]).output


# ------------------------------------------------------------------ register_report_sections


def run_summary(frame, report):
    """A section that reads the frame, the report and a file in the run directory."""
    files = sorted(path.name for path in report.run.path.iterdir() if path.suffix == ".json")
    return f"<p id='hook-summary'>{len(report.ok)} ok rows of {frame['cell_id'].nunique()} cells; reference {report.reference}; files {', '.join(files)}</p>"


class SectionPlugin:
    """Adds a section after the answers and removes the built-in failures section."""

    @hookimpl
    def register_report_sections(self, register):
        register("Hook summary", run_summary, order=150)
        register("Failures", None, name="failures")


def test_hook_register_report_sections(tmp_path):
    """A plugin's section renders in a built report, in its place, from the frame, the report and the run directory; a removed one is gone."""
    run_path = Path(shutil.copytree(FIXTURE_RUN, tmp_path / "run"))
    run = load_run(run_path)
    host = bare_host()
    with registered(host, SectionPlugin(), "sections"):
        text = build_report(run, host=host)
    ids = re.findall(r"<section id='([^']+)'", text)
    assert ids.index("answers") < ids.index("hook-summary") < ids.index("results")
    assert "failures" not in ids
    ok_rows = sum(record["status"] == "ok" for record in run.records for _ in record.get("latency") or [None])
    summary = re.search(r"<p id='hook-summary'>(.*?)</p>", text).group(1)
    assert summary == f"{ok_rows} ok rows of {len(run.records)} cells; reference {run.reference}; files run.json"
    assert "failures" in re.findall(r"<section id='([^']+)'", build_report(run, host=bare_host()))


# ------------------------------------------------------------------ before_cell, after_cell: a real run


class CellObserver:
    """Remembers what before_cell and after_cell saw, and which records were on disk when after_cell ran."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any, Any]] = []
        self.run_dir: Path | None = None
        self.records_on_disk: list[dict[str, Any]] = []

    @hookimpl
    def before_cell(self, cell, context):
        """Remember the cell and its context."""
        self.events.append(("before", cell, dict(context)))

    @hookimpl
    def after_cell(self, cell, record):
        """Remember the cell and its record, and read results.jsonl as it is now."""
        self.events.append(("after", cell, record))
        self.records_on_disk = [json.loads(line) for line in (self.run_dir / "results.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def observed_run(tmp_path_factory) -> tuple[CellObserver, Suite, RunDir]:
    """A real run of two cells (repeats 2) on the offline device, through the in-process executor, watched by a CellObserver."""
    host = bare_host()
    observer = CellObserver()
    text = suite_text(devices='"hook_offline"', executor="hook_in_process") + "\n"
    text = text.replace('name = "hooks"', 'name = "hooks"\nrepeats = 2')
    with registered(host, ExecutorPlugin(), "in-process"), registered(host, observer, "observer"):
        suite = load_suite_text(text, "hooks.toml", host)
        run_dir = RunDir.create(tmp_path_factory.mktemp("runs"), suite.name)
        observer.run_dir = run_dir.path
        runner = Runner(suite, host, run_dir, console=Console(file=io.StringIO()))
        try:
            summary = runner.run(expand(suite))
        finally:
            runner.close()
    assert summary.counts["skipped"] == 2
    return observer, suite, run_dir


def test_hook_before_cell(observed_run):
    """before_cell is called once per cell, before its record, with the Cell and a context holding the suite and the run directory."""
    observer, suite, run_dir = observed_run
    before = [(cell, context) for kind, cell, context in observer.events if kind == "before"]
    assert [cell.id for cell, _ in before] == [cell.id for cell in expand(suite)]
    for cell, context in before:
        assert isinstance(cell, Cell)
        assert set(context) == {"suite", "run_dir"}
        assert context["suite"] is suite and context["run_dir"] == run_dir.path
    kinds = [kind for kind, *_ in observer.events]
    assert kinds == ["before", "after", "before", "after"]


def test_hook_after_cell(observed_run):
    """after_cell gets each cell with its record, which is already in results.jsonl and equal to what is written there."""
    observer, suite, run_dir = observed_run
    after = [(cell, record) for kind, cell, record in observer.events if kind == "after"]
    written = run_dir.records()
    assert [record for _, record in after] == written
    for cell, record in after:
        assert record["cell"]["id"] == cell.id
        assert record["status"] == "skipped"
        assert record["error_message"] == "device 'hook_offline' unavailable: no machine has it"
    assert observer.records_on_disk == written


# ------------------------------------------------------------------ a hook that gains an argument


class OldObserver:
    """Written against hooks that passed ``cell`` and ``record`` only (one takes even fewer)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, ...]] = []

    @hookimpl
    def after_cell(self, cell, record):
        """Remember the cell and its status."""
        self.seen.append((cell.id, record["status"]))

    @hookimpl
    def before_cell(self, cell):
        """Remember the cell (the context is not needed)."""
        self.seen.append((cell.id,))


@hookspec
def later_after_cell(cell, record, run_dir):
    """A later after_cell that also passes the run directory."""


@hookspec
def later_before_cell(cell, context, run_dir):
    """A later before_cell that also passes the run directory."""


LATER_SPECS = types.SimpleNamespace(after_cell=later_after_cell, before_cell=later_before_cell)
"""A hookspec namespace where before_cell and after_cell have gained ``run_dir``."""


class LaterHookCaller(HookCaller):
    """How a later benchharness would call the hooks: with the new argument, by keyword."""

    def after_cell(self, cell, record, run_dir):
        """Call after_cell with ``run_dir`` too."""
        self._call("after_cell", cell=cell, record=record, run_dir=run_dir)

    def before_cell(self, cell, context, run_dir):
        """Call before_cell with ``run_dir`` too."""
        self._call("before_cell", cell=cell, context=context, run_dir=run_dir)


def test_an_implementation_keeps_working_when_its_hook_gains_an_argument(monkeypatch, tmp_path):
    """Hooks are called with keywords, so an implementation that declares fewer arguments than the spec is still valid and called."""
    cell = Cell("m/t/cpu/r0", "m", "t", [], "cpu", 0, 0)
    manager = pluggy.PluginManager("benchharness")
    manager.add_hookspecs(LATER_SPECS)
    old = OldObserver()
    monkeypatch.setitem(host_module.HOOK_ARGUMENTS, "after_cell", ("cell", "record", "run_dir"))
    monkeypatch.setitem(host_module.HOOK_ARGUMENTS, "before_cell", ("cell", "context", "run_dir"))
    assert hook_problems(manager, old) == []
    manager.register(old, name="old")
    manager.check_pending()
    hooks = LaterHookCaller(manager)
    hooks.before_cell(cell, {"suite": None}, tmp_path)
    hooks.after_cell(cell, {"status": "ok"}, tmp_path)
    manager.hook.after_cell(cell=cell, record={"status": "failed"}, run_dir=tmp_path)
    assert old.seen == [("m/t/cpu/r0",), ("m/t/cpu/r0", "ok"), ("m/t/cpu/r0", "failed")]


def test_an_implementation_with_fewer_arguments_loads_on_todays_host():
    """On the real host, an implementation taking fewer arguments than the hook passes loads and is called."""
    host = bare_host()
    cell = Cell("m/t/cpu/r0", "m", "t", [], "cpu", 0, 0)
    with registered(host, OldObserver(), "old") as old:
        host.hooks.before_cell(cell=cell, context={"suite": None, "run_dir": None})
        host.hooks.after_cell(cell=cell, record={"status": "ok"})
    assert old.seen == [("m/t/cpu/r0",), ("m/t/cpu/r0", "ok")]
