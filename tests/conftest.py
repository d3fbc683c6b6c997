"""Shared fixtures. Installed third-party plugins are not loaded under tests unless a test asks."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from benchharness.host import PluginHost, PluginOptions

sys._called_from_test = True  # type: ignore[attr-defined]
ROOT = Path(__file__).resolve().parent.parent
TEST_PLUGINS = Path(__file__).resolve().parent / "plugins"


@pytest.fixture(scope="session")
def host() -> PluginHost:
    """A host with the built-in plugins only (no entry points)."""
    return PluginHost(PluginOptions(entry_points=False, disabled=()))


@pytest.fixture
def write_suite(tmp_path):
    """Write TOML text to a suite file and return its path."""

    def write(text: str, name: str = "suite.toml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


@pytest.fixture(autouse=True, scope="session")
def isolated_cache(tmp_path_factory):
    """Keep the tests' artifact cache out of the user's home."""
    import os

    previous = os.environ.get("BENCHHARNESS_CACHE_DIR")
    os.environ["BENCHHARNESS_CACHE_DIR"] = str(tmp_path_factory.mktemp("artifact-cache"))
    yield
    if previous is None:
        os.environ.pop("BENCHHARNESS_CACHE_DIR", None)
    else:
        os.environ["BENCHHARNESS_CACHE_DIR"] = previous
