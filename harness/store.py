"""The run directory: ``run.json`` (suite, environment, probes) and ``results.jsonl`` (one record per cell)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import warnings
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from benchharness.errors import HarnessError

RUN_FILE = "run.json"
RESULTS_FILE = "results.jsonl"
LOGS_DIR = "logs"
MODELS_DIR = "models"
LOCK_FILE = ".lock"


def git_commit(path: Path) -> str | None:
    """The commit checked out in the git work tree holding ``path``, or None."""
    try:
        output = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return output.stdout.strip() or None


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def environment(suite_source: str) -> dict[str, Any]:
    """Versions and commits that a result depends on."""
    import torch

    package_dir = Path(__file__).resolve().parent
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "torchvision": _version("torchvision"),
        "benchharness": _version("benchharness"),
        "benchharness_git_commit": git_commit(package_dir),
        "suite_git_commit": git_commit(Path(suite_source).resolve().parent) if Path(suite_source).exists() else None,
        "hostname": platform.node(),
    }


class RunDir:
    """A run's directory: created once, appended to cell by cell, reopened by ``--resume``."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def results_path(self) -> Path:
        """Where the per-cell records are appended."""
        return self.path / RESULTS_FILE

    @property
    def run_path(self) -> Path:
        """Where the suite copy and the environment are written."""
        return self.path / RUN_FILE

    def log_path(self, cell_id: str) -> Path:
        """The log file that captures a cell worker's output."""
        return self.path / LOGS_DIR / (_file_stem(cell_id) + ".log")

    def artifact_path(self, cell_id: str) -> Path:
        """Where a built cell's final model waits to be timed (removed once its group is timed)."""
        return self.path / MODELS_DIR / (_file_stem(cell_id) + ".pt")

    @classmethod
    def create(cls, out_root: Path, suite_name: str) -> "RunDir":
        """Make a new ``<out_root>/<suite>-<timestamp>`` directory."""
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        try:
            out_root.mkdir(parents=True, exist_ok=True)
            for attempt in range(1000):
                path = out_root / (f"{suite_name}-{stamp}" + (f"-{attempt}" if attempt else ""))
                try:
                    path.mkdir()
                    break
                except FileExistsError:
                    continue
            (path / LOGS_DIR).mkdir()
        except OSError as error:
            raise HarnessError(f"cannot create a run directory under {out_root}: {error.strerror or error}; choose another with --out") from None
        return cls(path)

    @classmethod
    def open(cls, path: Path) -> "RunDir":
        """Reopen an existing run directory (for ``--resume`` and reports)."""
        run = cls(path)
        if not run.run_path.is_file():
            raise HarnessError(f"{path} is not a run directory: it has no {RUN_FILE}")
        (run.path / LOGS_DIR).mkdir(exist_ok=True)
        return run

    def lock(self) -> None:
        """Take the run directory's lock for this process's lifetime; a second runner gets a clear error."""
        import fcntl

        handle = open(self.path / LOCK_FILE, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise HarnessError(
                f"{self.path} is being written by another benchharness run ({holder}); wait for it to finish, or run elsewhere with --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        self._lock_handle = handle

    def write_info(self, info: dict[str, Any]) -> None:
        """Write ``run.json`` atomically."""
        temporary = self.run_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(info, indent=2, default=str))
        os.replace(temporary, self.run_path)

    def read_info(self) -> dict[str, Any]:
        """Read ``run.json``."""
        return json.loads(self.run_path.read_text())

    def append(self, record: dict[str, Any]) -> None:
        """Append one record to ``results.jsonl`` in a single write, flushed to disk."""
        line = (json.dumps(record, default=str, allow_nan=True) + "\n").encode()
        descriptor = os.open(self.results_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(descriptor, line)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def records(self) -> list[dict[str, Any]]:
        """Every complete record; a torn last line (from a killed run) is ignored with a warning."""
        if not self.results_path.exists():
            return []
        records = []
        for number, line in enumerate(self.results_path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                warnings.warn(f"{self.results_path}:{number}: ignoring an incomplete record (the run was interrupted while writing it)", stacklevel=2)
        return records

    def finished_cell_ids(self) -> set[str]:
        """Ids of the cells that already have a record."""
        return {record["cell"]["id"] for record in self.records()}


def _file_stem(cell_id: str) -> str:
    return cell_id.replace("/", "__").replace(":", "-")


def now_iso() -> str:
    """The current time, ISO 8601 in UTC."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
