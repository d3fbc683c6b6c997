"""Docs stay in step with the code: every hook and every suite key is documented."""

from __future__ import annotations

import inspect

import pytest
from pydantic import BaseModel

from benchharness import hookspecs
from benchharness import suite as suite_module
from tests.conftest import ROOT

HOOKS = [name for name, value in vars(hookspecs).items() if callable(value) and hasattr(value, "benchharness_spec")]
SECTIONS = [suite_module.SuiteSpec, suite_module.DataSection, suite_module.TechniqueEntry, suite_module.TrainBudget, suite_module.MeasureSettings, suite_module.RunSettings, suite_module.ReportSettings, suite_module.MatchRule]


def test_there_are_hooks():
    """The spec module really declares the hooks of DESIGN.md."""
    assert set(HOOKS) == {
        "register_techniques", "register_models", "register_datasets", "register_probes",
        "register_executors", "register_commands", "register_report_sections", "before_cell", "after_cell",
    }


@pytest.mark.parametrize("name", HOOKS)
def test_every_hook_has_a_section_headed_by_its_signature(name):
    """docs/plugins.md has a heading `name(arg, ...)` for each hook, and the hook has a docstring."""
    hook = getattr(hookspecs, name)
    signature = f"{name}({', '.join(inspect.signature(hook).parameters)})"
    assert f"### `{signature}`" in (ROOT / "docs" / "plugins.md").read_text()
    assert inspect.getdoc(hook)


@pytest.mark.parametrize("section", SECTIONS, ids=lambda section: section.__name__)
def test_every_suite_key_is_documented(section: type[BaseModel]):
    """docs/suites.md mentions every key of every suite section."""
    text = (ROOT / "docs" / "suites.md").read_text()
    for key in section.model_fields:
        if key != "params":
            assert f"`{key}`" in text, f"{section.__name__}.{key} is not documented in docs/suites.md"
