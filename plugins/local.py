"""The ``local`` executor: each task in a fresh process forked from this machine's forkserver.

A crash, a hang, a CUDA error or a leak ends with its worker; a worker past its deadline is
killed with every process it started. Groups run one at a time, so measurements on this
machine never overlap.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

from benchharness import hookimpl
from benchharness.executor import Executor, TaskSpec, failure
from benchharness.forkserver import launch_workers, start_workers, worker_context
from benchharness.processes import DescendantTracker

LOG_TAIL_LINES = 40


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a worker's log."""
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _receive(receiver: Any) -> dict[str, Any] | None:
    """The worker's result if it sent one before its end of the pipe closed, else None."""
    try:
        return receiver.recv() if receiver.poll(0) else None
    except (EOFError, OSError):
        return None


def _signal_name(exitcode: int) -> str:
    try:
        return signal.Signals(-exitcode).name
    except ValueError:
        return f"signal {-exitcode}"


_here_lock = threading.Lock()
_here_started = False


def run_here(spec: TaskSpec, forkserver_log: Path) -> dict[str, Any]:
    """Run ``spec`` on this machine as the local executor does: the remote half of executors such as ray and slurm.

    Starts this process's forkserver the first time (its output to ``forkserver_log``) and waits
    until it has imported torch, so no task is charged for that.
    """
    global _here_started
    with _here_lock:
        if not _here_started:
            launch_workers(Path(forkserver_log))
            start_workers()
            _here_started = True
    return LocalExecutor().run(spec) or failure("crash", "the local executor returned no result")


class LocalExecutor(Executor):
    """Fresh forked workers on this machine, one group at a time."""

    NAME = "local"
    DESCRIPTION = "each task in a fresh worker forked from this machine's forkserver (the default)"

    def __init__(self) -> None:
        self._cancelled = threading.Event()

    def start(self, config: Any, run_dir: Path) -> None:
        """Start the forkserver, logging to ``logs/forkserver.log``, and wait until it has imported torch."""
        self._cancelled.clear()
        launch_workers(Path(run_dir) / "logs" / "forkserver.log")
        start_workers()

    def run(self, spec: TaskSpec) -> dict[str, Any] | None:
        """Run the task in a fresh worker; its result, a crash or timeout result, or None when cancelled."""
        from benchharness.tasks import run_in_worker

        if self._cancelled.is_set():
            return None
        context = worker_context()
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(target=run_in_worker, args=(spec.task, sender, str(spec.log_path)), name=spec.name)
        deadline = time.monotonic() + spec.timeout_s
        process.start()
        sender.close()
        tracker = DescendantTracker(process.pid)
        try:
            return self._wait(process, receiver, spec, deadline, tracker)
        finally:
            tracker.kill_all()
            process.join()
            receiver.close()

    def _wait(self, process: Any, receiver: Any, spec: TaskSpec, deadline: float, tracker: DescendantTracker) -> dict[str, Any] | None:
        """Wait for the worker's result, its death, the deadline or a cancel, remembering every process it starts meanwhile."""
        while True:
            tracker.poll()
            if self._cancelled.is_set():
                return None
            if receiver.poll(0.1) or not process.is_alive():
                result = _receive(receiver)
                process.join(10)
                if result is not None:
                    return result
                code = process.exitcode
                how = f"killed by {_signal_name(code)}" if code is not None and code < 0 else f"exited with code {code}"
                return failure("crash", f"worker {how} before reporting", log_tail(spec.log_path))
            if time.monotonic() > deadline:
                message = f"cell exceeded run.cell_timeout_s = {spec.timeout_s:g} s and its worker was killed"
                return failure("timeout", message, log_tail(spec.log_path), status="timeout")

    def cancel_all(self) -> None:
        """Make every running and later :meth:`run` return None (their workers are killed)."""
        self._cancelled.set()


@hookimpl
def register_executors(register):
    """Register the local executor."""
    register(LocalExecutor)
