"""Report sections: what a section is, the report a section renders from, and how sections are collected and ordered.

Built-in sections (the answers, the tables, the figures, the environment) are registered
through ``register_report_sections`` by ``benchharness.plugins.report_sections``, exactly as
plugins' sections are, so a plugin can add, reorder, replace or remove any of them.
"""

from __future__ import annotations

import html
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import pandas as pd

from benchharness.report.assets import figure_html
from benchharness.report.frame import Run
from benchharness.report.tables import slug

DEFAULT_ORDER = 500


@dataclass
class Section:
    """A report section: its title, its ``render``, the plugin that registered it, its name and place.

    ``render(frame)`` or ``render(frame, report)`` returns HTML, a plotly figure, a list of
    those, or None to leave the section out. A section whose plugin failed to register it has
    no ``render`` but the ``error`` it raised.
    """

    title: str
    """The heading shown above the section."""
    render: Callable[..., Any] | None
    """``render(frame)`` or ``render(frame, report)``; None removes the section of this name (or marks one whose plugin failed)."""
    plugin: str = "unknown plugin"
    """The plugin that registered it, named in error boxes."""
    error: str | None = None
    """What the plugin's register hook raised, shown in place of the section; None normally."""
    name: str = ""
    """The section's id in the page and the name another section replaces it by; the title as a slug when empty."""
    order: float = DEFAULT_ORDER
    """Where it goes: sections render by ascending order (built-ins 100 to 910, default 500)."""

    def __post_init__(self) -> None:
        self.name = self.name or slug(self.title)


@dataclass
class Report:
    """What sections render from: the run, its frame with comparisons, the reference, one style per technique, the accuracy budget."""

    run: Run
    """The run: ``run.path`` (its directory), ``run.info`` (``run.json``) and ``run.records``."""
    frame: pd.DataFrame
    """The tidy frame with comparisons: a row per cell and latency entry (docs/reference.md, "The report frame")."""
    reference: str | None
    """The label of the reference pipeline (the suite's first technique entry)."""
    techniques: list[str]
    """The pipelines' labels in the suite's order (the reference first), then any others the records name."""
    styles: dict[str, dict[str, str]]
    """One ``{"color", "symbol"}`` per technique label, so that every figure draws a technique alike."""
    max_accuracy_drop: float
    """The accuracy budget in percentage points: how much top-1 accuracy an answer may lose against the reference."""
    figures: int = field(default=0)
    """How many figure ids :meth:`next_figure_id` has handed out."""

    @property
    def suite(self) -> dict[str, Any]:
        """The suite as run, parsed."""
        return self.run.suite

    def distinct(self, column: str) -> list[float]:
        """The distinct numbers a column holds in the finished cells' rows, in the order they first appear ([] without the column)."""
        return pd.to_numeric(self.ok[column], errors="coerce").dropna().unique().tolist() if column in self.ok else []

    @property
    def hosts(self) -> list[str]:
        """The machines the finished cells were timed on (none for records from before records said so)."""
        return sorted(host for host in self.ok["host"].dropna().unique() if host)

    @property
    def ok(self) -> pd.DataFrame:
        """The rows of cells that finished."""
        return self.frame[self.frame["status"] == "ok"]

    @property
    def several_hosts(self) -> bool:
        """Whether cells were timed on more than one machine (results are then grouped by machine)."""
        return len(self.hosts) > 1

    @property
    def recipes(self) -> list[str]:
        """The training recipes of the finished cells, in the order they first appear ([] for a suite without recipes)."""
        return [recipe for recipe in self.ok["recipe"].dropna().unique() if recipe] if "recipe" in self.ok else []

    @property
    def thread_counts(self) -> list[int]:
        """The thread counts latency was timed at, smallest first."""
        return sorted(int(count) for count in self.distinct("threads"))

    @property
    def group_keys(self) -> list[str]:
        """The columns a comparison group is made of: model (and recipe, with recipes), device (and host, when several)."""
        keys = ["model", "recipe", "device"] if self.recipes else ["model", "device"]
        return keys + ["host"] if self.several_hosts else keys

    def group_title(self, key: tuple) -> str:
        """``mlp on cpu``; ``mlp (recipe sgd-step) on cpu``; ``on cpu (node-1)`` with several machines."""
        values = dict(zip(self.group_keys, key))
        recipe = f" (recipe {values['recipe']})" if values.get("recipe") else ""
        host = f" ({values['host']})" if values.get("host") else ""
        return f"{values['model']}{recipe} on {values['device']}{host}"

    def next_figure_id(self) -> str:
        """A fresh id for a figure's element."""
        self.figures += 1
        return f"figure-{self.figures}"


