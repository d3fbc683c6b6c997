"""The plugin reference, ``docs/reference.md``, generated from the code so that it cannot drift.

Hooks come from :mod:`benchharness.hookspecs` (signature and docstring); public types from
their classes' source, read with :mod:`ast`: class docstrings, fields and class attributes
with the string literal that follows them (an attribute docstring), ``self.x = ...``
attributes of ``__init__`` likewise, properties and methods with their docstrings. The report
frame's columns come from the constants of :mod:`benchharness.report.frame`.

``python -m benchharness.reference`` writes ``docs/reference.md``; with ``--check`` it exits 1
when the file differs from what the code gives.
"""

from __future__ import annotations

import argparse
import ast
import copy
import difflib
import inspect
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from pydantic import BaseModel

import benchharness
from benchharness import hookspecs
from benchharness.api import Cell, CellContext, Data, Dataset, ModelFamily, NoConfig, Probe, Step, StrictConfig, Technique
from benchharness.executor import Executor, TaskSpec
from benchharness.report import frame as report_frame
from benchharness.report.frame import Run
from benchharness.report.sections import Report, Section
from benchharness.train import Trainer

DEFAULT_OUTPUT = Path("docs") / "reference.md"
REGENERATE = "python -m benchharness.reference"

PUBLIC_TYPES: tuple[type, ...] = (
    Technique, CellContext, Data, Trainer, Probe, ModelFamily, Dataset, StrictConfig, NoConfig,
    Step, Cell, Executor, TaskSpec, Report, Run, Section,
)
"""The types plugin authors subclass, receive or build, in the order the reference shows them."""

PLUGIN_MODULE_ATTRIBUTES: dict[str, tuple[str, str]] = {
    "PRELOAD": (
        "tuple[str, ...]",
        "Names of modules the plugin's code imports slowly (e.g. `(\"sklearn.datasets\",)`). The forkserver that "
        "cell workers are forked from imports them once (`benchharness.worker.preload_builtin_plugins`), so each "
        "worker starts with them already imported instead of paying for the import in every cell. A module that "
        "cannot be imported is left out silently. Only the built-in plugins' `PRELOAD` is read so far.",
    ),
}
"""Attributes a plugin module may define besides its hooks: name to (type, what it does)."""

FRAME_GROUPS: tuple[tuple[str, str | None, str], ...] = (
    ("identity", "IDENTITY_COLUMNS", "The cell and its outcome. `host` is the machine(s) the cell was timed on (empty for records from before records said so); `steps` the step techniques joined by ` -> `. Never overwritten by a metric, note or extra."),
    ("metrics", "METRIC_COLUMNS", "Every key of the record's `metrics`: these always, plus any metric a technique adds."),
    ("latency", "LATENCY_COLUMNS", "Every key of a `latency` entry (one row per entry, that is per batch size): these always, plus e.g. other `latency_*_ms`, `energy_*` and a probe's readings (`gpu_power_w_mean`). When a metric and a latency entry share a key, the latency entry's value is the row's."),
    ("comparisons", "COMPARISON_COLUMNS", "Added by `add_comparisons(frame, reference)` against the `ok` reference row (the suite's first `[[techniques]]` entry) of the same model, device, host, repeat and batch size. `accuracy_delta` is a fraction, this minus the reference; its 95% CI is `paired` (Agresti-Min, on the images each cell got right) when both records have `metrics.accuracy_correct_bits` for the same number of images, `unpaired` (Newcombe's hybrid score) otherwise, as `accuracy_delta_method` says. `size_ratio` is this size / the reference's, `compression_ratio` its inverse, `flops_ratio` reference FLOPs / these. Reference rows compare with themselves: delta 0, ratios 1, speedup 1, no CIs."),
    ("recorded comparisons", "RECORDED_COMPARISONS", "Keys of the latency entry too: speedups against the reference and the A/A control, computed from the paired, interleaved rounds when the cells were timed (any `speedup_*` or `aa_*` key joins this group)."),
    ("notes", None, "Every key of the record's `notes`, by its own name, or `note_<name>` when a column above has that name."),
    ("extras", None, "Every scalar top-level key of the record beyond its own fields (what a plugin or an executor added to a task's result), or `extra_<name>` when taken. Dicts and lists at the top level are not columns."),
    ("raw", "RAW_COLUMNS", "Large values kept in the frame but left out of `report.csv` (they stay in `results.jsonl`): per-iteration latency samples and a bit per test image. They come last, with every other column holding lists (`round_p50_ms`, `other_cores`, a list-valued note)."),
)
"""The report frame's column groups in frame order: (group, constant of ``benchharness.report.frame`` or None for groups named by the records, where they come from)."""

