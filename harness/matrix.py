"""Expansion of a suite into the cells of its model x technique x device x repeat matrix."""

from __future__ import annotations

from dataclasses import dataclass, field

from benchharness.api import Cell, Step
from benchharness.suite import Suite


def cell_id(model: str, technique: str, device: str, repeat: int, recipe: str | None = None) -> str:
    """The stable, human-readable id of a cell: ``model/technique/device/rN``, with the recipe after the model when there is one."""
    middle = f"{recipe}/{technique}" if recipe is not None else technique
    return f"{model}/{middle}/{device}/r{repeat}"


def expand(suite: Suite) -> list[Cell]:
    """Every cell of the suite, in run order, after include and exclude rules."""
    spec = suite.spec
    cells = []
    recipes: list[str | None] = [recipe.name for recipe in spec.recipes] or [None]
    for repeat in range(spec.repeats):
        for model in spec.models:
            for recipe in recipes:
                for index, entry in enumerate(spec.techniques):
                    for device in spec.devices:
                        label = entry.label
                        if spec.include and not any(rule.matches(model, label, device, recipe) for rule in spec.include):
                            continue
                        if any(rule.matches(model, label, device, recipe) for rule in spec.exclude):
                            continue
                        steps = [Step(name, dict(suite.step_configs[index].get(name, {}))) for name in entry.steps]
                        identity = cell_id(model, label, device, repeat, recipe)
                        cells.append(Cell(identity, model, label, steps, device, repeat, spec.seed + repeat, recipe))
    return cells


@dataclass
class Group:
    """The cells timed together in interleaved rounds: one model (and recipe) on one device in one repeat, reference first.

    ``reference`` is the id of the reference pipeline's cell (None when the suite's rules exclude it);
    it takes part even when it already has a record (on ``--resume``), so every speedup is measured
    against a reference timed in the same rounds. Only cells in ``to_record`` get records.
    """

    model: str
    device: str
    repeat: int
    recipe: str | None = None
    cells: list[Cell] = field(default_factory=list)
    reference: str | None = None
    to_record: set[str] = field(default_factory=set)

    @property
    def label(self) -> str:
        """``model/device/rN`` (``model/recipe/device/rN`` with recipes), for progress and messages."""
        model = self.model if self.recipe is None else f"{self.model}/{self.recipe}"
        return f"{model}/{self.device}/r{self.repeat}"


def reference_label(suite: Suite) -> str:
    """The label of the reference pipeline: the suite's first ``[[techniques]]`` entry."""
    return suite.spec.techniques[0].label


def group_cells(todo: list[Cell], suite: Suite) -> list[Group]:
    """The groups that ``todo`` falls into, in run order; each group's reference cell is added and put first."""
    every = {cell.id: cell for cell in expand(suite)}
    reference = reference_label(suite)
    groups: dict[tuple[str, str | None, str, int], Group] = {}
    for cell in todo:
        key = (cell.model, cell.recipe, cell.device, cell.repeat)
        if key not in groups:
            group = groups[key] = Group(cell.model, cell.device, cell.repeat, cell.recipe)
            reference_id = cell_id(cell.model, reference, cell.device, cell.repeat, cell.recipe)
            if reference_id in every:
                group.reference = reference_id
                group.cells.append(every[reference_id])
        group = groups[key]
        group.to_record.add(cell.id)
        if cell.id != group.reference:
            group.cells.append(cell)
    return list(groups.values())
