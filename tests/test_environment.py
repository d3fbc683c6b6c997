"""What run.json records about the environment: library versions, the operating system, and the package's git state."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata

import pytest

from benchharness.store import environment, git_dirty


def git(path, *args: str) -> None:
    """Run a git command in ``path`` with a fixed identity."""
    subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@example.com", "-C", str(path), *args], check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path):
    """A git work tree with one committed file."""
    git(tmp_path, "init", "-q")
    (tmp_path / "tracked.txt").write_text("first\n")
    git(tmp_path, "add", "tracked.txt")
    git(tmp_path, "commit", "-q", "-m", "first")
    return tmp_path


def test_environment_records_versions_and_the_system(tmp_path):
    """numpy, pandas, plotly, pluggy and scipy versions are the installed ones; os, kernel and machine are the platform's."""
    facts = environment(str(tmp_path / "missing.toml"))
    for name in ("numpy", "pandas", "plotly", "pluggy", "scipy"):
        assert facts[name] == metadata.version(name)
    assert facts["os"] == f"{platform.system()} {platform.release()}"
    assert facts["kernel"] == platform.release()
    assert facts["machine"] == platform.machine()
    assert facts["benchharness_git_dirty"] in (True, False, None)
    assert facts["suite_git_commit"] is None


def test_git_dirty_follows_tracked_files(repo):
    """A clean tree is not dirty, nor one with only untracked files; a changed tracked file makes it dirty."""
    assert git_dirty(repo) is False
    (repo / "untracked.txt").write_text("new\n")
    assert git_dirty(repo) is False
    (repo / "tracked.txt").write_text("changed\n")
    assert git_dirty(repo) is True
    git(repo, "commit", "-q", "-am", "second")
    assert git_dirty(repo) is False


def test_git_dirty_is_unknown_outside_git(tmp_path):
    """None outside a git work tree."""
    assert git_dirty(tmp_path) is None


def test_git_dirty_is_unknown_without_git(repo, monkeypatch):
    """None when git cannot be run, even in a work tree."""
    monkeypatch.setenv("PATH", str(repo / "no-such-dir"))
    assert git_dirty(repo) is None