REQUIRED = "required"
READ_ONLY = "read-only"
SET_BY_INIT = "set by `__init__`"
EMPTY_FACTORIES = {"dict": "{}", "list": "[]", "set": "set()", "tuple": "()"}

_ROLE = re.compile(r":(?:class|meth|func|data|attr|mod|exc|obj):`(~?)([^`]+)`")
_DOUBLE_BACKTICKS = re.compile(r"(?<!`)``([^`]+)``(?!`)")
_FENCE = re.compile(r"(^```.*?^```$)", re.DOTALL | re.MULTILINE)


@dataclass
class Member:
    """A documented attribute or method of a public type."""

    name: str
    """The attribute's name, or the method's signature without ``self``."""
    type: str
    """The attribute's annotation as written (quotes removed), or '' for a method or an unannotated attribute."""
    default: str
    """The attribute's default as Markdown: a code span, ``required``, ``read-only`` for a property, ``set by __init__``; '' for a method."""
    doc: str
    """Its doc: the attribute docstring or the property's docstring, or the first paragraph of a method's docstring."""
    hint: str
    """Where to add the doc when it is missing."""


@dataclass
class TypeReference:
    """What the reference says about one public type."""

    cls: type
    """The type."""
    attributes: list[Member]
    """Its public fields and class attributes, then ``__init__``'s ``self.x`` attributes, then properties, each in source order."""
    methods: list[Member]
    """Its public methods, in source order."""

    @property
    def doc(self) -> str:
        """The class docstring."""
        return inspect.getdoc(self.cls) or ""

    @property
    def import_line(self) -> str:
        """How a plugin imports the type."""
        module = "benchharness" if self.cls.__name__ in getattr(benchharness, "__all__", ()) else self.cls.__module__
        return f"from {module} import {self.cls.__name__}"


# ------------------------------------------------------------------ text


def markdown(text: str) -> str:
    """A docstring's reST roles and double backticks as Markdown code spans; fenced code blocks are left as they are."""
    parts = _FENCE.split(text)
    return "".join(part if index % 2 else _prose_markdown(part) for index, part in enumerate(parts))


def _prose_markdown(text: str) -> str:
    """Prose (no code block) with reST roles and double backticks as Markdown code spans."""
    text = _ROLE.sub(lambda match: f"`{match.group(2).rsplit('.', 1)[-1] if match.group(1) else match.group(2)}`", text)
    return _DOUBLE_BACKTICKS.sub(r"`\1`", text)


def first_paragraph(text: str) -> str:
    """The first paragraph of a cleaned docstring."""
    return text.strip().split("\n\n", 1)[0] if text else ""


def cell(text: str) -> str:
    """``text`` fit for a Markdown table cell: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def code(text: str) -> str:
    """``text`` as an inline code span, or '' for no text."""
    return f"`{text}`" if text else ""


# ------------------------------------------------------------------ source


class _Unquote(ast.NodeTransformer):
    """Replaces string annotations (``"nn.Module"``) by the expressions they spell."""

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        if isinstance(node.value, str):
            try:
                return self.visit(ast.parse(node.value, mode="eval").body)
            except SyntaxError:
                return node
        return node


def annotation_text(node: ast.expr | None) -> str:
    """An annotation as written, without the quotes of forward references."""
    return ast.unparse(_Unquote().visit(copy.deepcopy(node))) if node is not None else ""


def argument_text(argument: ast.arg, default: ast.expr | None = None, prefix: str = "") -> str:
    """One argument as PEP 8 writes it: ``name: Type = default``, ``name=default`` or ``*args``."""
    text = prefix + argument.arg + (f": {annotation_text(argument.annotation)}" if argument.annotation is not None else "")
    if default is not None:
        text += f" = {ast.unparse(default)}" if argument.annotation is not None else f"={ast.unparse(default)}"
    return text


def arguments_text(arguments: ast.arguments) -> str:
    """A function's arguments, with ``/`` and ``*`` where the function has them."""
    positional = [*arguments.posonlyargs, *arguments.args]
    defaults = [None] * (len(positional) - len(arguments.defaults)) + list(arguments.defaults)
    parts = [argument_text(argument, default) for argument, default in zip(positional, defaults)]
    if arguments.posonlyargs:
        parts.insert(len(arguments.posonlyargs), "/")
    if arguments.vararg is not None:
        parts.append(argument_text(arguments.vararg, prefix="*"))
    elif arguments.kwonlyargs:
        parts.append("*")
    parts += [argument_text(argument, default) for argument, default in zip(arguments.kwonlyargs, arguments.kw_defaults)]
    if arguments.kwarg is not None:
        parts.append(argument_text(arguments.kwarg, prefix="**"))
    return ", ".join(parts)


