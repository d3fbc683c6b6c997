"""The ray executor, on a real local Ray instance: same cells as local, lost workers retried then recorded, timings serialised per node."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from statistics import mean

import psutil
import pytest
from click.testing import CliRunner

from benchharness.cli import cli
from benchharness.errors import HarnessError
from benchharness.executor import TaskSpec
from benchharness.store import RunDir
from tests.conftest import TEST_PLUGINS

ray = pytest.importorskip("ray")

from benchharness.plugins.ray_executor import MEASURE_RESOURCE, RayConfig, RayExecutor  # noqa: E402

TINY_SUITE = """
name = "tiny"
models = ["mlp"]
[data]
name = "digits"
[train]
epochs = 1
batch_size = 256
[measure]
batch_sizes = [1]
warmup = 1
min_iterations = 3
min_seconds = 0.0
min_rounds = 2
max_rounds = 2
threads = 1
[[techniques]]
name = "baseline"
steps = ["baseline"]
[[techniques]]
name = "prune"
steps = ["prune"]
"""
HANG_SUITE = TINY_SUITE.split("[[techniques]]")[0] + '[[techniques]]\nname = "hang"\nsteps = ["hang"]\nhang = { seconds = 300.0 }\n[run]\ncell_timeout_s = 600\n'
HANG_TASK_TITLE = "ray::cell mlp/hang/cpu/r0"


@dataclass
class Meet:
    """A task that announces itself in ``folder`` and waits up to ``wait_s`` for ``other`` to announce itself too."""

    folder: Path
    me: str
    other: str
    wait_s: float

    def run(self) -> dict:
        """Whether the other task was running at some moment while this one was."""
        mine = self.folder / f"{self.me}.running"
        mine.write_text(str(os.getpid()))
        deadline = time.monotonic() + self.wait_s
        met = False
        while not met and time.monotonic() < deadline:
            met = (self.folder / f"{self.other}.running").exists()
            time.sleep(0.05)
        mine.unlink()
        return {"status": "ok", "met": met}


def spec(task, log_dir: Path, name: str, kind: str) -> TaskSpec:
    """A task spec for ``task`` logging to ``log_dir/name.log``."""
    return TaskSpec(task=task, log_path=log_dir / f"{name}.log", name=name, kind=kind, device="cpu", timeout_s=120)


@pytest.fixture(scope="module")
def shared_ray(tmp_path_factory):
    """One local Ray instance (2 CPUs, the measurement resource) for this module's in-process tests."""
    ray.init(
        address="local", num_cpus=2, resources={MEASURE_RESOURCE: 1}, include_dashboard=False, log_to_driver=False,
        logging_level="WARNING", _temp_dir=str(tmp_path_factory.mktemp("ray")),
    )
    yield
    ray.shutdown()


@pytest.fixture
def short_temp_dir():
    """A Ray temp dir with a short path: Ray's socket paths under it must fit in 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="bh-ray-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run_suite(tmp_path: Path, executor: str) -> tuple[list[dict], float]:
    """Run the tiny suite in-process with ``executor``; its records and the run's wall time."""
    suite = tmp_path / "tiny.toml"
    suite.write_text(TINY_SUITE)
    out = tmp_path / executor
    started = time.perf_counter()
    result = CliRunner().invoke(cli, ["run", str(suite), "--out", str(out), "--no-cache", "--executor", executor])
    wall = time.perf_counter() - started
    assert result.exit_code == 0, result.output
    (run_path,) = out.iterdir()
    return RunDir(run_path).records(), wall


def test_ray_runs_the_same_cells_as_local_and_records_the_node(shared_ray, tmp_path):
    """The same suite through local and through ray: the same cells and statuses; ray's records name the node and the attempts."""
    local_records, local_wall = run_suite(tmp_path, "local")
    ray_records, ray_wall = run_suite(tmp_path, "ray")
    assert {r["cell"]["id"]: r["status"] for r in ray_records} == {r["cell"]["id"]: r["status"] for r in local_records}
    assert {r["status"] for r in ray_records} == {"ok"} and len(ray_records) == 2
    for record in ray_records:
        assert record["node"]["hostname"] == socket.gethostname()
        assert record["node"]["ray_node_id"] == ray.get_runtime_context().get_node_id()
        assert record["attempts"] == 1
    (run_path,) = (tmp_path / "ray").iterdir()
    executor = RunDir(run_path).read_info()["executor"]
    assert executor["name"] == "ray" and executor["nodes"][0]["resources"][MEASURE_RESOURCE] == 1
    for name, records, wall in (("local", local_records, local_wall), ("ray", ray_records, ray_wall)):
        print(
            f"{name}: {wall:.2f} s for {len(records)} cells; per cell wall {mean(r['wall_s'] for r in records):.3f} s, "
            f"worker {mean(r['worker_wall_s'] for r in records):.3f} s, overhead {mean(r['worker_overhead_s'] for r in records):.3f} s"
        )


