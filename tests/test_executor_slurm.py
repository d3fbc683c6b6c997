"""The slurm executor: real jobs on submitit's local cluster record what local workers record; a lost job is
retried then recorded as node_lost, one stopped at its time limit as timeout; the sbatch options of a job."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import threading
import time
from dataclasses import replace
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

from benchharness.cli import cli
from benchharness.executor import TaskSpec
from benchharness.store import RunDir
from tests.conftest import TEST_PLUGINS

submitit = pytest.importorskip("submitit")

from benchharness.plugins.slurm_executor import JOB_MARK, SINGLETON_NAME, SlurmConfig, SlurmExecutor, job_parameters  # noqa: E402

FAULTY = str(TEST_PLUGINS / "faulty.py")
ON_LOCAL_CLUSTER = ["--executor", "slurm", "--set", 'run.slurm.cluster="local"']

TINY = """
name = "tiny"
models = ["mlp"]
[data]
name = "digits"
[train]
epochs = 1
batch_size = 128
optimizer = "adam"
lr = 0.01
[measure]
batch_sizes = [1]
warmup = 1
min_iterations = 3
min_seconds = 0.0
min_rounds = 2
max_rounds = 2
threads = 1
[run]
cell_timeout_s = 60
"""
PIPELINES = '[[techniques]]\nsteps = ["baseline"]\n[[techniques]]\nsteps = ["identity"]\n'
HANGING = '[[techniques]]\nname = "lost"\nsteps = ["hang"]\n[[techniques]]\nname = "late"\nsteps = ["hang"]\n'


def run_suite(root: Path, text: str, *options: str) -> tuple[object, RunDir, float]:
    """Run ``text`` with the faulty plugins under ``root/runs``: the CLI result, the run directory and the wall time."""
    suite = root / "suite.toml"
    suite.write_text(text)
    started = time.perf_counter()
    result = CliRunner().invoke(cli, ["run", str(suite), "--out", str(root / "runs"), "--no-cache", "--plugin", FAULTY, *options])
    wall = time.perf_counter() - started
    (run_path,) = (root / "runs").iterdir()
    return result, RunDir(run_path), wall


def by_id(run_dir: RunDir) -> dict[str, dict]:
    return {record["cell"]["id"]: record for record in run_dir.records()}


@pytest.fixture(scope="module")
def both_runs(tmp_path_factory):
    """The same tiny suite (baseline and identity, two timing rounds) under local, then as jobs on the local cluster."""
    local = run_suite(tmp_path_factory.mktemp("local"), TINY + PIPELINES)
    slurm = run_suite(tmp_path_factory.mktemp("slurm"), TINY + PIPELINES, *ON_LOCAL_CLUSTER)
    return local, slurm


@pytest.mark.slow
def test_jobs_record_what_local_workers_record(both_runs):
    """Same cells, same statuses, latencies measured; every task was one job whose folder is under run_dir/slurm."""
    (local_result, local_dir, local_wall), (result, run_dir, wall) = both_runs
    assert local_result.exit_code == 0, local_result.output
    assert result.exit_code == 0, result.output
    local, slurm = by_id(local_dir), by_id(run_dir)
    assert {cell: record["status"] for cell, record in slurm.items()} == {cell: record["status"] for cell, record in local.items()}
    assert set(slurm) == {"mlp/baseline/cpu/r0", "mlp/identity/cpu/r0"}
    for record in slurm.values():
        assert record["latency"][0]["latency_p50_ms"] > 0 and record["latency"][0]["rounds_timed"] == 2 and record["attempts"] == 1
        assert record["node"]["hostname"] == socket.gethostname() and record["node"]["timed_on"] == [socket.gethostname()]
    jobs = [path for path in (run_dir.path / "slurm").iterdir() if path.name.isdigit()]
    assert len(jobs) == 5, "describe, two builds, two timing rounds"
    assert any("cell mlp/identity/cpu/r0" in log.read_text() for job in jobs for log in job.glob("*_log.out"))
    executor = json.loads((run_dir.path / "run.json").read_text())["executor"]
    assert executor["name"] == "slurm" and executor["cluster"] == "local" and executor["options"]["cluster"] == "local"

    cells = len(slurm)
    build = {name: sum(r["worker_overhead_s"] for r in records.values()) / cells for name, records in (("local", local), ("slurm", slurm))}
    print(
        f"\noverhead, {cells} cells, 5 tasks: local run {local_wall:.1f} s, slurm (local cluster) run {wall:.1f} s, "
        f"{(wall - local_wall) / cells:.1f} s more per cell; build task overhead per cell: local {build['local']:.2f} s, slurm {build['slurm']:.2f} s"
    )


def interfere(runs: Path, signals: dict[str, list[int]], stop: threading.Event) -> None:
    """Send each named task's jobs the next of its signals, once the job's worker is running (as Slurm or a dying node would)."""
    seen: set[int] = set()
    while not stop.wait(0.2):
        for log in runs.glob("*/slurm/*/*_log.out"):
            match = re.search(rf"{re.escape(JOB_MARK)} (.+) on .+, pid (\d+)", log.read_text())
            if not match or int(match[2]) in seen or not signals.get(match[1]):
                continue
            pid = int(match[2])
            try:
                if not any(process.ppid() != pid for process in psutil.Process(pid).children(recursive=True)):
                    continue
                time.sleep(0.5)
                os.kill(pid, signals[match[1]].pop(0))
            except (psutil.NoSuchProcess, ProcessLookupError):
                pass
            seen.add(pid)


@pytest.mark.slow
def test_lost_job_is_retried_then_node_lost_and_time_limit_is_timeout(tmp_path):
    """A job killed mid-cell is submitted again, killed again, and recorded failed/node_lost; Slurm's time-limit signal gives timeout."""
    signals = {"cell mlp/lost/cpu/r0": [signal.SIGKILL, signal.SIGKILL], "cell mlp/late/cpu/r0": [signal.SIGUSR2]}
    stop = threading.Event()
    watcher = threading.Thread(target=interfere, args=(tmp_path / "runs", signals, stop), daemon=True)
    watcher.start()
    try:
        result, run_dir, _ = run_suite(tmp_path, TINY + HANGING, *ON_LOCAL_CLUSTER)
    finally:
        stop.set()
        watcher.join()
    records = by_id(run_dir)
    assert result.exit_code == 1, result.output
    lost, late = records["mlp/lost/cpu/r0"], records["mlp/late/cpu/r0"]
    assert (lost["status"], lost["error_type"]) == ("failed", "node_lost"), lost
    assert "retried 1 time(s)" in lost["error_message"] and len(re.search(r"jobs ([\d, ]+):", lost["error_message"])[1].split(",")) == 2
    assert (late["status"], late["error_type"]) == ("timeout", "timeout"), late
    assert "time limit of 6 min" in late["error_message"] and "timed-out" in late["traceback"]
    assert signals == {"cell mlp/lost/cpu/r0": [], "cell mlp/late/cpu/r0": []}