def function_signature(node: ast.FunctionDef, drop_first: bool) -> str:
    """``name(arg: Type, ...) -> Return`` of a function node as written (quotes of forward references removed), without ``self`` when ``drop_first``."""
    arguments = copy.deepcopy(node.args)
    if drop_first:
        if arguments.posonlyargs:
            arguments.posonlyargs = arguments.posonlyargs[1:]
        else:
            arguments.args = arguments.args[1:]
    returns = f" -> {annotation_text(node.returns)}" if node.returns is not None else ""
    return f"{node.name}({arguments_text(arguments)}){returns}"


def class_node(cls: type) -> ast.ClassDef:
    """The ``class`` statement of ``cls``, parsed from its source."""
    return ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0]


def source_file(cls: type) -> str:
    """The file that defines ``cls``, relative to the project when it can be (``harness/api.py``)."""
    path = Path(inspect.getsourcefile(cls) or cls.__module__).resolve()
    root = Path(benchharness.__file__).resolve().parent.parent
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def following_docstring(body: list[ast.stmt], index: int) -> str:
    """The string literal right after ``body[index]`` (an attribute docstring), cleaned, or ''."""
    if index + 1 < len(body):
        after = body[index + 1]
        if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str):
            return inspect.cleandoc(after.value.value)
    return ""


def assigned_name(statement: ast.stmt, owner: str | None = None) -> str | None:
    """The name a statement assigns: ``x = ...``/``x: T = ...`` (owner None) or ``self.x = ...`` (owner ``self``)."""
    targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target] if isinstance(statement, ast.AnnAssign) else []
    if len(targets) != 1:
        return None
    target = targets[0]
    if owner is None and isinstance(target, ast.Name):
        return target.id
    if owner is not None and isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == owner:
        return target.attr
    return None


def default_text(statement: ast.stmt) -> str:
    """The default an assignment gives, as code: its value as written, ``field(default_factory=dict)`` as ``{}``; ``required`` without one."""
    value = statement.value
    if value is None:
        return REQUIRED
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "field":
        for keyword in value.keywords:
            if keyword.arg == "default_factory":
                factory = ast.unparse(keyword.value)
                return code(EMPTY_FACTORIES.get(factory, f"{factory}()"))
            if keyword.arg == "default":
                return code(ast.unparse(keyword.value))
        return REQUIRED
    return code(ast.unparse(value))


def is_public(name: str) -> bool:
    """Whether a member name is part of the public API (no leading underscore)."""
    return not name.startswith("_")


def decorator_names(node: ast.FunctionDef) -> set[str]:
    """The names of a function's decorators (``property``, ``x.setter`` as ``setter``)."""
    return {decorator.attr if isinstance(decorator, ast.Attribute) else getattr(decorator, "id", "") for decorator in node.decorator_list}


def field_description(cls: type, name: str) -> str:
    """The ``Field(description=...)`` of a pydantic model's field, or ''."""
    if isinstance(cls, type) and issubclass(cls, BaseModel) and name in cls.model_fields:
        return cls.model_fields[name].description or ""
    return ""


# ------------------------------------------------------------------ members


def class_attributes(cls: type, node: ast.ClassDef) -> Iterator[Member]:
    """Fields and class attributes assigned in the class body, with their attribute docstrings."""
    for index, statement in enumerate(node.body):
        name = assigned_name(statement)
        if name and is_public(name):
            annotation = statement.annotation if isinstance(statement, ast.AnnAssign) else None
            doc = following_docstring(node.body, index) or field_description(cls, name)
            hint = f"add a string literal on the line after `{name}` in class {cls.__name__} ({source_file(cls)})"
            yield Member(name, annotation_text(annotation), default_text(statement), doc, hint)


def init_attributes(cls: type, node: ast.ClassDef) -> Iterator[Member]:
    """Public ``self.x = ...`` attributes of ``__init__``, typed by their annotation or by the argument they are set from."""
    init = next((item for item in node.body if isinstance(item, ast.FunctionDef) and item.name == "__init__"), None)
    if init is None:
        return
    argument_types = {argument.arg: argument.annotation for argument in [*init.args.args, *init.args.kwonlyargs]}
    for index, statement in enumerate(init.body):
        name = assigned_name(statement, owner="self")
        if name and is_public(name):
            if isinstance(statement, ast.AnnAssign):
                annotation = statement.annotation
            else:
                annotation = argument_types.get(statement.value.id) if isinstance(statement.value, ast.Name) else None
            hint = f"add a string literal on the line after `self.{name} = ...` in {cls.__name__}.__init__ ({source_file(cls)})"
            yield Member(name, annotation_text(annotation), SET_BY_INIT, following_docstring(init.body, index), hint)


