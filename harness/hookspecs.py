"""Every hook a benchharness plugin can implement.

Hooks are always called with keyword arguments, and an implementation may accept fewer
arguments than its specification declares (but none it does not declare), so a hook can
gain an argument without breaking existing plugins. An implementation is a function marked
with ``@benchharness.hookimpl`` and named exactly like its hook. Each hook's docstring says
what to do, when it is called, and shows an example; ``docs/reference.md`` is generated
from them (``python -m benchharness.reference``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import pluggy

if TYPE_CHECKING:
    import click

    from benchharness.api import Cell, Dataset, ModelFamily, Probe, Technique
    from benchharness.executor import Executor

hookspec = pluggy.HookspecMarker("benchharness")


@hookspec
def register_techniques(register: Callable[["Technique"], None]) -> None:
    """Register techniques: call ``register(technique)`` once for each :class:`~benchharness.Technique`.

    ``technique`` is an instance, or a class that can be created without arguments. Suites
    name it by its ``NAME`` in a pipeline's ``steps``; a name that another plugin registered
    first is ignored with a warning naming both plugins. An invalid item (not a ``Technique``,
    no ``NAME``, a ``Config`` that is not a pydantic model) skips the whole plugin.

    Called whenever a :class:`~benchharness.host.PluginHost` is built (by every command that
    loads plugins, and in every worker process) and again when a plugin is registered or
    unregistered inline, so register only: do the work in the technique's methods.

    ```python
    from benchharness import Technique, hookimpl


    class Unchanged(Technique):
        NAME = "unchanged"
        DESCRIPTION = "leave the model as it is"

        def apply(self, model, config, context):
            return model


    @hookimpl
    def register_techniques(register):
        register(Unchanged())
    ```
    """


@hookspec
def register_models(register: Callable[["ModelFamily"], None]) -> None:
    """Register model families: call ``register(family)`` once for each :class:`~benchharness.ModelFamily`.

    Suites name a family in ``models`` by its ``NAME``, or as ``NAME:variant`` when its
    ``variants()`` returns a list. Names and invalid items are handled as in
    ``register_techniques``.

    Called whenever a :class:`~benchharness.host.PluginHost` is built and when a plugin is
    registered or unregistered inline. ``build`` is called later, in the workers, once per
    model a cell needs.

    ```python
    import math

    from torch import nn

    from benchharness import ModelFamily, hookimpl


    class Linear(ModelFamily):
        NAME = "linear"
        DESCRIPTION = "one fully connected layer over the flattened input"

        def build(self, num_classes, input_shape, variant=None):
            return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))


    @hookimpl
    def register_models(register):
        register(Linear())
    ```
    """


@hookspec
def register_datasets(register: Callable[["Dataset"], None]) -> None:
    """Register data sets: call ``register(dataset)`` once for each :class:`~benchharness.Dataset`.

    Suites name a data set in ``[data] name``; the table's other keys are validated by its
    ``Config``. Names and invalid items are handled as in ``register_techniques``.

    Called whenever a :class:`~benchharness.host.PluginHost` is built and when a plugin is
    registered or unregistered inline. ``problem(config)`` is called when a suite is
    validated, ``load(config)`` in each worker that builds a cell.

    ```python
    import torch
    from pydantic import Field

    from benchharness import Data, Dataset, StrictConfig, hookimpl


    class NoiseConfig(StrictConfig):
        samples: int = Field(256, gt=0, description="Samples in each split.")


    class Noise(Dataset):
        NAME = "noise"
        DESCRIPTION = "random 8x8 images in 4 classes, for smoke tests"
        Config = NoiseConfig

        def load(self, config):
            count = config.samples
            generator = torch.Generator().manual_seed(0)
            images = torch.randn(2 * count, 1, 8, 8, generator=generator)
            labels = torch.randint(0, 4, (2 * count,), generator=generator)
            return Data(self.NAME, images[:count], labels[:count], images[count:], labels[count:], num_classes=4)


    @hookimpl
    def register_datasets(register):
        register(Noise())
    ```
    """


@hookspec
def register_probes(register: Callable[["Probe"], None]) -> None:
    """Register hardware probes: call ``register(probe)`` once for each :class:`~benchharness.Probe`.

    Every probe's ``describe()`` is recorded in each run's ``run.json`` and shown by
    ``benchharness probe``. A probe with a ``DEVICE`` (a torch device type) is also a device
    that suites name in ``devices``; it supplies ``synchronize``, ``reset_peak_memory`` and
    ``peak_memory_bytes``. Names and invalid items are handled as in ``register_techniques``;
    a ``DEVICE`` that is neither None nor a name skips the plugin.

    Called whenever a :class:`~benchharness.host.PluginHost` is built and when a plugin is
    registered or unregistered inline.

    ```python
    import platform

    from benchharness import Probe, hookimpl


    class Kernel(Probe):
        NAME = "kernel"
        DESCRIPTION = "the operating system's kernel release"

        def describe(self):
            return {"release": platform.release()}


    @hookimpl
    def register_probes(register):
        register(Kernel())
    ```
    """


@hookspec
def register_executors(register: Callable[["Executor"], None]) -> None:
    """Register executors: call ``register(executor)`` once for each :class:`~benchharness.executor.Executor`.

    An executor decides where the runner's tasks run (``local``, ``ray`` and ``slurm`` are
    built in). A suite picks one with ``[run] executor`` (or ``--executor``), and its options
    under ``[run.<NAME>]`` are validated by its ``Config``. The executor gets each task as a
    :class:`~benchharness.executor.TaskSpec` and returns the task's result dict; a crash, a
    timeout or a lost node is a result made with ``benchharness.executor.failure``, never an
    exception. See docs/executors.md.

    Called whenever a :class:`~benchharness.host.PluginHost` is built and when a plugin is
    registered or unregistered inline; the runner then calls the chosen executor's
    ``start``, ``run`` (per task) and ``stop``.

    ```python
    from benchharness import hookimpl
    from benchharness.plugins.local import LocalExecutor


    class Announcing(LocalExecutor):
        NAME = "announcing"
        DESCRIPTION = "fresh local workers, naming each task before it runs"

        def run(self, spec):
            print(f"{spec.kind} task {spec.name} on {spec.device}")
            return super().run(spec)


    @hookimpl
    def register_executors(register):
        register(Announcing())
    ```
    """


@hookspec
def register_commands(cli: "click.Group") -> None:
    """Add commands to ``cli``, the ``click.Group`` of the ``benchharness`` command, e.g. with ``@cli.command()``.

    A plugin may add commands but not replace or remove one that is already there: that is
    undone, with a warning. A hook that raises is a warning; the other plugins' commands
    are still added.

    Called once by the ``benchharness`` console script before it reads its command line, so
    plugins' commands appear in ``benchharness --help``. Calling ``benchharness.cli.cli`` from
    Python does not call it: call ``host.hooks.register_commands(cli=group)`` yourself.

    ```python
    from collections import Counter
    from pathlib import Path

    import click

    from benchharness import hookimpl
    from benchharness.report.frame import load_run


    @hookimpl
    def register_commands(cli):
        @cli.command()
        @click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
        def statuses(run_dir):
            \"\"\"Count a run's cells by status.\"\"\"
            counts = Counter(record["status"] for record in load_run(run_dir).records)
            click.echo(", ".join(f"{count} {status}" for status, count in sorted(counts.items())))
    ```
    """


@hookspec
def register_report_sections(register: Callable[..., None]) -> None:
    """Register report sections: call ``register(title, render, name=None, order=None)`` once for each.

    ``render(frame)`` or ``render(frame, report)`` receives the run's tidy pandas frame (see
    "The report frame") and the :class:`~benchharness.report.sections.Report` (its rows of
    finished cells, reference, styles, accuracy budget, and ``report.run``: ``run.path`` is
    the run directory, for files a technique wrote there); it returns HTML, a plotly figure,
    a list of those, or None to leave the section out. The built-in sections are registered
    the same way: a section registered under a taken ``name`` replaces that one
    (``render=None`` removes it), and ``order`` places it (built-ins use 100 to 910; the
    default is 500). A render that raises becomes an error box naming the plugin; the rest of
    the report is still written.

    Called each time a report is built: by ``benchharness report``, at the end of
    ``benchharness run``, and by ``build_report``/``write_report`` with a ``host``.

    ```python
    import html
    import json

    from benchharness import hookimpl


    def sparsity_per_layer(frame, report):
        folder = report.run.path / "my_prune"  # written by the technique under context.workdir
        if not folder.is_dir():
            return None  # no cell of this run wrote one: leave the section out
        rows = "".join(
            f"<tr><td>{html.escape(path.stem)}</td><td>{html.escape(layer)}</td><td>{share:.0%}</td></tr>"
            for path in sorted(folder.glob("*.json"))
            for layer, share in json.loads(path.read_text()).items()
        )
        return f"<table><tr><th>cell</th><th>layer</th><th>sparsity</th></tr>{rows}</table>"


    @hookimpl
    def register_report_sections(register):
        register("Sparsity per layer", sparsity_per_layer, order=305)
    ```
    """


@hookspec
def before_cell(cell: "Cell", context: dict[str, Any]) -> None:
    """Observe a cell about to run: ``cell`` is the :class:`~benchharness.Cell`, ``context`` holds ``suite`` and ``run_dir``.

    ``context["suite"]`` is the loaded :class:`~benchharness.suite.Suite` and
    ``context["run_dir"]`` the run directory's ``Path``. Use it to log, or to open a run in an
    experiment tracker. A hook that raises is a warning; the cell still runs.

    Called in the runner's process (not the cell's worker) just before each cell that will
    be recorded is built, whatever comes of it (a cell that is then skipped too). On
    ``--resume``, cells recorded already are not announced again, even when they are
    rebuilt to time the others against. With ``parallel_groups`` above 1 it may be called
    from several threads.

    ```python
    import time

    from benchharness import hookimpl


    @hookimpl
    def before_cell(cell, context):
        with open(context["run_dir"] / "cell-starts.log", "a") as log:
            log.write(f"{time.strftime('%H:%M:%S')} {cell.id} ({context['suite'].name})\\n")
    ```
    """


@hookspec
def after_cell(cell: "Cell", record: dict[str, Any]) -> None:
    """Observe a cell's result: ``record`` is the JSON object just appended to ``results.jsonl``.

    The record has the cell's ``status`` (``ok``, ``skipped``, ``failed`` or ``timeout``),
    ``error_type`` and ``error_message`` when it is not ok, ``metrics``, ``latency`` (one entry
    per batch size), ``notes`` and the rest of :class:`~benchharness.record.CellRecord`. Use it
    to send results to an experiment tracker. A hook that raises is a warning; the run goes on.

    Called in the runner's process right after the record is written, whatever its status:
    a cell that is not ok once it is built, an ok cell once its group's timing rounds are
    done. Calls never overlap (the runner holds a lock while it records).

    ```python
    from benchharness import hookimpl


    @hookimpl
    def after_cell(record):  # an implementation may take fewer arguments than the hook passes
        accuracy = (record.get("metrics") or {}).get("accuracy_top1")
        print(record["cell"]["id"], record["status"], accuracy)
    ```
    """