def test_cancel_all_ends_running_jobs(tmp_path):
    """cancel_all makes a waiting run() return None and kills the job's processes."""
    executor = SlurmExecutor()
    executor.start(SlurmConfig(cluster="local"), tmp_path)
    spec = TaskSpec(task=None, log_path=tmp_path / "logs" / "cell.log", name="cell never", kind="build", device="cpu", timeout_s=60)
    returned = []
    thread = threading.Thread(target=lambda: returned.append(executor.run(spec)))
    thread.start()
    deadline = time.monotonic() + 30
    while not list((tmp_path / "slurm").glob("*/*_log.out")) and time.monotonic() < deadline:
        time.sleep(0.05)
    (job_dir,) = [path for path in (tmp_path / "slurm").iterdir() if path.name.isdigit()]
    job = psutil.Process(int(job_dir.name))
    processes = [job, *job.children(recursive=True)]
    while len(processes) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
        processes = [job, *job.children(recursive=True)]
    assert len(processes) >= 3, "the job's shell, submitit's controller and the job's python"
    executor.cancel_all()
    thread.join(10)
    executor.stop()
    assert returned == [None]
    assert not [process for process in processes if process.is_running() and process.status() != psutil.STATUS_ZOMBIE]


def test_sbatch_options_of_a_cuda_timing_job(tmp_path, monkeypatch):
    """A cuda timing job asks for its GPUs, partition, time limit and a whole node, as sbatch reads them; a cpu build job shares."""
    config = SlurmConfig(partition="gpu", gpus_for_cuda=2, additional_parameters={"account": "proj"}, setup=["module load cuda"])
    timing = TaskSpec(task=None, log_path=tmp_path / "rounds.log", name="timing mlp/cuda/r0/rounds", kind="timing", device="cuda", timeout_s=1800)
    parameters = job_parameters(config, timing, node="gpu-07")
    assert parameters["gpus_per_node"] == 2 and parameters["slurm_partition"] == "gpu" and parameters["timeout_min"] == 35
    assert parameters["slurm_exclusive"] is True and parameters["slurm_nodelist"] == "gpu-07"
    build = job_parameters(config.model_copy(update={"time_limit_min": 90}), replace(timing, kind="build", device="cpu", timeout_s=30))
    assert "gpus_per_node" not in build and build["timeout_min"] == 90 and "slurm_exclusive" not in build and "slurm_nodelist" not in build
    shared = job_parameters(config.model_copy(update={"exclusive_timing": False}), timing)
    assert (shared["name"], shared["slurm_dependency"]) == (SINGLETON_NAME, "singleton") and "slurm_exclusive" not in shared

    script = tmp_path / "script.sh"
    stand_ins = tmp_path / "bin"
    stand_ins.mkdir()
    (stand_ins / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {script}\necho "Submitted batch job 4242"\n')
    (stand_ins / "srun").write_text("#!/bin/sh\nexit 1\n")
    for tool in stand_ins.iterdir():
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{stand_ins}{os.pathsep}{os.environ['PATH']}")
    assert SlurmExecutor().unavailable_reason(config) is None
    executor = submitit.AutoExecutor(folder=tmp_path / "slurm" / "%j", cluster="slurm")
    executor.update_parameters(**parameters)
    assert executor.submit(print, "hello").job_id == "4242"
    lines = set(script.read_text().splitlines())
    for line in (
        "#SBATCH --gpus-per-node=2", "#SBATCH --partition=gpu", "#SBATCH --time=35", "#SBATCH --exclusive", "#SBATCH --nodelist=gpu-07",
        "#SBATCH --account=proj", "#SBATCH --cpus-per-task=2", "#SBATCH --job-name='benchharness:timing mlp/cuda/r0/rounds'", "module load cuda",
    ):
        assert line in lines, f"{line!r} not in the sbatch script"


def test_describe_job_asks_for_a_gpu_when_the_suite_has_cuda(host, tmp_path):
    """Devices are probed in the describe job, so it needs a GPU when any cell does."""
    from benchharness.suite import load_suite_text
    from benchharness.tasks import DescribeTask

    def describe(devices: str) -> TaskSpec:
        suite = load_suite_text(f"devices = {devices}\n" + TINY, "suite.toml", host)
        return TaskSpec(task=DescribeTask(suite, host.options), log_path=tmp_path / "describe.log", name="describe", kind="describe", device="cpu", timeout_s=60)

    assert job_parameters(SlurmConfig(), describe('["cpu", "cuda"]'))["gpus_per_node"] == 1
    assert "gpus_per_node" not in job_parameters(SlurmConfig(), describe('["cpu"]'))


@pytest.mark.skipif(shutil.which("sbatch") is not None, reason="this machine has Slurm")
def test_without_slurm_the_executor_says_why(tmp_path):
    """Without sbatch, cluster slurm (or submitit's choice) cannot be used: exit 2 with the reason and the way out."""
    assert "sbatch and srun not found" in SlurmExecutor().unavailable_reason(SlurmConfig())
    assert SlurmExecutor().unavailable_reason(SlurmConfig(cluster="local")) is None
    suite = tmp_path / "suite.toml"
    suite.write_text(TINY + PIPELINES)
    result = CliRunner().invoke(cli, ["run", str(suite), "--out", str(tmp_path / "runs"), "--executor", "slurm", "--plugin", FAULTY])
    assert result.exit_code == 2
    assert "the slurm executor cannot be used here" in result.output and 'run.slurm.cluster = "local"' in result.output