def function_members(cls: type, node: ast.ClassDef) -> Iterator[tuple[ast.FunctionDef, Member]]:
    """Public functions of the class body (properties included) with their docs."""
    for item in node.body:
        if isinstance(item, ast.FunctionDef) and is_public(item.name) and "setter" not in decorator_names(item):
            doc = inspect.cleandoc(ast.get_docstring(item, clean=False) or "")
            hint = f"add a docstring to {cls.__name__}.{item.name} ({source_file(cls)})"
            yield item, Member(item.name, "", "", doc, hint)


def type_reference(cls: type) -> TypeReference:
    """The attributes (fields, class attributes, ``__init__`` attributes, properties) and methods of ``cls``."""
    node = class_node(cls)
    attributes = [*class_attributes(cls, node), *init_attributes(cls, node)]
    methods = []
    for function, member in function_members(cls, node):
        decorators = decorator_names(function)
        if decorators & {"property", "cached_property"}:
            attributes.append(Member(member.name, annotation_text(function.returns), READ_ONLY, member.doc, member.hint))
        else:
            signature = function_signature(function, drop_first="staticmethod" not in decorators)
            methods.append(Member(signature, "", "", first_paragraph(member.doc), member.hint))
    return TypeReference(cls, attributes, methods)


def undocumented(cls: type) -> list[str]:
    """What of ``cls`` has no doc, each with where to add one; [] when everything is documented."""
    reference = type_reference(cls)
    missing = [] if reference.doc.strip() else [f"{cls.__name__} has no class docstring ({source_file(cls)})"]
    for member in [*reference.attributes, *reference.methods]:
        if not member.doc.strip():
            missing.append(f"{cls.__name__}.{member.name.split('(')[0]} is undocumented: {member.hint}")
    return missing


# ------------------------------------------------------------------ hooks


def hook_names() -> list[str]:
    """Every hook of :mod:`benchharness.hookspecs`, in the order they are defined."""
    from benchharness.host import HOOK_ARGUMENTS

    return list(HOOK_ARGUMENTS)


def hook_signature(name: str) -> str:
    """``name(arg: Type, ...) -> None`` as the hook's specification writes it, without quotes."""
    tree = ast.parse(inspect.getsource(getattr(hookspecs, name)))
    function = next(node for node in tree.body if isinstance(node, ast.FunctionDef))
    return function_signature(function, drop_first=False)


def hook_doc(name: str) -> str:
    """A hook's docstring."""
    return inspect.getdoc(getattr(hookspecs, name)) or ""


def hook_example(name: str) -> str | None:
    """The first fenced python block of a hook's docstring, or None."""
    match = re.search(r"```python\n(.*?)```", hook_doc(name), re.DOTALL)
    return match.group(1) if match else None


# ------------------------------------------------------------------ Markdown


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(row) + " |" for row in rows)]


def hooks_markdown() -> list[str]:
    """The Hooks part: the module's docstring, then each hook under its signature."""
    lines = ["## Hooks", "", markdown(inspect.getdoc(hookspecs) or ""), ""]
    for name in hook_names():
        lines += [f'<a id="{name}"></a>', "", f"### `{hook_signature(name)}`", "", markdown(hook_doc(name)), ""]
    return lines


def type_markdown(reference: TypeReference) -> list[str]:
    """One public type: heading, import, docstring, attribute table, method table."""
    lines = [f"### {reference.cls.__name__}", "", f"`{reference.import_line}`", "", markdown(reference.doc), ""]
    if reference.attributes:
        rows = [[code(member.name), code(cell(member.type)), cell(member.default), cell(markdown(member.doc))] for member in reference.attributes]
        lines += table(["attribute", "type", "default", "doc"], rows) + [""]
    if reference.methods:
        rows = [[code(cell(member.name)), cell(markdown(member.doc))] for member in reference.methods]
        lines += table(["method", "doc"], rows) + [""]
    return lines


def types_markdown() -> list[str]:
    """The Public types part."""
    lines = [
        "## Public types", "",
        "Every public attribute and method of the types a plugin subclasses, receives or builds. "
        "Attributes are documented where they are assigned (a string literal right after the assignment), "
        "so this table is made from the source; a test fails when one has no doc.", "",
    ]
    for cls in PUBLIC_TYPES:
        lines += type_markdown(type_reference(cls))
    return lines


