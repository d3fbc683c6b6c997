"""Run files under stress: a full disk, a torn last line, hand-corrupted records and run.json, a read-only run directory.

Each test reproduces a way records were lost or a command crashed, with real files and processes.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from benchharness.cli import cli
from benchharness.errors import HarnessError
from benchharness.store import RunDir
from tests.conftest import ROOT

OFFLINE = str(ROOT / "tests" / "plugins" / "offline_device.py")
CELLS = 30
SUITE = f"""
name = "files"
models = ["mlp"]
devices = ["offline"]
repeats = {CELLS}
[data]
name = "digits"
"""


def invoke(*args: str):
    """The CLI in this process, with a wide terminal so messages are not wrapped."""
    return CliRunner().invoke(cli, list(args), terminal_width=400, env={"COLUMNS": "400"})


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished run of 30 skipped cells (an offline device: no workers, small records)."""
    root = tmp_path_factory.mktemp("finished")
    suite = root / "files.toml"
    suite.write_text(SUITE)
    result = invoke("run", str(suite), "--out", str(root / "runs"), "--plugin", OFFLINE)
    assert result.exit_code == 0, result.output
    (path,) = (root / "runs").iterdir()
    (root / "output.txt").write_text(result.output)
    return path


def test_identical_skip_reasons_are_printed_once(finished_run):
    """30 cells skipped for one reason: one line with the reason, one line counting the rest."""
    output = (finished_run.parent.parent / "output.txt").read_text()
    assert output.count("this test device is never available") == 2
    assert "skipped 29 more cell(s) for the same reason: device 'offline' unavailable: this test device is never available" in output


@pytest.fixture
def run_copy(finished_run, tmp_path) -> RunDir:
    """A private copy of the finished run, to damage."""
    return RunDir(Path(shutil.copytree(finished_run, tmp_path / finished_run.name)))


def cell_ids(run: RunDir) -> list[str]:
    """The cell id of every line of results.jsonl that is a record."""
    return [json.loads(line)["cell"]["id"] for line in run.results_path.read_text().splitlines()]