def registrar(sections: list[Section], plugin: str) -> Callable[..., None]:
    """The ``register(title, render, name=None, order=None)`` callback that a plugin's hook gets."""

    def register(title: str, render: Callable[..., Any] | None, name: str | None = None, order: float | None = None) -> None:
        sections.append(Section(str(title), render, plugin, name=name or "", order=DEFAULT_ORDER if order is None else float(order)))

    return register


def collect_sections(host: Any) -> list[Section]:
    """The built-in sections and every plugin's, in the order they render.

    A section registered under a name already taken replaces the earlier one (a ``render`` of
    None removes it); a plugin whose hook raises gives an error section in its place.
    """
    from benchharness.plugins import report_sections as builtin

    sections: list[Section] = []
    if host is None:
        builtin.register_report_sections(registrar(sections, builtin.__name__))
    else:
        for impl in host.pm.hook.register_report_sections.get_hookimpls():  # registration order: built-ins first, so plugins replace them
            try:
                impl.function(**({"register": registrar(sections, impl.plugin_name)} if "register" in impl.argnames else {}))
            except Exception as error:  # shown in the report, which is still written
                sections.append(Section(f"Sections of {impl.plugin_name}", None, impl.plugin_name, f"{type(error).__name__}: {error}"))
    return arrange(sections)


def arrange(sections: list[Section]) -> list[Section]:
    """Sections by ``order`` (then registration), the last one registered under a name winning, removed ones left out."""
    by_name: dict[str, tuple[int, Section]] = {}
    for index, section in enumerate(sections):
        first = by_name.get(section.name, (index, section))[0]
        by_name[section.name] = (first, section)
    kept = [(position, section) for position, section in by_name.values() if section.render is not None or section.error is not None]
    return [section for _, section in sorted(kept, key=lambda item: (item[1].order, item[0]))]


def _content_html(content: Any, report: Report) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        return "".join(_content_html(item, report) for item in content if item is not None)
    return figure_html(content, report.next_figure_id())


def error_box(message: str) -> str:
    """A visible box that says what went wrong, in place of a section's content."""
    return f"<div class='section-error'>{html.escape(message)}</div>"


def call_render(render: Callable[..., Any], report: Report) -> Any:
    """``render(frame)`` or ``render(frame, report)``, whichever it accepts."""
    try:
        parameters = inspect.signature(render).parameters.values()
        wants_report = sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in parameters)
    except (TypeError, ValueError):
        wants_report = False
    return render(report.frame, report) if wants_report else render(report.frame)


def section_html(section: Section, report: Report) -> str:
    """A section: its title and what its render returned, an error box naming the plugin when it raised, or '' for None."""
    heading = f"<h2>{html.escape(section.title)}</h2>"
    if section.error is not None:
        return f"<section id='{section.name}'>{heading}{error_box(f'plugin {section.plugin!r} could not register its report sections: {section.error}')}</section>"
    try:
        content = call_render(section.render, report)
        if content is None or (isinstance(content, (list, tuple)) and not any(item is not None for item in content)):
            return ""
        body = _content_html(content, report)
    except Exception as error:  # one plugin's bug must not lose the rest of the report
        body = error_box(f"section {section.title!r} of plugin {section.plugin!r} failed: {type(error).__name__}: {error}")
    return f"<section id='{html.escape(section.name, quote=True)}'>{heading}{body}</section>"