def frame_groups() -> list[tuple[str, list[str], str]]:
    """(group, its core columns, where they come from) per column group of the report frame, in frame order."""
    return [(group, list(getattr(report_frame, constant)) if constant else [], source) for group, constant, source in FRAME_GROUPS]


def always_present_columns() -> list[str]:
    """The columns of the frame of no records: there whatever the records hold."""
    return list(report_frame.add_comparisons(report_frame.tidy_frame([]), None).columns)


def frame_markdown() -> list[str]:
    """The report frame part: a row per column group, its columns read from :mod:`benchharness.report.frame`."""
    lines = [
        "## The report frame", "",
        "`render(frame)` of a report section, `report.csv` and the figures read one pandas frame: "
        "`tidy_frame(records)` with `add_comparisons(frame, reference)` (`benchharness.report.frame`). "
        "It has a row per cell and latency entry (batch size); a cell without latency has one row with empty measurements. "
        "Its columns come in the order of the groups below. The core columns listed are there even when no record has them "
        "(empty), so a section written for new records still renders an old run; those marked * only when a record has them. "
        "Whatever else a record holds becomes a column of its group.", "",
    ]
    present = set(always_present_columns())
    rows = [
        [group, ", ".join(code(column) + ("" if column in present else "*") for column in columns) or "(named by the records)", cell(source)]
        for group, columns, source in frame_groups()
    ]
    return lines + table(["group", "core columns", "from"], rows) + [""]


def module_attributes_markdown() -> list[str]:
    """The Plugin module attributes part."""
    rows = [[code(name), code(cell(kind)), cell(doc)] for name, (kind, doc) in PLUGIN_MODULE_ATTRIBUTES.items()]
    return ["## Plugin module attributes", "", "Module-level names a plugin module may define besides its hooks.", ""] + table(["attribute", "type", "what it does"], rows) + [""]


def contents_markdown() -> list[str]:
    """Links to every hook and type."""
    hooks = ", ".join(f"[`{name}`](#{name})" for name in hook_names())
    types = ", ".join(f"[`{cls.__name__}`](#{cls.__name__.lower()})" for cls in PUBLIC_TYPES)
    return [f"- [Hooks](#hooks): {hooks}", f"- [Public types](#public-types): {types}", "- [The report frame](#the-report-frame)", "- [Plugin module attributes](#plugin-module-attributes)", ""]


def build_reference() -> str:
    """The Markdown text of docs/reference.md."""
    lines = [
        "# Plugin reference", "",
        f"<!-- Generated from the code by `{REGENERATE}`; do not edit by hand. -->", "",
        "Every hook, every public type and the report frame's columns, generated from the code. "
        "[plugins.md](plugins.md) is the guide: how to write, load and test a plugin.", "",
        *contents_markdown(), *hooks_markdown(), *types_markdown(), *frame_markdown(), *module_attributes_markdown(),
    ]
    return "\n".join(lines).rstrip() + "\n"


# ------------------------------------------------------------------ command line


def check(path: Path, text: str, write: Callable[[str], Any] | None = None) -> int:
    """0 when ``path`` holds ``text``; else 1, with the start of the diff and how to regenerate written to ``write`` (stderr by default)."""
    write = write or sys.stderr.write
    current = path.read_text(encoding="utf-8") if path.is_file() else ""
    if current == text:
        return 0
    diff = list(difflib.unified_diff(current.splitlines(), text.splitlines(), str(path), "generated from the code", lineterm="", n=1))
    shown = "\n".join(diff[:40]) + ("\n..." if len(diff) > 40 else "")
    write(f"{path} is out of date with the code; run `{REGENERATE}` to regenerate it.\n{shown}\n")
    return 1


def main(argv: list[str] | None = None) -> int:
    """``python -m benchharness.reference [--check] [--output PATH]``."""
    parser = argparse.ArgumentParser(prog=REGENERATE, description="Write the plugin reference (docs/reference.md) generated from the code.")
    parser.add_argument("--check", action="store_true", help="exit 1 when the file differs from what the code gives, instead of writing it")
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT), help=f"the file to write or check (default: {DEFAULT_OUTPUT}); '-' prints it")
    arguments = parser.parse_args(argv)
    text = build_reference()
    if arguments.output == "-":
        sys.stdout.write(text)
        return 0
    path = Path(arguments.output)
    if arguments.check:
        return check(path, text)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
