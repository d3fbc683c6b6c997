"""`benchharness new plugin NAME`: the package it writes is complete, installable, found through its entry point, and passes its own tests."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from benchharness.errors import HarnessError
from benchharness.scaffold import TEMPLATE_FILES, next_steps, write_plugin_package
from tests.conftest import ROOT

NAME = "weight_sharing"
EXPECTED_FILES = {
    "pyproject.toml",
    "README.md",
    ".gitignore",
    "benchharness_weight_sharing/__init__.py",
    "tests/test_weight_sharing.py",
}


def files_under(directory: Path) -> set[str]:
    """The relative paths of the files under ``directory``."""
    return {path.relative_to(directory).as_posix() for path in directory.rglob("*") if path.is_file()}


def subprocess_environment(**extra: str) -> dict[str, str]:
    """This environment without what would keep the kit's pytest plugin or installed plugins from loading, plus ``extra``."""
    blocked = ("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "PYTEST_ADDOPTS", "BENCHHARNESS_DISABLE_PLUGINS")
    environment = {key: value for key, value in os.environ.items() if key not in blocked}
    return {**environment, "PIP_DISABLE_PIP_VERSION_CHECK": "1", **extra}


def test_the_package_has_its_files_and_declares_the_entry_point(tmp_path):
    """pyproject (distribution name, version, dependency, test extra, entry point, build backend, pytest options), technique, test, README, .gitignore."""
    package = write_plugin_package(NAME, tmp_path / "pkg")
    assert package == tmp_path / "pkg"
    assert files_under(package) == EXPECTED_FILES
    pyproject = tomllib.loads((package / "pyproject.toml").read_text())
    project = pyproject["project"]
    assert (project["name"], project["version"]) == ("benchharness-weight-sharing", "0.1.0")
    assert project["dependencies"] == ["benchharness>=0.1"]
    assert project["optional-dependencies"] == {"test": ["pytest"]}
    assert project["entry-points"]["benchharness"] == {NAME: "benchharness_weight_sharing"}
    assert pyproject["build-system"]["build-backend"] == "setuptools.build_meta"
    assert pyproject["tool"]["pytest"]["ini_options"]["pythonpath"] == ["."]
    assert pyproject["tool"]["pytest"]["ini_options"]["testpaths"] == ["tests"]
    for path in ("benchharness_weight_sharing/__init__.py", "tests/test_weight_sharing.py"):
        compile((package / path).read_text(), path, "exec")
    technique = (package / "benchharness_weight_sharing/__init__.py").read_text()
    for expected in ('class WeightSharingConfig(StrictConfig)', "class WeightSharing(Technique)", 'NAME = "weight_sharing"', "def register_techniques(register)", '"weight_sharing_sparsity"'):
        assert expected in technique
    tests = (package / "tests/test_weight_sharing.py").read_text()
    assert 'check_technique("weight_sharing"' in tests and "cell_context" in tests and "run_cell" in tests
    readme = (package / "README.md").read_text()
    for expected in ("pip install -e .", "benchharness list plugins", "benchharness plugins check", 'steps = ["weight_sharing"]', "weight_sharing = { fraction = 0.5 }", "pytest", "twine upload"):
        assert expected in readme
    assert {"build/", "*.egg-info/", "__pycache__/", "runs/"} <= set((package / ".gitignore").read_text().split())


def test_the_default_directory_is_named_after_the_distribution(tmp_path, monkeypatch):
    """Without a directory: ./benchharness-NAME with hyphens; an existing empty directory is fine too."""
    monkeypatch.chdir(tmp_path)
    assert write_plugin_package("binarize") == tmp_path / "benchharness-binarize"
    assert files_under(tmp_path / "benchharness-binarize") == {path.replace("weight_sharing", "binarize") for path in EXPECTED_FILES}
    (tmp_path / "empty").mkdir()
    assert write_plugin_package(NAME, "empty") == Path("empty")
    assert next_steps(Path("empty")) == ["cd empty", 'pip install -e ".[test]"', "pytest", "benchharness list plugins"]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "the plugin name is empty; a plugin name is lower-case letters and digits"),
        ("Binarize", "did you mean 'binarize'?"),
        ("weight-sharing", "did you mean 'weight_sharing'?"),
        ("weight__sharing", "did you mean 'weight_sharing'?"),
        ("binarize_", "did you mean 'binarize'?"),
        ("2bit", "invalid plugin name '2bit': a plugin name is lower-case letters and digits, words joined by single underscores, starting with a letter (e.g. binarize, weight_sharing)"),
        ("élan", "invalid plugin name 'élan'"),
        ("class", "it is a Python keyword; choose another name, e.g. class_technique"),
        ("benchharness_binarize", "leave out the benchharness prefix; `benchharness new plugin binarize` writes the package benchharness-binarize"),
        ("benchharness-binarize", "did you mean 'binarize'?"),
        ("technique", "would define a class named Technique"),
        ("strict", "would define a class named StrictConfig"),
        ("prune", "the technique name 'prune' is taken by plugin 'benchharness.plugins.prune' (benchharness (built-in)); choose another name"),
    ],
)
def test_a_bad_name_is_refused_with_what_to_do(tmp_path, name, message):
    """Invalid names, keywords, the package prefix, names that would clash in the generated code, and names a built-in plugin took: nothing is written."""
    with pytest.raises(HarnessError) as raised:
        write_plugin_package(name, tmp_path / "pkg")
    assert message in str(raised.value)
    assert not (tmp_path / "pkg").exists()


