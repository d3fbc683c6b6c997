"""The example third-party package in examples/ is found through its entry point, and its own tests (with the testing kit) pass."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib

import pytest

from benchharness.host import PluginHost, PluginOptions
from tests.conftest import ROOT

EXAMPLE = ROOT / "examples" / "benchharness-weight-noise"
INSTALL = f"pip install --no-deps -e {EXAMPLE.relative_to(ROOT)} (`make install` does)"


def test_example_declares_the_entry_point():
    """Its pyproject puts the module in the 'benchharness' entry-point group."""
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["benchharness"] == {"weight_noise": "benchharness_weight_noise"}


def test_example_plugin_is_found_through_its_entry_point():
    """Installed, it registers weight_noise under its entry-point name, from its distribution, like any installed plugin."""
    host = PluginHost(PluginOptions(entry_points=True, disabled=()))
    assert "weight_noise" in host.techniques, f"the example is not installed: {INSTALL}; {host.techniques.suggest('weight_noise')}"
    entry = host.techniques.entries["weight_noise"]
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    assert (entry.plugin, entry.distribution, entry.version) == ("weight_noise", project["name"], project["version"])
    assert not [failure for failure in host.failures if failure.name == "weight_noise"]


@pytest.mark.slow
def test_example_tests_pass_with_the_testing_kit():
    """`pytest` in the example's directory: its tests use the kit's fixtures (loaded through benchharness's pytest11 entry point) and check_technique."""
    environment = {key: value for key, value in os.environ.items() if key != "PYTEST_DISABLE_PLUGIN_AUTOLOAD"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error::pytest.PytestUnraisableExceptionWarning"]
    result = subprocess.run(command, cwd=EXAMPLE, env=environment, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "4 passed" in result.stdout
