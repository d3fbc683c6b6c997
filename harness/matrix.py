"""Expansion of a suite into the cells of its model x technique x device x repeat matrix."""

from __future__ import annotations

from benchharness.api import Cell, Step
from benchharness.suite import Suite


def cell_id(model: str, technique: str, device: str, repeat: int) -> str:
    """The stable, human-readable id of a cell."""
    return f"{model}/{technique}/{device}/r{repeat}"


def expand(suite: Suite) -> list[Cell]:
    """Every cell of the suite, in run order, after include and exclude rules."""
    spec = suite.spec
    cells = []
    for repeat in range(spec.repeats):
        for model in spec.models:
            for index, entry in enumerate(spec.techniques):
                for device in spec.devices:
                    label = entry.label
                    if spec.include and not any(rule.matches(model, label, device) for rule in spec.include):
                        continue
                    if any(rule.matches(model, label, device) for rule in spec.exclude):
                        continue
                    steps = [Step(name, dict(suite.step_configs[index].get(name, {}))) for name in entry.steps]
                    cells.append(Cell(cell_id(model, label, device, repeat), model, label, steps, device, repeat, spec.seed + repeat))
    return cells
