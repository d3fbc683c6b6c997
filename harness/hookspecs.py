"""Every hook a benchharness plugin can implement.

Hooks are always called with keyword arguments, and an implementation may
accept fewer arguments than its specification declares. Each hook has a
section in ``docs/plugins.md`` whose heading is its signature.
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
    """Register techniques by calling ``register(technique_instance)`` once for each."""


@hookspec
def register_models(register: Callable[["ModelFamily"], None]) -> None:
    """Register model families by calling ``register(model_family_instance)`` once for each."""


@hookspec
def register_datasets(register: Callable[["Dataset"], None]) -> None:
    """Register data sets by calling ``register(dataset_instance)`` once for each."""


@hookspec
def register_probes(register: Callable[["Probe"], None]) -> None:
    """Register hardware probes (and the devices they provide) by calling ``register(probe_instance)``."""


@hookspec
def register_executors(register: Callable[["Executor"], None]) -> None:
    """Register executors (where cells run: this machine, a cluster) by calling ``register(executor_instance)``."""


@hookspec
def register_commands(cli: "click.Group") -> None:
    """Add commands to the ``benchharness`` command group, e.g. with ``@cli.command()``."""


@hookspec
def register_report_sections(register: Callable[..., None]) -> None:
    """Register report sections by calling ``register(title, render, name=None, order=None)``.

    ``render(frame)`` or ``render(frame, report)`` receives the run's tidy pandas frame (and the
    report: reference, styles, budget, run) and returns HTML, a plotly figure, a list of those,
    or None. The built-in sections are registered the same way; a section registered under a
    taken ``name`` replaces that one (``render=None`` removes it), and ``order`` places it.
    """


@hookspec
def before_cell(cell: "Cell", context: dict[str, Any]) -> None:
    """Called in the runner just before ``cell`` starts; ``context`` holds the suite and the run directory."""


@hookspec
def after_cell(cell: "Cell", record: dict[str, Any]) -> None:
    """Called in the runner once ``record`` (the cell's result, whatever its status) is written."""
