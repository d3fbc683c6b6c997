"""No process outlives its cell: process-tree hygiene with real processes, and real runners killed or timed out."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from benchharness.processes import DescendantTracker, kill_tree
from tests.conftest import TEST_PLUGINS

GONE_WITHIN_S = 5.0
SLEEPER = [sys.executable, "-c", "import time\nwhile True:\n    time.sleep(0.05)\n"]


def is_gone(process: psutil.Process) -> bool:
    """Whether ``process`` has ended (a zombie has ended; a reused pid is another process)."""
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def survivors(processes, within_s: float = GONE_WITHIN_S) -> list[psutil.Process]:
    """Those of ``processes`` still running after ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    while True:
        alive = [process for process in processes if not is_gone(process)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def kill_all(processes) -> None:
    """SIGKILL whatever of ``processes`` still runs (cleanup, independent of the code under test)."""
    for process in processes:
        try:
            process.kill()
        except psutil.Error:
            pass


def end(process: subprocess.Popen) -> None:
    """Kill and reap a process this test started, if it still runs."""
    process.kill()
    process.wait(10)


def tree(pid: int) -> set[psutil.Process]:
    """``pid`` and its descendants now."""
    try:
        root = psutil.Process(pid)
        return {root, *root.children(recursive=True)}
    except psutil.Error:
        return set()


def running_with(marker: str) -> list[psutil.Process]:
    """Running processes whose command line contains ``marker``."""
    found = []
    for process in psutil.process_iter():
        try:
            if marker in " ".join(process.cmdline()) and not is_gone(process):
                found.append(process)
        except psutil.Error:
            pass
    return found


def run_script(tmp_path: Path, source: str) -> tuple[subprocess.Popen, list[psutil.Process]]:
    """Start a Python script that prints one JSON list of pids, and return it with those processes."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(source))
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, start_new_session=True)
    ready, _, _ = select.select([process.stdout], [], [], 60)
    line = process.stdout.readline() if ready else ""
    if not line:
        kill_all(tree(process.pid))
        raise AssertionError(f"the script printed no pids (exit code {process.wait(30)})")
    return process, [psutil.Process(pid) for pid in json.loads(line)]


def test_kill_tree_kills_a_grandchild_in_a_new_session(tmp_path):
    """kill_tree reaches descendants that left the process group and session."""
    parent, (grandchild,) = run_script(tmp_path, f"""
        import json, subprocess, time
        grandchild = subprocess.Popen({SLEEPER!r}, start_new_session=True)
        print(json.dumps([grandchild.pid]), flush=True)
        time.sleep(60)
    """)
    try:
        assert grandchild.ppid() == parent.pid and os.getsid(grandchild.pid) != os.getsid(parent.pid)
        killed = kill_tree(parent.pid)
        assert {process.pid for process in killed} == {parent.pid, grandchild.pid}
        assert survivors([grandchild], within_s=0) == []
        assert parent.wait(5) == -signal.SIGKILL
    finally:
        kill_all([grandchild])
        end(parent)


def test_kill_tree_stops_a_process_that_keeps_forking(tmp_path):
    """Every process is stopped before any is killed, so a fork loop leaves no child behind."""
    marker = str(tmp_path / "script.py")
    parent, _ = run_script(tmp_path, """
        import json, os, time
        print(json.dumps([]), flush=True)
        while True:
            if os.fork() == 0:
                time.sleep(30)
                os._exit(0)
            time.sleep(0.001)
    """)
    try:
        time.sleep(0.3)
        kill_tree(parent.pid)
        assert survivors(running_with(marker), within_s=1.0) == []
    finally:
        kill_all(running_with(marker))
        end(parent)


def test_tracker_kills_a_descendant_reparented_after_its_parent_died(tmp_path):
    """A descendant whose parent was SIGKILLed is no longer in the tree, but the tracker still kills it."""
    parent, (grandchild,) = run_script(tmp_path, f"""
        import json, subprocess, time
        grandchild = subprocess.Popen({SLEEPER!r}, start_new_session=True)
        print(json.dumps([grandchild.pid]), flush=True)
        time.sleep(60)
    """)
    try:
        tracker = DescendantTracker(parent.pid)
        tracker.poll()
        parent.kill()
        parent.wait(5)
        assert survivors([grandchild], within_s=0.5) == [grandchild]
        assert grandchild.ppid() != parent.pid
        tracker.kill_all()
        assert survivors([grandchild], within_s=0) == []
    finally:
        kill_all([grandchild])
        end(parent)


def test_a_forkserver_exits_with_its_client_once_children_close_the_alive_fd(tmp_path):
    """With the inherited alive-pipe end closed in the child, killing the client ends the forkserver."""
    client, (server, child) = run_script(tmp_path, """
        import json, multiprocessing, os, time
        from multiprocessing import forkserver
        from benchharness.processes import close_inherited_alive_fd

        def child(pipe):
            close_inherited_alive_fd()
            assert forkserver._forkserver._forkserver_alive_fd is None
            pipe.send(os.getpid())
            time.sleep(60)

        if __name__ == "__main__":
            context = multiprocessing.get_context("forkserver")
            receiver, sender = context.Pipe(duplex=False)
            context.Process(target=child, args=(sender,)).start()
            sender.close()
            pid = receiver.recv()
            alive_fd = forkserver._forkserver._forkserver_alive_fd
            close_inherited_alive_fd()
            assert forkserver._forkserver._forkserver_alive_fd == alive_fd, "the client's own end must stay open"
            print(json.dumps([forkserver._forkserver._forkserver_pid, pid]), flush=True)
            time.sleep(60)
    """)
    try:
        client.kill()
        client.wait(5)
        assert survivors([server]) == [], "the forkserver outlived its client"
    finally:
        end(client)
        kill_all([server, child])


def test_a_watched_parent_takes_descendants_along(tmp_path):
    """watch_parent: when a process's parent dies, it kills its descendants (new session too) and exits."""
    client, (watcher, grandchild) = run_script(tmp_path, f"""
        import json, subprocess, sys, time
        watcher = subprocess.Popen([sys.executable, "-c", r'''
        import subprocess, sys, time
        from benchharness.processes import watch_parent
        watch_parent()
        child = subprocess.Popen({SLEEPER!r}, start_new_session=True)
        print(child.pid, flush=True)
        time.sleep(60)
        '''], stdout=subprocess.PIPE, text=True)
        print(json.dumps([watcher.pid, int(watcher.stdout.readline())]), flush=True)
        time.sleep(60)
    """)
    try:
        client.kill()
        client.wait(5)
        assert survivors([watcher, grandchild]) == []
    finally:
        end(client)
        kill_all([watcher, grandchild])


def test_a_ddp_rank_dies_with_its_launcher(tmp_path):
    """A rank waiting to join its group dies when the process that launched it (the cell's worker) dies."""
    spec = tmp_path / "spec.json"
    client, (rank,) = run_script(tmp_path, f"""
        import json, os, socket, subprocess, sys, time
        with socket.socket() as free:
            free.bind(("127.0.0.1", 0))
            port = free.getsockname()[1]
        with open({str(spec)!r}, "w") as spec:
            json.dump({{"launcher_pid": os.getpid(), "backend": "gloo"}}, spec)
        environment = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="1", WORLD_SIZE="2")
        rank = subprocess.Popen([sys.executable, "-m", "benchharness.plugins.ddp", {str(spec)!r}], env=environment, start_new_session=True)
        print(json.dumps([rank.pid]), flush=True)
        time.sleep(60)
    """)
    try:
        time.sleep(1.0)
        assert not is_gone(rank), "the rank should wait for rank 0"
        client.kill()
        client.wait(5)
        assert survivors([rank]) == [], "the rank outlived its launcher"
    finally:
        end(client)
        kill_all([rank])


def test_die_with_parent_exits_when_the_parent_already_changed():
    """The race check: a process whose parent is no longer the expected one exits at once."""
    code = "from benchharness.processes import die_with_parent\ndie_with_parent(parent_pid=1)\nprint('survived')"
    finished = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert (finished.returncode, finished.stdout) == (1, "")


def test_become_subreaper_adopts_orphaned_grandchildren(tmp_path):
    """After become_subreaper, a grandchild whose parent exits is reparented to this process, not init."""
    script, (grandchild,) = run_script(tmp_path, """
        import json, os, subprocess, sys
        from benchharness.processes import become_subreaper
        assert become_subreaper()
        sleeper = "[sys.executable, '-c', 'import time; time.sleep(60)']"
        launcher = f"import subprocess, sys; print(subprocess.Popen({sleeper}, stdout=subprocess.DEVNULL).pid)"
        pid = int(subprocess.run([sys.executable, "-c", launcher], stdout=subprocess.PIPE, text=True).stdout)
        print(json.dumps([pid]), flush=True)
        print(os.getpid() == __import__("psutil").Process(pid).ppid(), flush=True)
        import time; time.sleep(60)
    """)
    try:
        assert script.stdout.readline().strip() == "True"
    finally:
        kill_all([grandchild])
        end(script)


SUITE = """
name = "hygiene"
models = ["mlp"]
[data]
name = "digits"
[train]
epochs = {epochs}
batch_size = 64
[measure]
batch_sizes = [1]
warmup = 1
min_iterations = 3
min_seconds = 0
threads = 2
[run]
cell_timeout_s = {timeout}
[[techniques]]
steps = ["{step}"]
{config}
"""


class Runner:
    """A real `benchharness run` process in its own session, with every process it has been seen to start."""

    def __init__(self, tmp_path: Path, step: str, timeout: float, epochs: int = 1, config: str = ""):
        self.out = tmp_path / "runs"
        suite = tmp_path / "suite.toml"
        suite.write_text(SUITE.format(step=step, timeout=timeout, epochs=epochs, config=config))
        command = [sys.executable, "-m", "benchharness.cli", "run", str(suite), "--out", str(self.out), "--no-cache", "--plugin", str(TEST_PLUGINS / "spawner.py")]
        self.log = (tmp_path / "runner.log").open("w")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.seen = tree(self.process.pid)

    def watch(self) -> None:
        """Remember the runner's descendants now."""
        self.seen |= tree(self.process.pid)

    def wait_for(self, condition, timeout: float = 60.0):
        """Poll ``condition`` until it returns something true, remembering the runner's descendants; fail if the runner ends first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.watch()
            found = condition()
            if found:
                return found
            assert self.process.poll() is None, (self.out.parent / "runner.log").read_text()
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {condition.__name__}")

    def records(self) -> list[dict]:
        """The records written so far."""
        return [json.loads(line) for path in self.out.glob("*/results.jsonl") for line in path.read_text().splitlines()]

    def spawned_child(self) -> psutil.Process | None:
        """The process the spawn technique started, once its pid file exists."""
        for path in self.out.glob("*/spawned.pid"):
            text = path.read_text()
            try:
                return psutil.Process(int(text)) if text else None
            except psutil.NoSuchProcess:
                return None
        return None

    def stop(self) -> None:
        """Kill the runner and everything it was seen to start."""
        kill_all(self.seen)
        self.process.wait(30)
        self.log.close()


@pytest.mark.slow
def test_a_timed_out_cell_takes_its_new_session_child_along(tmp_path):
    """A child started in a new session is gone within 5 s of its cell's timeout record."""
    runner = Runner(tmp_path, "spawn", timeout=2)
    child = None
    try:
        child = runner.wait_for(runner.spawned_child)
        (record,) = runner.wait_for(runner.records)
        assert record["status"] == "timeout"
        assert survivors([child]) == [], "the new-session child outlived its timed-out cell"
    finally:
        runner.stop()
        kill_all([child] if child else [])


@pytest.mark.slow
def test_a_timed_out_ddp_cell_takes_its_ranks_along(tmp_path):
    """No DDP rank of a timed-out cell is alive 5 s after its timeout record."""
    runner = Runner(tmp_path, "ddp", timeout=6, epochs=100000, config="ddp = { world_size = 2, compare_single_process = false }")
    marker = f"benchharness.plugins.ddp {runner.out}"
    ranks: set[psutil.Process] = set()
    try:

        def timeout_record():
            ranks.update(running_with(marker))
            return runner.records()

        (record,) = runner.wait_for(timeout_record)
        assert record["status"] == "timeout", record.get("traceback")
        assert len(ranks) == 2, "the cell timed out before its ranks started"
        assert survivors(ranks) == [], "DDP ranks outlived their timed-out cell"
    finally:
        runner.stop()
        kill_all(ranks)


@pytest.mark.slow
def test_kill_9_of_the_runner_takes_forkserver_worker_and_children_along(tmp_path):
    """After kill -9 of the runner mid-cell, its forkserver, the worker and the cell's new-session child are gone within 5 s."""
    runner = Runner(tmp_path, "spawn", timeout=600)
    child = None
    try:
        child = runner.wait_for(runner.spawned_child)
        runner.watch()
        started = runner.seen - {psutil.Process(runner.process.pid)}
        assert child in started and len(started) >= 3, f"expected a forkserver, a worker and the child: {started}"
        os.kill(runner.process.pid, signal.SIGKILL)
        runner.process.wait(10)
        assert survivors(started) == [], "processes outlived the killed runner"
    finally:
        runner.stop()
        kill_all([child] if child else [])
