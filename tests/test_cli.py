"""The command line: version, help, list, probe, and errors that exit 2 without writing anything."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from benchharness import __version__
from benchharness.cli import LIST_KINDS, cli
from tests.conftest import TEST_PLUGINS


def invoke(*args: str):
    """Run the CLI in-process with a wide terminal."""
    return CliRunner().invoke(cli, list(args), terminal_width=250, env={"COLUMNS": "250"})


def test_version():
    """--version prints the installed version."""
    result = invoke("--version")
    assert result.exit_code == 0
    assert __version__ in result.output


@pytest.mark.parametrize("command", [[], ["run"], ["validate"], ["list"], ["probe"]])
def test_help_everywhere(command):
    """Every command has a --help that exits 0 and explains itself."""
    result = invoke(*command, "--help")
    assert result.exit_code == 0
    assert "Usage:" in result.output
    assert len(result.output.splitlines()) > 4


@pytest.mark.parametrize(
    "kind, expected",
    [("techniques", "baseline"), ("models", "resnet18_cifar"), ("datasets", "cifar10"), ("probes", "cuda"), ("plugins", "benchharness.plugins.models")],
)
def test_list_each_kind(kind, expected):
    """`list KIND` shows registered names with the plugin and distribution they came from."""
    result = invoke("list", kind)
    assert result.exit_code == 0
    assert expected in result.output
    assert ("built-in" if kind == "plugins" else "benchharness (built-in)") in result.output


def test_list_plugins_shows_versions_origins_registrations_and_status(monkeypatch):
    """Each plugin row has its distribution, version, origin and what it registered; disabled and failed plugins are marked, not dropped."""
    import benchharness

    monkeypatch.setenv("BENCHHARNESS_DISABLE_PLUGINS", "benchharness.plugins.distill")
    faulty, broken = str(TEST_PLUGINS / "faulty.py"), str(TEST_PLUGINS / "broken.py")
    result = invoke("list", "plugins", "--plugin", faulty, "--plugin", broken)
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): [cell.strip() for cell in line.split("│")[2:-1]] for line in result.output.splitlines() if line.startswith("│")}
    assert rows["benchharness.plugins.prune"] == ["benchharness", benchharness.__version__, "built-in", "technique: prune", "loaded"]
    assert rows["benchharness.plugins.distill"][2:] == ["built-in", "", "disabled: blocked by BENCHHARNESS_DISABLE_PLUGINS"]
    assert rows[faulty][:3] == ["", "", "--plugin"] and rows[faulty][3].startswith("technique: abort, bad-note")
    assert rows[broken][2] == "--plugin" and rows[broken][4].startswith("failed: ")
    assert rows["benchharness.plugins.report_sections"][3] == "hooks: register_report_sections"


def test_plugins_check_passes_on_valid_plugins_and_fails_on_problems(tmp_path):
    """`plugins check` exits 0 when every plugin is valid, 1 naming a skipped plugin or a name registered twice."""
    assert invoke("plugins", "check").exit_code == 0
    broken = invoke("plugins", "check", "--plugin", str(TEST_PLUGINS / "misspelt_hook.py"))
    assert broken.exit_code == 1
    assert "did you mean 'register_techniques'?" in broken.output and "1 problem(s)" in broken.output
    twice = tmp_path / "twice.py"
    twice.write_text(
        "from benchharness import Technique, hookimpl\n\n"
        "class Prune(Technique):\n    NAME = 'prune'\n\n"
        "@hookimpl\ndef register_techniques(register):\n    register(Prune())\n"
    )
    duplicate = invoke("plugins", "check", "--plugin", str(twice))
    assert duplicate.exit_code == 1
    assert f"technique 'prune' from plugin '{twice}' ignored: plugin 'benchharness.plugins.prune' registered it first" in duplicate.output


def test_a_directory_hiding_the_package_is_named(tmp_path, monkeypatch):
    """A `benchharness` directory without __init__.py in the working directory is named, with the fix, by every plugin command."""
    (tmp_path / "benchharness").mkdir()
    monkeypatch.chdir(tmp_path)
    checked = invoke("plugins", "check")
    assert checked.exit_code == 1
    assert f"the directory {tmp_path / 'benchharness'} hides the installed benchharness package" in checked.output
    assert "rename that directory" in checked.output
    assert "hides the installed" in invoke("list", "techniques").output
    (tmp_path / "benchharness" / "__init__.py").write_text("")
    assert invoke("plugins", "check").exit_code == 0


def test_list_all_kinds_and_plugin_sources():
    """`list` alone shows every kind; a --plugin file is listed with its source."""
    path = str(TEST_PLUGINS / "faulty.py")
    result = invoke("list", "--plugin", path)
    assert result.exit_code == 0
    for kind in LIST_KINDS:
        assert kind in result.output
    assert "explode" in result.output
    assert "torchvision:<name>" in result.output


def test_broken_plugin_is_named_and_the_command_goes_on():
    """A plugin that fails to import is reported by name; the command still works."""
    path = str(TEST_PLUGINS / "broken.py")
    result = invoke("list", "plugins", "--plugin", path)
    assert result.exit_code == 0
    assert "broken.py" in result.output
    assert "was skipped" in result.output and "ImportError" in result.output
    assert "benchharness.plugins.baseline" in result.output


def test_probe_json():
    """`probe --json` describes every probe, the CPU's instruction sets included."""
    result = CliRunner().invoke(cli, ["probe", "--json"])
    assert result.exit_code == 0
    described = json.loads(result.stdout)
    assert described["cpu"]["available"] is True
    assert described["cpu"]["logical_cores"] >= 1
    assert isinstance(described["cpu"]["isa"], list)
    assert "available" in described["cuda"]
    if not described["cuda"]["available"]:
        assert described["cuda"]["reason"]


def test_probe_tables():
    """`probe` prints a table per probe."""
    result = invoke("probe")
    assert result.exit_code == 0
    assert "probe: cpu" in result.output and "probe: cuda" in result.output


def test_run_with_a_bad_suite_exits_2_and_writes_nothing(tmp_path, monkeypatch):
    """A suite error stops `run` before any run directory exists."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.toml").write_text('models = ["small_cn"]\n[data]\nname = "digits"\n')
    result = invoke("run", "bad.toml")
    assert result.exit_code == 2
    assert "bad.toml" in result.output and "models[0]" in result.output and "small_cnn" in result.output
    assert list(tmp_path.iterdir()) == [tmp_path / "bad.toml"]


def test_run_with_a_missing_suite_file(tmp_path):
    """A suite path that does not exist is a clear error, exit 2."""
    result = invoke("run", str(tmp_path / "nope.toml"), "--out", str(tmp_path / "runs"))
    assert result.exit_code == 2
    assert "nope.toml" in result.output and "cannot read" in result.output
    assert not (tmp_path / "runs").exists()


def test_resume_of_a_non_run_directory(tmp_path):
    """--resume of a directory without run.json says so, exit 2."""
    result = invoke("run", "--resume", str(tmp_path))
    assert result.exit_code == 2
    assert "not a run directory" in result.output


def test_unwritable_output_directory(tmp_path):
    """An --out that cannot be created is a clear error, exit 2."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = invoke("run", "--out", str(blocker / "runs"))
    assert result.exit_code == 2
    assert "cannot create a run directory" in result.output and "--out" in result.output