def test_timing_tasks_never_overlap_on_a_node_but_builds_do(shared_ray, tmp_path):
    """Two timing tasks submitted together run one after the other; two builds run at the same time."""
    executor = RayExecutor()
    executor.start(RayConfig(), tmp_path)
    try:
        builds = [spec(Meet(tmp_path, me, other, 60), tmp_path / "logs", f"build {me}", "build") for me, other in (("a", "b"), ("b", "a"))]
        timings = [spec(Meet(tmp_path, me, other, 1.5), tmp_path / "logs", f"timing {me}", "timing") for me, other in (("c", "d"), ("d", "c"))]
        with ThreadPoolExecutor(2) as pool:
            built = list(pool.map(executor.run, builds))
            timed = list(pool.map(executor.run, timings))
    finally:
        executor.stop()
    assert [result["met"] for result in built] == [True, True], built
    assert [result["met"] for result in timed] == [False, False], timed
    assert ray.is_initialized(), "stop() must leave a Ray instance it did not start"


def test_cancel_all_stops_a_running_task(shared_ray, tmp_path):
    """cancel_all makes a running run() return None and ends the task's process."""
    executor = RayExecutor()
    executor.start(RayConfig(), tmp_path)
    results = []
    thread = threading.Thread(target=lambda: results.append(executor.run(spec(Meet(tmp_path, "long", "never", 600), tmp_path / "logs", "long", "build"))))
    thread.start()
    marker = tmp_path / "long.running"
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = int(marker.read_text())
    executor.cancel_all()
    thread.join(30)
    executor.stop()
    assert results == [None]
    if psutil.pid_exists(pid):
        _, alive = psutil.wait_procs([psutil.Process(pid)], timeout=15)
        assert alive == [], "the cancelled task's process is still running"


def test_a_cluster_without_the_measurement_resource_is_refused(shared_ray, tmp_path):
    """Joining Ray where no node offers the measurement resource says how to start nodes."""
    with pytest.raises(HarnessError, match=r"""ray start --address=HEAD:6379 --resources='\{"bh_missing": 1\}'"""):
        RayExecutor().start(RayConfig(measure_resource="bh_missing"), tmp_path)
    assert ray.is_initialized()


def test_killed_ray_worker_is_retried_then_recorded_as_node_lost(tmp_path, short_temp_dir):
    """SIGKILL of the Ray worker running a cell, on every attempt: Ray retries once, then the cell fails as node_lost."""
    suite = tmp_path / "hang.toml"
    suite.write_text(HANG_SUITE)
    temp_dir = short_temp_dir
    command = [
        sys.executable, "-m", "benchharness.cli", "run", str(suite), "--out", str(tmp_path / "runs"), "--no-cache",
        "--plugin", str(TEST_PLUGINS / "faulty.py"), "--executor", "ray",
        "--set", "run.ray.num_cpus=2", "--set", "run.ray.retries=1", "--set", f"run.ray.temp_dir={json.dumps(str(temp_dir))}",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    killed: dict[int, list[psutil.Process]] = {}
    try:
        deadline = time.monotonic() + 150
        while process.poll() is None and time.monotonic() < deadline:
            for found in psutil.process_iter(["pid", "cmdline"]):
                if found.info["pid"] not in killed and HANG_TASK_TITLE in " ".join(found.info["cmdline"] or []):
                    killed[found.info["pid"]] = found.children(recursive=True)
                    found.send_signal(signal.SIGKILL)
            time.sleep(0.2)
        output = process.communicate(timeout=60)[0]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)
    assert process.returncode == 1, output
    assert len(killed) == 2, f"expected the first attempt and one retry, killed {len(killed)}: {output}"
    (run_path,) = (tmp_path / "runs").iterdir()
    (lost,) = RunDir(run_path).records()
    assert (lost["status"], lost["error_type"]) == ("failed", "node_lost")
    assert "retried 1 time(s)" in lost["error_message"] and lost["attempts"] == 2
    assert (Path(RunDir(run_path).read_info()["executor"]["ray_logs"]) / "raylet.out").exists()
    leftovers = [child for children in killed.values() for child in children]
    _, alive = psutil.wait_procs(leftovers, timeout=15)
    assert alive == [], f"the killed Ray workers' processes outlived them: {alive}"


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["run.ray.retries=-1", "run.ray.paralel_groups=3"], ["run.ray.retries", "run.ray.paralel_groups"]),
        (["run.ray.cpus_per_task=0"], ["run.ray.cpus_per_task"]),
        (['run.ray.address="head:6379"', "run.ray.num_cpus=4"], ["run.ray", "num_cpus only apply to a local Ray instance"]),
    ],
)
def test_invalid_ray_options_exit_2_with_their_key_path(tmp_path, options, expected):
    """Bad [run.ray] options are bad input (exit 2) naming each key, before any Ray starts."""
    suite = tmp_path / "tiny.toml"
    suite.write_text(TINY_SUITE)
    arguments = ["run", str(suite), "--out", str(tmp_path / "runs"), "--executor", "ray"]
    for option in options:
        arguments += ["--set", option]
    result = CliRunner().invoke(cli, arguments)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    for part in expected:
        assert part in text
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
