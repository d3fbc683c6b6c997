"""The run directory: ``run.json`` (suite, environment, probes) and ``results.jsonl`` (one record per cell)."""

from __future__ import annotations

import errno
import json
import os
import platform
import subprocess
import sys
import warnings
from dataclasses import dataclass
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
TORN_FILE = "results.torn"
SHOWN_SKIPPED_LINES = 20
DISK_FULL_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
CELL_FIELDS = {"id": str, "model": str, "technique": str, "device": str, "repeat": int, "steps": list}


class RecordNotWritten(HarnessError):
    """A record could not be written; it was cut away and every earlier record is intact."""


class DiskFull(RecordNotWritten):
    """The disk (or the file size limit) is full."""


@dataclass(frozen=True)
class SkippedLine:
    """A line of ``results.jsonl`` that is not a usable record, and why."""

    number: int
    reason: str


def git_commit(path: Path) -> str | None:
    """The commit checked out in the git work tree holding ``path``, or None."""
    try:
        output = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return output.stdout.strip() or None


def git_dirty(path: Path) -> bool | None:
    """Whether the git work tree holding ``path`` has uncommitted changes to tracked files, or None when unknown."""
    try:
        output = subprocess.run(
            ["git", "--no-optional-locks", "-C", str(path), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(output.stdout.strip())


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def environment(suite_source: str) -> dict[str, Any]:
    """Versions, commits and the operating system that a result depends on."""
    import torch

    package_dir = Path(__file__).resolve().parent
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "os": f"{platform.system()} {platform.release()}".strip(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "torchvision": _version("torchvision"),
        **{name: _version(name) for name in ("numpy", "pandas", "plotly", "pluggy", "scipy")},
        "benchharness": _version("benchharness"),
        "benchharness_git_commit": git_commit(package_dir),
        "benchharness_git_dirty": git_dirty(package_dir),
        "suite_git_commit": git_commit(Path(suite_source).resolve().parent) if Path(suite_source).exists() else None,
        "hostname": platform.node(),
    }


class RunDir:
    """A run's directory: created once, appended to cell by cell, reopened by ``--resume``."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.torn_tail: bytes | None = None

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
        return check_inside(self.path / LOGS_DIR, _file_stem(cell_id) + ".log", "the cell id")

    def artifact_path(self, cell_id: str) -> Path:
        """Where a built cell's final model waits to be timed (removed once its group is timed)."""
        return check_inside(self.path / MODELS_DIR, _file_stem(cell_id) + ".pt", "the cell id")

    @classmethod
    def create(cls, out_root: Path, suite_name: str) -> "RunDir":
        """Make a new ``<out_root>/<suite>-<timestamp>`` directory."""
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        check_inside(out_root, f"{suite_name}-{stamp}", "the suite's name")
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
        """Reopen an existing run directory, for reading (reports) or, after :meth:`lock`, for ``--resume``; writes nothing."""
        run = cls(path)
        if not run.run_path.is_file():
            raise HarnessError(f"{path} is not a run directory: it has no {RUN_FILE}")
        return run

    def lock(self) -> None:
        """Take the run directory's lock for this process's lifetime and make it ready for appending.

        A second runner gets a clear error, and so does a directory this process cannot write.
        A torn last record (from a killed run) is moved to ``results.torn`` first and kept in ``torn_tail``.
        """
        import fcntl

        try:
            handle = open(self.path / LOCK_FILE, "a+")
            (self.path / LOGS_DIR).mkdir(exist_ok=True)
        except OSError as error:
            raise HarnessError(
                f"cannot write to the run directory {self.path}: {error.strerror or error}; copy it somewhere writable and resume the copy"
            ) from None
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
        self.torn_tail = self.move_torn_tail()

    def move_torn_tail(self) -> bytes | None:
        """Move an unterminated last line of ``results.jsonl`` to ``results.torn``, so the next record starts a line of its own.

        Returns the fragment that was moved, or None when the file ends cleanly.
        """
        if not self.results_path.exists():
            return None
        with open(self.results_path, "rb+") as handle:
            content = handle.read()
            if not content or content.endswith(b"\n"):
                return None
            cut = content.rfind(b"\n") + 1
            fragment = content[cut:]
            with open(self.path / TORN_FILE, "ab") as side:
                side.write(fragment + b"\n")
                side.flush()
                os.fsync(side.fileno())
            handle.truncate(cut)
            handle.flush()
            os.fsync(handle.fileno())
        return fragment

    def write_info(self, info: dict[str, Any]) -> None:
        """Write ``run.json`` atomically: a full disk leaves the previous version in place and raises a :class:`HarnessError`."""
        temporary = self.run_path.with_suffix(".tmp")
        try:
            with open(temporary, "w", encoding="utf-8") as handle:
                handle.write(json.dumps(info, indent=2, default=str))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.run_path)
        except OSError as error:
            temporary.unlink(missing_ok=True)
            full = "disk full" if error.errno in DISK_FULL_ERRORS else "cannot write"
            raise RecordNotWritten(f"{full} at {self.run_path}: {error.strerror or error}; free space and run the suite again") from None

    def read_info(self) -> dict[str, Any]:
        """Read ``run.json``; a file that cannot be read or lacks the suite is a :class:`HarnessError` naming what is wrong."""
        try:
            info = json.loads(self.run_path.read_text(encoding="utf-8"))
        except OSError as error:
            problem = error.strerror or str(error)
        except UnicodeDecodeError:
            problem = "it is not UTF-8 text"
        except json.JSONDecodeError as error:
            problem = f"it is not valid JSON ({error})"
        else:
            problem = run_info_problem(info)
        if problem:
            raise HarnessError(f"{self.run_path} is unusable: {problem}; this run cannot be resumed or reported, so run its suite again")
        return info

    def append(self, record: dict[str, Any]) -> None:
        """Append one record to ``results.jsonl``, flushed to disk.

        A write that fails or stops short (a full disk) is cut away again, so the file keeps only
        complete records, and :class:`DiskFull` (or :class:`RecordNotWritten`) says how many.
        """
        line = (json.dumps(record, default=str, allow_nan=True) + "\n").encode()
        try:
            descriptor = os.open(self.results_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as error:
            raise self._not_written(error) from None
        try:
            start = os.fstat(descriptor).st_size
            try:
                _write_all(descriptor, line)
                os.fsync(descriptor)
            except OSError as error:
                os.ftruncate(descriptor, start)
                raise self._not_written(error) from None
        finally:
            os.close(descriptor)

    def _not_written(self, error: OSError) -> RecordNotWritten:
        kept = self._complete_line_count()
        advice = f"{kept} records kept; free space and run benchharness run --resume {self.path}"
        if error.errno in DISK_FULL_ERRORS:
            return DiskFull(f"disk full at {self.results_path}: {advice}")
        return RecordNotWritten(f"cannot write {self.results_path}: {error.strerror or error}; {advice}")

    def _complete_line_count(self) -> int:
        try:
            return self.results_path.read_bytes().count(b"\n")
        except OSError:
            return 0

    def records(self) -> list[dict[str, Any]]:
        """Every usable record; unusable lines are skipped with one warning that names each line and why."""
        records, skipped = self.read_records()
        if skipped:
            warnings.warn(describe_skipped(self.results_path, skipped), stacklevel=2)
        return records

    def read_records(self) -> tuple[list[dict[str, Any]], list[SkippedLine]]:
        """The usable records of ``results.jsonl`` and the lines skipped, with the reason for each."""
        if not self.results_path.exists():
            return [], []
        lines = self.results_path.read_bytes().split(b"\n")
        records, skipped = [], []
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            record, reason = parse_record(raw, torn=number == len(lines))
            if reason:
                skipped.append(SkippedLine(number, reason))
            else:
                records.append(record)
        return records, skipped

    def finished_cell_ids(self) -> set[str]:
        """Ids of the cells that already have a usable record."""
        return {record["cell"]["id"] for record in self.read_records()[0]}


def _write_all(descriptor: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(descriptor, view)
        if written <= 0:
            raise OSError(errno.ENOSPC, "no bytes written")
        view = view[written:]


def check_inside(root: Path, name: str, what: str) -> Path:
    """``root / name``, or a :class:`HarnessError` when ``name`` would leave ``root`` (a separator, ``..``, an absolute path, a NUL)."""
    path = root / name
    separators = [os.sep, os.altsep or os.sep, "\0"]
    if any(mark in name for mark in separators) or name in ("", ".", "..") or os.path.normpath(path.parent) != os.path.normpath(root):
        raise HarnessError(f"{what} {name!r} would put a file outside {root}; use letters, digits, '.', '_', '-' and '+'")
    return path


def _a(value: Any) -> str:
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def record_problem(record: Any) -> str | None:
    """Why ``record`` is not a cell record the harness can use, or None."""
    if not isinstance(record, dict):
        return f"not a cell record ({_a(record)})"
    cell = record.get("cell")
    if not isinstance(cell, dict):
        return "not a cell record (a dict without 'cell')"
    for key, kind in CELL_FIELDS.items():
        if not isinstance(cell.get(key), kind):
            return f"not a cell record ('cell.{key}' is missing or not {_a(kind())})"
    if not isinstance(record.get("status"), str):
        return "not a cell record (no 'status')"
    if record["status"] == "ok" and not (isinstance(record.get("metrics"), dict) and isinstance(record.get("latency"), list)):
        return "an 'ok' record without 'metrics' and 'latency'"
    return None


def parse_record(raw: bytes, torn: bool = False) -> tuple[dict[str, Any] | None, str | None]:
    """A line of ``results.jsonl`` as (record, None), or (None, why it is unusable); ``torn`` marks an unterminated last line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        if torn:
            return None, "an incomplete last record (the run was interrupted while writing it)"
        return None, f"not valid JSON ({error.msg} at column {error.colno})"
    problem = record_problem(record)
    return (None, problem) if problem else (record, None)


def describe_skipped(path: Path, skipped: list[SkippedLine]) -> str:
    """One message naming the skipped lines of ``path`` (the first few) and why each was skipped."""
    count = len(skipped)
    shown = "; ".join(f"line {line.number}: {line.reason}" for line in skipped[:SHOWN_SKIPPED_LINES])
    more = f"; and {count - SHOWN_SKIPPED_LINES} more" if count > SHOWN_SKIPPED_LINES else ""
    return f"{path}: skipped {count} unusable line{'s' if count != 1 else ''}: {shown}{more}"


def run_info_problem(info: Any) -> str | None:
    """Why a parsed ``run.json`` cannot be used, or None."""
    if not isinstance(info, dict):
        return f"it holds {_a(info)}, not an object"
    suite = info.get("suite")
    if not isinstance(suite, dict):
        return "it has no 'suite' object"
    for key in ("text", "source", "name"):
        if not isinstance(suite.get(key), str):
            return f"'suite.{key}' is missing or not a string"
    return None


def _file_stem(cell_id: str) -> str:
    return cell_id.replace("/", "__").replace(":", "-")


def now_iso() -> str:
    """The current time, ISO 8601 in UTC."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
