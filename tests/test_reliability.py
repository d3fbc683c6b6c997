"""Reliability for real: kill -9 of the runner mid-run, Ctrl-C, the run-directory lock, diverging training."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
from click.testing import CliRunner

from benchharness.cli import cli
from benchharness.store import RunDir
from tests.conftest import TEST_PLUGINS

# Six repeats of one slow cell: six groups, so records arrive one group (one cell) at a time.
SLOW_SUITE = """
name = "slow"
models = ["mlp"]
repeats = 6
[data]
name = "digits"
[train]
epochs = 1
batch_size = 256
[measure]
batch_sizes = [1]
warmup = 1
min_iterations = 3
min_seconds = 0.01
min_rounds = 2
max_rounds = 3
threads = 1
[[techniques]]
name = "slow"
steps = ["hang"]
hang = { seconds = 1.0 }
"""
EXPECTED = {f"mlp/slow/cpu/r{index}" for index in range(6)}


def start_runner(suite, out, *extra):
    """A real `benchharness run` process in its own session, output captured."""
    command = [sys.executable, "-m", "benchharness.cli", "run", str(suite), "--out", str(out), "--plugin", str(TEST_PLUGINS / "faulty.py"), "--no-cache", *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def wait_for_records(out, count: int, process, timeout: float = 120.0) -> RunDir:
    """Wait until the run has ``count`` records."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = list(out.glob("slow-*"))
        if runs and (runs[0] / "results.jsonl").exists() and len((runs[0] / "results.jsonl").read_text().splitlines()) >= count:
            return RunDir(runs[0])
        assert process.poll() is None, process.stdout.read()
        time.sleep(0.05)
    raise AssertionError("the run did not produce records in time")


def test_kill_9_mid_run_then_resume(tmp_path):
    """SIGKILL of the runner leaves only complete records; --resume runs exactly the missing cells."""
    suite = tmp_path / "slow.toml"
    suite.write_text(SLOW_SUITE)
    process = start_runner(suite, tmp_path / "runs")
    run_dir = wait_for_records(tmp_path / "runs", 2, process)
    descendants = psutil.Process(process.pid).children(recursive=True)
    assert descendants, "the runner should have a forkserver and a worker"
    os.kill(process.pid, signal.SIGKILL)
    process.wait(30)
    lines = run_dir.results_path.read_text().splitlines()
    before = {json.loads(line)["cell"]["id"] for line in lines}
    assert 2 <= len(before) < 6
    _, alive = psutil.wait_procs(descendants, timeout=10)
    assert alive == [], f"processes outlived the killed runner: {alive}"
    resumed = CliRunner().invoke(cli, ["run", "--resume", str(run_dir.path)])
    assert resumed.exit_code == 0, resumed.output
    assert f"{6 - len(before)} of 6 cells to run" in resumed.output.replace("\n", " ")
    ids = [record["cell"]["id"] for record in run_dir.records()]
    assert sorted(ids) == sorted(EXPECTED) and len(ids) == len(set(ids))


def test_ctrl_c_stops_after_the_current_cell(tmp_path):
    """The first Ctrl-C lets the running cell finish, be timed and recorded, then prints the resume command (exit 130)."""
    suite = tmp_path / "slow.toml"
    suite.write_text(SLOW_SUITE)
    process = start_runner(suite, tmp_path / "runs")
    run_dir = wait_for_records(tmp_path / "runs", 1, process)
    os.kill(process.pid, signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output
    assert f"benchharness run --resume {run_dir.path}" in output.replace("\n", "")
    records = run_dir.records()
    assert 1 <= len(records) < 6, "the run should stop early, keeping every finished cell"
    assert all(record["status"] == "ok" for record in records)


def test_second_runner_on_the_same_directory_is_refused(tmp_path):
    """A run directory held by one runner cannot be resumed by another at the same time."""
    suite = tmp_path / "slow.toml"
    suite.write_text(SLOW_SUITE)
    process = start_runner(suite, tmp_path / "runs")
    try:
        run_dir = wait_for_records(tmp_path / "runs", 1, process)
        second = CliRunner().invoke(cli, ["run", "--resume", str(run_dir.path)])
        assert second.exit_code == 2
        assert "is being written by another benchharness run (pid" in second.output.replace("\n", " ")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)


def test_diverging_training_is_recorded_as_diverged(tmp_path):
    """A loss that becomes NaN fails the cell as 'diverged' with a hint; the other cells still run."""
    suite = tmp_path / "diverge.toml"
    suite.write_text(
        'models = ["mlp"]\n[data]\nname = "digits"\n[[techniques]]\nsteps = ["baseline"]\n[train]\nepochs = 2\noptimizer = "sgd"\nlr = 100.0\nmomentum = 0.9\nschedule = "constant"\n'
        "[measure]\nbatch_sizes = [1]\nwarmup = 1\nmin_iterations = 3\nmin_seconds = 0\n"
    )
    result = CliRunner().invoke(cli, ["run", str(suite), "--out", str(tmp_path / "runs"), "--no-cache"])
    assert result.exit_code == 1
    (run_path,) = (tmp_path / "runs").iterdir()
    (record,) = RunDir(run_path).records()
    assert (record["status"], record["error_type"]) == ("failed", "diverged")
    assert "lower the learning rate" in record["error_message"]


OFFLINE_SUITE = 'name = "offline"\nmodels = ["mlp"]\ndevices = ["offline"]\nrepeats = 4\n[data]\nname = "digits"\n'


def test_ctrl_c_while_workers_start_gives_the_resume_command(tmp_path):
    """Ctrl-C (twice, to the whole process group) while the forkserver imports torch: exit 130, the resume command unwrapped, no traceback.

    The forkserver writes to its log, not to the caller's stdout, so a pipe reading the run closes when the runner exits.
    """
    suite = tmp_path / "offline.toml"
    suite.write_text(OFFLINE_SUITE)
    out = tmp_path / ("a-long-directory-name-so-that-the-resume-command-is-longer-than-eighty-columns" * 2)
    command = [sys.executable, "-m", "benchharness.cli", "run", str(suite), "--out", str(out), "--plugin", str(TEST_PLUGINS / "offline_device.py")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while not list(out.glob("offline-*/run.json")) or not psutil.Process(process.pid).children():
        assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()
        time.sleep(0.02)
    (run_path,) = [path.parent for path in out.glob("offline-*/run.json")]
    pipe = f"pipe:[{os.fstat(process.stdout.fileno()).st_ino}]"
    for child in psutil.Process(process.pid).children(recursive=True):
        assert os.readlink(f"/proc/{child.pid}/fd/1") != pipe, f"{child.cmdline()} holds the caller's stdout"
    os.killpg(process.pid, signal.SIGINT)
    time.sleep(0.3)
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 130, output
    assert f"resume with: benchharness run --resume {run_path}\n" in output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output and "Aborted" not in output
    resumed = CliRunner().invoke(cli, ["run", "--resume", str(run_path)], terminal_width=400)
    assert resumed.exit_code == 0, resumed.output
    assert len(RunDir(run_path).records()) == 4
    assert json.loads((run_path / "run.json").read_text())["described"] is True


def test_a_bad_suite_exits_at_once_and_releases_stdout(tmp_path):
    """`$(benchharness run bad.toml)` returns as soon as the process exits: no forkserver is started for a bad suite."""
    bad = tmp_path / "bad.toml"
    bad.write_text('models = ["nope"]\n[data]\nname = "digits"\n')
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "benchharness.cli", "run", str(bad), "--out", str(tmp_path / "runs")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert time.monotonic() - started < 4.0
    assert not (tmp_path / "runs").exists()