def test_a_name_an_installed_plugin_took_is_refused():
    """The installed example plugin's name: the message names its distribution and how to uninstall it."""
    from benchharness.host import PluginHost, PluginOptions

    if "weight_noise" not in PluginHost(PluginOptions(entry_points=True, disabled=())).techniques:
        pytest.skip("the example plugin is not installed (pip install --no-deps -e examples/benchharness-weight-noise)")
    with pytest.raises(HarnessError, match="taken by plugin 'weight_noise' \\(distribution benchharness-weight-noise 0.1.0\\); "
                       "choose another name, or uninstall it first: pip uninstall benchharness-weight-noise"):
        write_plugin_package("weight_noise", ROOT / "never-written")
    assert not (ROOT / "never-written").exists()


def test_a_directory_that_is_not_empty_or_is_a_file_is_refused(tmp_path):
    """Nothing is overwritten or added: the message says to remove the directory or choose another with --dir."""
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(HarnessError, match="taken exists and is not empty; the package is written into a new or empty directory: remove or rename that one, or choose another \\(--dir\\)"):
        write_plugin_package(NAME, taken)
    assert files_under(taken) == {"notes.txt"}
    (tmp_path / "file").write_text("")
    with pytest.raises(HarnessError, match="file exists and is not a directory; choose another directory for the package \\(--dir\\)"):
        write_plugin_package(NAME, tmp_path / "file")


def test_the_templates_are_package_data():
    """pyproject.toml ships every template in wheels, so `new plugin` works from an installed (not editable) benchharness."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    fix = 'add "benchharness.templates.plugin" to [tool.setuptools] packages and "benchharness.templates.plugin" = ["*.tmpl"] to [tool.setuptools.package-data]'
    assert "benchharness.templates.plugin" in setuptools["packages"], fix
    patterns = setuptools["package-data"].get("benchharness.templates.plugin", [])
    shipped = {path.name for pattern in patterns for path in (ROOT / "harness/templates/plugin").glob(pattern)}
    assert shipped == set(TEMPLATE_FILES), fix


def test_the_new_command_writes_the_package_and_prints_the_next_steps(tmp_path):
    """`benchharness new plugin NAME --dir DIR`; a bad name exits 2 with the message."""
    from click.testing import CliRunner

    from benchharness.cli import cli

    if "new" not in cli.commands:
        pytest.skip("`benchharness new` is not in benchharness/cli.py yet")
    runner = CliRunner()
    result = runner.invoke(cli, ["new", "plugin", NAME, "--dir", str(tmp_path / "pkg")])
    assert result.exit_code == 0, result.output
    assert files_under(tmp_path / "pkg") == EXPECTED_FILES
    for step in ("cd ", 'pip install -e ".[test]"', "pytest"):
        assert step in result.output
    refused = runner.invoke(cli, ["new", "plugin", "weight-sharing", "--dir", str(tmp_path / "other")])
    assert refused.exit_code == 2
    assert "did you mean 'weight_sharing'?" in refused.output


@pytest.mark.slow
def test_the_generated_package_passes_its_own_tests(tmp_path):
    """`pytest` in the new package, before it is installed: check_technique, a cell_context test and a run_cell test pass."""
    package = write_plugin_package(NAME, tmp_path / "pkg")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    result = subprocess.run(command, cwd=package, env=subprocess_environment(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "3 passed" in result.stdout


@pytest.mark.slow
def test_the_installed_package_is_found_through_its_entry_point(tmp_path):
    """pip-installed (offline, into a directory on PYTHONPATH): registered under the entry point's name, from its distribution, and valid."""
    package = write_plugin_package(NAME, tmp_path / "pkg")
    site = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index", "--target", str(site), str(package)]
    installed = subprocess.run(install, env=subprocess_environment(), capture_output=True, text=True, timeout=120)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    environment = subprocess_environment(PYTHONPATH=str(site), COLUMNS="250")
    show = (
        "from benchharness.host import PluginHost, PluginOptions\n"
        "host = PluginHost(PluginOptions(entry_points=True, disabled=()))\n"
        "entry = host.techniques.entries['weight_sharing']\n"
        "print(entry.plugin, entry.distribution, entry.version, type(entry.item).__name__, [str(f) for f in host.failures])\n"
    )
    found = subprocess.run([sys.executable, "-c", show], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=60)
    assert found.stdout.split(None, 4) == ["weight_sharing", "benchharness-weight-sharing", "0.1.0", "WeightSharing", "[]\n"], found.stdout + found.stderr
    benchharness = Path(sys.executable).with_name("benchharness")
    listed = subprocess.run([benchharness, "list", "techniques"], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and "benchharness-weight-sharing" in listed.stdout, listed.stdout + listed.stderr
    checked = subprocess.run([benchharness, "plugins", "check"], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