def limit_file_size(limit: int):
    """For a child process: files may grow to ``limit`` bytes; writing beyond fails with EFBIG (no SIGXFSZ)."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_short_write_is_cut_away(tmp_path):
    """A record that does not fit is truncated away and reported; every earlier record stays intact."""
    script = (
        "import sys\n"
        "from benchharness.store import RunDir, DiskFull\n"
        "run = RunDir(__import__('pathlib').Path(sys.argv[1]))\n"
        "for index in range(1000):\n"
        "    try:\n"
        "        run.append({'cell': {'id': f'c{index}'}, 'status': 'ok', 'pad': 'x' * 700})\n"
        "    except DiskFull as error:\n"
        "        print(error)\n"
        "        sys.exit(3)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, preexec_fn=limit_file_size(10_000), timeout=60)
    assert done.returncode == 3, done.stdout + done.stderr
    kept = cell_ids(RunDir(tmp_path))
    assert kept == [f"c{index}" for index in range(len(kept))] and len(kept) >= 10
    assert (tmp_path / "results.jsonl").stat().st_size > 10_000 - 800
    assert (tmp_path / "results.jsonl").read_bytes().endswith(b"\n")
    assert f"disk full at {tmp_path / 'results.jsonl'}: {len(kept)} records kept" in done.stdout
    assert "--resume" in done.stdout


def test_a_full_disk_stops_the_run_and_resume_completes_it(tmp_path):
    """`run` on a disk that fills up stops with a clear message; after `--resume` every cell has exactly one record."""
    suite = tmp_path / "files.toml"
    suite.write_text(SUITE)
    command = [sys.executable, "-m", "benchharness.cli", "run", str(suite), "--out", str(tmp_path / "runs"), "--plugin", OFFLINE]
    done = subprocess.run(command, capture_output=True, text=True, preexec_fn=limit_file_size(12_000), timeout=300, env={**os.environ, "COLUMNS": "300"})
    (path,) = (tmp_path / "runs").iterdir()
    kept = cell_ids(RunDir(path))
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "Traceback" not in output
    assert 0 < len(kept) < CELLS
    assert f"disk full at {path / 'results.jsonl'}: {len(kept)} records kept; free space and run benchharness run --resume {path}" in output
    resumed = invoke("run", "--resume", str(path))
    assert resumed.exit_code == 0, resumed.output
    assert sorted(cell_ids(RunDir(path))) == sorted(f"mlp/baseline/offline/r{index}" for index in range(CELLS))


def test_a_torn_last_line_is_moved_aside_before_resume(run_copy):
    """A record torn by a crash is moved to results.torn; the rerun record lands on a line of its own."""
    text = run_copy.results_path.read_text()
    lines = text.splitlines(keepends=True)
    torn = lines[-1][: len(lines[-1]) // 2]
    run_copy.results_path.write_text("".join(lines[:-1]) + torn)
    resumed = invoke("run", "--resume", str(run_copy.path))
    assert resumed.exit_code == 0, resumed.output
    assert "1 of 30 cells to run" in resumed.output
    assert f"ended in a torn record ({len(torn)} bytes), moved to {run_copy.path / 'results.torn'}" in resumed.output
    assert len(cell_ids(run_copy)) == CELLS
    assert (run_copy.path / "results.torn").read_text() == torn + "\n"


def test_unusable_lines_are_skipped_and_counted_with_the_true_reason(run_copy):
    """`{}`, `42`, garbage and non-UTF-8 lines: report and resume go on; each line is named with why it was skipped."""
    lines = run_copy.results_path.read_bytes().splitlines(keepends=True)
    damaged = lines[:3] + [b"{}\n", b"42\n", b"\xff\xfe not text\n", b"{\"cell\": \n"] + lines[7:]
    run_copy.results_path.write_bytes(b"".join(damaged))
    with pytest.warns(UserWarning) as caught:
        records = run_copy.records()
    assert len(records) == CELLS - 4
    message = " ".join(str(warning.message) for warning in caught)
    assert "skipped 4 unusable lines" in message
    assert "line 4: not a cell record (a dict without 'cell')" in message
    assert "line 5: not a cell record (an int)" in message
    assert "line 6: not UTF-8 text" in message
    assert "line 7: not valid JSON" in message
    assert "interrupted" not in message
    report = invoke("report", str(run_copy.path), "-o", str(run_copy.path.parent / "out.html"))
    assert report.exit_code == 0, report.output
    assert "line 4" in report.output
    resumed = invoke("run", "--resume", str(run_copy.path))
    assert resumed.exit_code == 0, resumed.output
    assert "4 of 30 cells to run" in resumed.output


@pytest.mark.parametrize("content", ["", "not json", "[]", "{\"suite\": 42}"], ids=["empty", "garbage", "list", "no-suite"])
def test_an_unusable_run_json_is_a_clear_error(run_copy, content):
    """report and --resume exit 2 naming run.json and what is wrong with it."""
    run_copy.run_path.write_text(content)
    for command in (["report", str(run_copy.path)], ["run", "--resume", str(run_copy.path)]):
        result = invoke(*command)
        assert result.exit_code == 2, result.output
        assert f"{run_copy.run_path}" in " ".join(result.output.split())
        assert "Traceback" not in result.output


def snapshot(path: Path) -> dict[str, tuple[int, int]]:
    """Every file and directory under ``path`` with its size and modification time."""
    return {str(item.relative_to(path)): (item.stat().st_size, item.stat().st_mtime_ns) for item in sorted(path.rglob("*"))}


def test_reading_a_run_never_writes_to_it(run_copy, tmp_path):
    """report -o elsewhere leaves the run directory exactly as it was (no logs/ created)."""
    shutil.rmtree(run_copy.path / "logs")
    before = snapshot(run_copy.path)
    result = invoke("report", str(run_copy.path), "-o", str(tmp_path / "elsewhere.html"))
    assert result.exit_code == 0, result.output
    assert snapshot(run_copy.path) == before


@pytest.fixture
def read_only_run(finished_run, tmp_path):
    """A copy of the finished run that this process cannot write: a read-only bind mount as root, chmod otherwise."""
    copy = Path(shutil.copytree(finished_run, tmp_path / "copy"))
    if os.geteuid() != 0:
        for item in [copy, *copy.rglob("*")]:
            item.chmod(0o555 if item.is_dir() else 0o444)
        yield copy
        for item in [copy, *copy.rglob("*")]:
            item.chmod(0o755 if item.is_dir() else 0o644)
        return
    mount_point = tmp_path / "read-only"
    mount_point.mkdir()
    bind = subprocess.run(["mount", "--bind", str(copy), str(mount_point)], capture_output=True)
    if bind.returncode != 0:
        pytest.skip("running as root without permission to mount: a read-only directory cannot be made")
    try:
        if subprocess.run(["mount", "-o", "remount,ro,bind", str(mount_point)], capture_output=True).returncode != 0:
            pytest.skip("cannot remount read-only")
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], capture_output=True)


def test_a_read_only_run_directory(read_only_run, tmp_path):
    """report -o elsewhere works on a read-only run; --resume on it is exit 2 with a message."""
    with pytest.raises(OSError):
        (read_only_run / "probe").write_text("")
    report = invoke("report", str(read_only_run), "-o", str(tmp_path / "r.html"))
    assert report.exit_code == 0, report.output
    assert (tmp_path / "r.html").exists()
    resume = invoke("run", "--resume", str(read_only_run))
    output = " ".join(resume.output.split())
    assert resume.exit_code == 2, output
    assert f"cannot write to the run directory {read_only_run}" in output
    assert "Traceback" not in output


@pytest.mark.parametrize("name", ["../escaped", "/tmp/absolute", "a/b", "a/../../escaped"])
def test_a_run_directory_stays_inside_its_root(tmp_path, name):
    """Whatever name reaches RunDir.create, the directory it makes is inside --out."""
    with pytest.raises(HarnessError, match="outside"):
        RunDir.create(tmp_path / "runs", name)
    assert not any(item.name.startswith(("escaped", "absolute")) for item in tmp_path.rglob("*"))
