"""Runs a suite's cells, each in its own worker process, and records every outcome.

Workers are forked from a forkserver that has preloaded torch and the harness
(:mod:`benchharness.worker`), so isolation costs a fork, not a fresh
interpreter: a crash, a hang, a CUDA error or a leak ends with its worker.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from benchharness.api import Cell
from benchharness.host import PluginHost
from benchharness.store import RunDir, now_iso
from benchharness.suite import Suite

PRELOAD = ["benchharness.worker"]
LOG_TAIL_LINES = 40
_context: Any = None


def worker_context() -> Any:
    """The forkserver context whose server preloads torch and the harness (started once per process)."""
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def launch_workers() -> None:
    """Start the forkserver in the background: it imports torch and the plugins while the caller goes on."""
    from multiprocessing import forkserver

    worker_context()
    forkserver.ensure_running()


def start_workers() -> None:
    """Start the forkserver (if needed) and wait until it has imported everything, so no cell is charged for that."""
    from benchharness.worker import ready

    process = worker_context().Process(target=ready, name="warm-up")
    process.start()
    process.join()


def log_tail(path: Any, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a worker's log."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _receive(receiver: Any) -> dict[str, Any] | None:
    """The worker's result if it sent one before its end of the pipe closed, else None."""
    try:
        return receiver.recv() if receiver.poll(0) else None
    except (EOFError, OSError):
        return None


def _kill_process_group(pid: int | None) -> None:
    """Kill whatever the worker left behind (e.g. DDP processes): workers lead their own process group."""
    if pid is None:
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_name(exitcode: int) -> str:
    try:
        return signal.Signals(-exitcode).name
    except ValueError:
        return f"signal {-exitcode}"


@dataclass
class RunSummary:
    """How a run ended: counts by status and whether it was interrupted."""

    run_dir: RunDir
    counts: Counter = field(default_factory=Counter)
    interrupted: bool = False

    @property
    def any_failed(self) -> bool:
        """Whether any cell failed or timed out."""
        return bool(self.counts["failed"] or self.counts["timeout"])


class Runner:
    """Runs cells in isolated workers, appending one record per cell the moment it ends."""

    def __init__(self, suite: Suite, host: PluginHost, run_dir: RunDir, console: Console | None = None, cache_dir: Path | None = None):
        self.suite = suite
        self.host = host
        self.run_dir = run_dir
        self.cache_dir = cache_dir
        self.console = console or Console(stderr=True)
        self._interrupts = 0
        self._device_reasons: dict[str, str] = {}

    def _skip_reason(self, cell: Cell) -> str | None:
        if cell.device not in self._device_reasons:
            self._device_reasons[cell.device] = self.host.probes[cell.device].unavailable_reason() or ""
        return self.host.skip_reason(cell, self._device_reasons[cell.device])

    def run_cell(self, cell: Cell) -> dict[str, Any] | None:
        """Run one cell and return its record, or None when a second Ctrl-C abandoned it."""
        started_at, started = now_iso(), time.perf_counter()
        reason = self._skip_reason(cell)
        if reason:
            result: dict[str, Any] = {"status": "skipped", "error_type": "unsupported", "error_message": reason}
        else:
            result = self._run_in_worker(cell)
            if result is None:
                return None
        record = {"cell": cell.as_dict(), "status": result.pop("status"), "error_type": None, "error_message": None}
        record.update(result)
        record.update(started_at=started_at, wall_s=time.perf_counter() - started)
        if "worker_wall_s" in record:
            record["worker_overhead_s"] = record["wall_s"] - record["worker_wall_s"]
        return record

    def _run_in_worker(self, cell: Cell) -> dict[str, Any] | None:
        from benchharness.worker import CellTask, run_in_worker

        context = worker_context()
        log_path = self.run_dir.log_path(cell.id)
        receiver, sender = context.Pipe(duplex=False)
        task = CellTask(cell, self.suite, self.host.options, self.run_dir.path, self.cache_dir)
        process = context.Process(target=run_in_worker, args=(task, sender, str(log_path)), name=f"cell {cell.id}")
        timeout = self.suite.spec.run.cell_timeout_s
        deadline = time.monotonic() + timeout
        process.start()
        sender.close()
        try:
            return self._wait(process, receiver, log_path, timeout, deadline)
        except KeyboardInterrupt:
            process.kill()
            process.join()
            return None
        finally:
            _kill_process_group(process.pid)
            receiver.close()

    def _wait(self, process: Any, receiver: Any, log_path: Path, timeout: float, deadline: float) -> dict[str, Any]:
        """Wait for the worker's result, its death, or the deadline."""
        while True:
            if receiver.poll(0.1) or not process.is_alive():
                result = _receive(receiver)
                process.join(10)
                if process.is_alive():
                    process.kill()
                    process.join()
                if result is not None:
                    return result
                code = process.exitcode
                how = f"killed by {_signal_name(code)}" if code is not None and code < 0 else f"exited with code {code}"
                return {"status": "failed", "error_type": "crash", "error_message": f"worker {how} before reporting", "traceback": log_tail(log_path)}
            if time.monotonic() > deadline:
                process.kill()
                process.join()
                return {
                    "status": "timeout",
                    "error_type": "timeout",
                    "error_message": f"cell exceeded run.cell_timeout_s = {timeout:g} s and its worker was killed",
                    "traceback": log_tail(log_path),
                }

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self._interrupts += 1
        if self._interrupts >= 2:
            raise KeyboardInterrupt
        self.console.print("[yellow]Ctrl-C: stopping after the current cell (press Ctrl-C again to stop now)[/]")

    def run(self, cells: list[Cell]) -> RunSummary:
        """Run ``cells`` in order; every finished cell is appended to ``results.jsonl`` at once."""
        summary = RunSummary(self.run_dir)
        previous_handler = signal.signal(signal.SIGINT, self._on_sigint)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
        try:
            with Progress(*columns, console=self.console, transient=False) as progress:
                bar = progress.add_task("starting workers (importing torch once)", total=len(cells))
                if cells:
                    start_workers()
                for cell in cells:
                    if self._interrupts:
                        summary.interrupted = True
                        break
                    progress.update(bar, description=f"[bold]{cell.id}[/]")
                    self.host.hooks.before_cell(cell=cell, context={"suite": self.suite, "run_dir": self.run_dir.path})
                    record = self.run_cell(cell)
                    if record is None:
                        summary.interrupted = True
                        break
                    self.run_dir.append(record)
                    self.host.hooks.after_cell(cell=cell, record=record)
                    summary.counts[record["status"]] += 1
                    progress.console.print(describe_record(record))
                    progress.advance(bar)
                progress.update(bar, description="done" if not summary.interrupted else "interrupted")
        finally:
            signal.signal(signal.SIGINT, previous_handler)
        return summary


def describe_record(record: dict[str, Any]) -> str:
    """One line on how a cell ended, for the console."""
    cell_id = record["cell"]["id"]
    status = record["status"]
    if status != "ok":
        colour = "yellow" if status == "skipped" else "red"
        return f"[{colour}]{status:>7}[/] {cell_id}: {record.get('error_message')}"
    metrics = record["metrics"]
    first = record["latency"][0]
    return (
        f"[green]{'ok':>7}[/] {cell_id}: top-1 {metrics['accuracy_top1']:.3f}, "
        f"p50 {first['latency_p50_ms']:.3f} ms at batch {first['batch_size']}, "
        f"{metrics['size_bytes'] / 1e6:.2f} MB, trained {metrics['train_s']:.1f} s"
    )
