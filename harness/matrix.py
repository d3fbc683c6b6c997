"""Expansion of a suite into the cells of its model x technique x device x repeat matrix."""

from __future__ import annotations

from dataclasses import dataclass, field

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


@dataclass
class Group:
    """The cells timed together in interleaved rounds: one model on one device in one repeat, reference first.

    ``reference`` is the id of the reference pipeline's cell (None when the suite's rules exclude it);
    it takes part even when it already has a record (on ``--resume``), so every speedup is measured
    against a reference timed in the same rounds. Only cells in ``to_record`` get records.
    """

    model: str
    device: str
    repeat: int
    cells: list[Cell] = field(default_factory=list)
    reference: str | None = None
    to_record: set[str] = field(default_factory=set)

    @property
    def label(self) -> str:
        """``model/device/rN``, for progress and messages."""
        return f"{self.model}/{self.device}/r{self.repeat}"


def reference_label(suite: Suite) -> str:
    """The label of the reference pipeline: the suite's first ``[[techniques]]`` entry."""
    return suite.spec.techniques[0].label


def group_cells(todo: list[Cell], suite: Suite) -> list[Group]:
    """The groups that ``todo`` falls into, in run order; each group's reference cell is added and put first."""
    every = {cell.id: cell for cell in expand(suite)}
    reference = reference_label(suite)
    groups: dict[tuple[str, str, int], Group] = {}
    for cell in todo:
        key = (cell.model, cell.device, cell.repeat)
        if key not in groups:
            group = groups[key] = Group(cell.model, cell.device, cell.repeat)
            reference_id = cell_id(cell.model, reference, cell.device, cell.repeat)
            if reference_id in every:
                group.reference = reference_id
                group.cells.append(every[reference_id])
        group = groups[key]
        group.to_record.add(cell.id)
        if cell.id != group.reference:
            group.cells.append(cell)
    return list(groups.values())
