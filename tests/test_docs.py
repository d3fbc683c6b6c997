"""Docs stay in step with the code: every hook, every public type and every suite key is documented, and every hook is tested.

docs/reference.md is generated from the code (``python -m benchharness.reference``); these tests fail
when it is stale, when a hook or a public attribute has no doc, or when a hook has no ``test_hook_<name>``.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types

import pytest
from pydantic import BaseModel

from benchharness import hookspecs, reference
from benchharness import suite as suite_module
from benchharness.host import PluginHost, PluginOptions
from benchharness.report import frame as report_frame
from tests.conftest import ROOT

HOOKS = reference.hook_names()
SECTIONS = [suite_module.SuiteSpec, suite_module.DataSection, suite_module.TechniqueEntry, suite_module.TrainBudget, suite_module.MeasureSettings, suite_module.RunSettings, suite_module.ReportSettings, suite_module.MatchRule]
REFERENCE = ROOT / "docs" / "reference.md"
GUIDE = ROOT / "docs" / "plugins.md"
REGENERATE = "run `python -m benchharness.reference` to regenerate docs/reference.md"


@pytest.fixture(scope="module")
def reference_text() -> str:
    """The committed docs/reference.md."""
    return REFERENCE.read_text(encoding="utf-8")


def unquoted(annotation: str) -> str:
    """An annotation as the reference writes it: forward references without their quotes."""
    return annotation.replace('"', "").replace("'", "")


def written_signature(name: str) -> str:
    """``name(arg: Type, ...) -> Return`` of a hook, read with inspect (independently of the reference's generator)."""
    signature = inspect.signature(getattr(hookspecs, name))
    arguments = ", ".join(f"{argument}: {unquoted(parameter.annotation)}" for argument, parameter in signature.parameters.items())
    return f"{name}({arguments}) -> {unquoted(signature.return_annotation)}"


def runtime_public_names(cls: type) -> set[str]:
    """Public names ``cls`` itself defines, found by introspection: class attributes, functions, dataclass and pydantic fields."""
    names = {name for name in vars(cls) if not name.startswith("_")}
    if dataclasses.is_dataclass(cls):
        names |= {item.name for item in dataclasses.fields(cls) if item.name in cls.__dict__.get("__annotations__", {})}
    if issubclass(cls, BaseModel):
        names |= set(cls.__annotations__) & set(cls.model_fields)
        names -= set(vars(BaseModel))  # pydantic sets model_config and the like on every model
    return names


def test_there_are_hooks():
    """The spec module really declares the hooks of DESIGN.md."""
    assert set(HOOKS) == {
        "register_techniques", "register_models", "register_datasets", "register_probes",
        "register_executors", "register_commands", "register_report_sections", "before_cell", "after_cell",
    }


def test_reference_is_generated_from_the_code(reference_text):
    """docs/reference.md is exactly what the code gives."""
    problems: list[str] = []
    assert reference.check(REFERENCE, reference.build_reference(), write=problems.append) == 0, "".join(problems)
    assert reference_text == reference.build_reference(), REGENERATE


@pytest.mark.parametrize("name", HOOKS)
def test_every_hook_has_a_heading_with_its_full_signature(name, reference_text):
    """docs/reference.md has a heading ``name(arg: Type, ...) -> None`` and an anchor for each hook."""
    assert f"### `{written_signature(name)}`" in reference_text, f"hook {name}: no heading with its signature in docs/reference.md; {REGENERATE}"
    assert f'<a id="{name}"></a>' in reference_text


@pytest.mark.parametrize("name", HOOKS)
def test_every_hook_docstring_says_when_it_is_called_and_has_an_example(name):
    """Each hook's docstring says what to do, when it is called, and shows an example in a fenced python block."""
    doc = inspect.getdoc(getattr(hookspecs, name)) or ""
    assert re.search(r"\bcalled\b", doc, re.IGNORECASE), f"hook {name}: say when it is called in its docstring in harness/hookspecs.py"
    assert reference.hook_example(name), f"hook {name}: add an example (a ```python block) to its docstring in harness/hookspecs.py"


@pytest.mark.parametrize("name", HOOKS)
def test_every_hook_example_is_a_plugin_that_loads(name):
    """Each hook's example, run as a module, registers on a real host without a problem (its register hook included)."""
    module = types.ModuleType(f"example_{name}")
    exec(compile(reference.hook_example(name), f"<example of {name}>", "exec"), module.__dict__)
    host = PluginHost(PluginOptions(entry_points=False, disabled=()))
    host.register(module, name=f"example-{name}")
    try:
        assert [caller.name for caller in host.pm.get_hookcallers(module)] == [name]
    finally:
        host.unregister(module)


@pytest.mark.parametrize("cls", reference.PUBLIC_TYPES, ids=lambda cls: cls.__name__)
def test_every_public_attribute_is_documented(cls):
    """Every public field, attribute, property and method of a public type has a doc (attribute docstring, docstring or field description)."""
    missing = reference.undocumented(cls)
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("cls", reference.PUBLIC_TYPES, ids=lambda cls: cls.__name__)
def test_the_reference_lists_every_public_name(cls):
    """What introspection finds public on a type is in the reference's tables for it (the source reader misses nothing)."""
    found = reference.type_reference(cls)
    listed = {member.name.split("(")[0] for member in [*found.attributes, *found.methods]}
    assert runtime_public_names(cls) <= listed, f"{cls.__name__}: {sorted(runtime_public_names(cls) - listed)} not in the reference"


def test_every_core_frame_column_is_in_the_reference(reference_text):
    """Every column the report frame always has, and every raw column, is named in the reference's frame table."""
    frame_part = reference_text.split("## The report frame", 1)[1]
    columns = [*reference.always_present_columns(), *report_frame.RAW_COLUMNS]
    missing = [column for column in columns if f"`{column}`" not in frame_part]
    assert not missing, f"report frame columns {missing} are not in docs/reference.md; add their group to FRAME_GROUPS in harness/reference.py"


def test_every_column_group_of_the_frame_is_in_the_reference():
    """Every column-list constant of benchharness.report.frame is a group of the reference's frame table."""
    constants = {name for name, value in vars(report_frame).items() if name.endswith(("_COLUMNS", "COMPARISONS")) and isinstance(value, list)}
    grouped = {constant for _, constant, _ in reference.FRAME_GROUPS if constant}
    assert constants <= grouped, f"{sorted(constants - grouped)} of benchharness.report.frame are not in FRAME_GROUPS of harness/reference.py"


def test_every_plugin_module_attribute_the_harness_reads_is_documented(reference_text):
    """A module attribute the harness reads from plugin modules (``getattr(module, "NAME"``) is in the reference."""
    read = set()
    for path in (ROOT / "harness").rglob("*.py"):
        read |= set(re.findall(r'getattr\(module, "([A-Z_]+)"', path.read_text(encoding="utf-8")))
    assert read, "no plugin module attribute found: the pattern above is stale"
    assert read <= set(reference.PLUGIN_MODULE_ATTRIBUTES), f"{sorted(read - set(reference.PLUGIN_MODULE_ATTRIBUTES))}: add to PLUGIN_MODULE_ATTRIBUTES in harness/reference.py"
    for name in read:
        assert f"`{name}`" in reference_text


@pytest.mark.parametrize("name", HOOKS)
def test_every_hook_has_a_test(name):
    """Some file under tests/ defines ``test_hook_<name>`` (datasette's rule: every hook has a test)."""
    pattern = re.compile(rf"^\s*(async\s+)?def test_hook_{name}\b", re.MULTILINE)
    defined = [path for path in (ROOT / "tests").rglob("*.py") if pattern.search(path.read_text(encoding="utf-8"))]
    assert defined, f"hook {name!r} has no test: define `def test_hook_{name}(...)` in tests/test_hooks.py, exercising the hook for real"


def test_the_guide_links_to_existing_anchors_of_the_reference(reference_text):
    """Every ``reference.md#anchor`` link of docs/plugins.md leads to an anchor of docs/reference.md."""
    anchors = set(re.findall(r'<a id="([^"]+)"></a>', reference_text))
    anchors |= {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in re.findall(r"^#+ (.+)$", reference_text, re.MULTILINE)}
    links = re.findall(r"reference\.md#([\w-]+)", GUIDE.read_text(encoding="utf-8"))
    assert links, "docs/plugins.md should link to the reference"
    assert set(links) <= anchors, f"broken links to docs/reference.md: {sorted(set(links) - anchors)}"


def test_check_fails_on_a_stale_file_and_writes_a_fresh_one(tmp_path, capsys):
    """``python -m benchharness.reference --check`` exits 1 on a stale file, naming the command; without --check it writes the file."""
    path = tmp_path / "reference.md"
    path.write_text("# stale\n")
    assert reference.main(["--check", "--output", str(path)]) == 1
    assert "python -m benchharness.reference" in capsys.readouterr().err
    assert reference.main(["--output", str(path)]) == 0
    assert reference.main(["--check", "--output", str(path)]) == 0
    assert path.read_text() == reference.build_reference()


@pytest.mark.parametrize("section", SECTIONS, ids=lambda section: section.__name__)
def test_every_suite_key_is_documented(section: type[BaseModel]):
    """docs/suites.md mentions every key of every suite section."""
    text = (ROOT / "docs" / "suites.md").read_text()
    for key in section.model_fields:
        if key != "params":
            assert f"`{key}`" in text, f"{section.__name__}.{key} is not documented in docs/suites.md"
