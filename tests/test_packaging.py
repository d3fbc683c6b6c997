"""Packaging: the wheel and the editable install both provide benchharness and benchharness.plugins."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import benchharness
import benchharness.plugins
import benchharness.suites
from tests.conftest import ROOT


def test_editable_install_maps_both_folders():
    """harness/ is imported as benchharness and plugins/ as benchharness.plugins."""
    assert Path(benchharness.__file__).parent == ROOT / "harness"
    assert Path(benchharness.plugins.__file__).parent == ROOT / "plugins"
    assert (Path(benchharness.suites.__file__).parent / "quick.toml").is_file()


def test_dependencies_are_ranges_not_pins():
    """Runtime dependencies are version ranges, never exact pins."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11"
    assert project["scripts"]["benchharness"] == "benchharness.cli:main"
    names = {dep.split(">")[0].split("<")[0].split("=")[0].strip() for dep in project["dependencies"]}
    assert {"torch", "torchvision", "pluggy", "pandas", "plotly", "psutil", "nvidia-ml-py", "pydantic", "rich", "click", "scikit-learn", "torch-pruning", "scipy"} <= names
    assert not [dep for dep in project["dependencies"] if "==" in dep]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from the source tree."""
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("build")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(out), str(ROOT)],
        check=True,
        cwd=build,
        env={"PATH": "/usr/bin:/bin", "HOME": str(build), "PIP_NO_INDEX": "1"},
    )
    (path,) = out.glob("benchharness-*.whl")
    return path


def test_wheel_contents(wheel):
    """The wheel holds the host, the built-in plugins, the bundled suites and the console script."""
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in (
        "benchharness/__init__.py",
        "benchharness/host.py",
        "benchharness/hookspecs.py",
        "benchharness/cli.py",
        "benchharness/report/__init__.py",
        "benchharness/plugins/__init__.py",
        "benchharness/plugins/models.py",
        "benchharness/plugins/cuda_probe.py",
        "benchharness/suites/quick.toml",
    ):
        assert expected in names, expected
    assert not any(name.startswith(("harness/", "plugins/", "tests/")) for name in names)
    entry_points = next(name for name in names if name.endswith("entry_points.txt"))
    assert "benchharness = benchharness.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_wheel_imports_both_packages(wheel, tmp_path):
    """Unpacked on its own, the wheel imports benchharness and its built-in plugins."""
    zipfile.ZipFile(wheel).extractall(tmp_path)
    code = "import benchharness, benchharness.plugins.models, benchharness.cli; print(benchharness.__file__); print(benchharness.plugins.models.__file__)"
    output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)})
    first, second = output.stdout.split()
    assert first == str(tmp_path / "benchharness" / "__init__.py")
    assert second == str(tmp_path / "benchharness" / "plugins" / "models.py")
