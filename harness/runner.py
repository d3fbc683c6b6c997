"""Runs a suite's cells through an executor and records every outcome.

The runner owns the run directory, the order of cells, progress, Ctrl-C, resume and the
hooks. Where a task runs (a forked worker here, a Ray task, a Slurm job) is the
executor's business (:mod:`benchharness.executor`); the runner never names one.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from benchharness.api import Cell, rebuild_config
from benchharness.host import PluginHost, describe_error
from benchharness.matrix import Group, expand, group_cells
from benchharness.executor import Executor, TaskSpec
from benchharness.record import CellRecord
from benchharness.conditions import oversubscription_warning
from benchharness.rounds import Contender, GroupResult, GroupRounds, contradiction, describe_point, latency_entry, timing_points
from benchharness.store import RunDir, now_iso
from benchharness.suite import Suite

@dataclass
class RunSummary:
    """How a run ended: counts by status and whether it was interrupted."""

    run_dir: RunDir
    counts: Counter = field(default_factory=Counter)
    interrupted: bool = False
    noisy: dict[str, str] = field(default_factory=dict)

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
        self._lock = threading.Lock()
        self._started = False
        self.executor: Executor = host.executors[suite.spec.run.executor]
        self._executor_config = rebuild_config(self.executor.Config, suite.executor_config)
        self._skip_reasons: Counter = Counter()
        self._device_reasons: dict[str, str] = {}
        self._cells = {cell.id: cell for cell in expand(suite)}
        self._plugin_versions = host.plugin_versions()

    def describe(self) -> dict[str, Any]:
        """``run.json``'s contents, computed in a worker (it needs torch); learns which devices are unavailable.

        Starts the workers first. Should the worker fail, the description is computed here.
        """
        from benchharness.tasks import DescribeTask

        self.start()
        result = self._run(DescribeTask(self.suite, self.host.options), self.run_dir.log_path("describe"), "describe", "describe", "cpu")
        if result is None:
            raise KeyboardInterrupt
        if result.get("status") == "ok":
            self._device_reasons.update(result["device_reasons"])
            return {**result["info"], "executor": self._executor_info()}
        from benchharness.describe import run_info

        return {**run_info(self.suite, self.host), "executor": self._executor_info()}

    def _executor_info(self) -> dict[str, Any]:
        name = self.suite.spec.run.executor
        return {"name": name, "options": self.suite.executor_config, **self.executor.describe(self._executor_config)}

    def start(self) -> None:
        """Start the executor (once)."""
        if not self._started:
            self.executor.start(self._executor_config, self.run_dir.path)
            self._started = True

    def close(self) -> None:
        """Stop the executor, if it was started."""
        if self._started:
            self._started = False
            self.executor.stop()

    def _run(self, task: Any, log_path: Path, name: str, kind: str, device: str, group: str | None = None) -> dict[str, Any] | None:
        """Run ``task`` through the executor; its result, a failure, or None when cancelled.

        A timing round times every thread count of ``measure.threads``, so it gets ``cell_timeout_s`` per count.
        """
        timeout = self.suite.spec.run.cell_timeout_s
        if kind == "timing":
            timeout *= len(self.suite.spec.measure.thread_counts())
        return self.executor.run(TaskSpec(task=task, log_path=log_path, name=name, kind=kind, device=device, timeout_s=timeout, group=group))

    def _skip_reason(self, cell: Cell) -> str | None:
        if cell.device not in self._device_reasons:
            self._device_reasons[cell.device] = self.host.probes[cell.device].unavailable_reason() or ""
        return self.host.skip_reason(cell, self._device_reasons[cell.device])

    def build_cell(self, cell: Cell) -> CellRecord | None:
        """Build one cell through the executor (train, transform, measure all but latency): the start of its record, or None when cancelled."""
        from benchharness.tasks import CellTask

        started_at, started = now_iso(), time.perf_counter()
        try:
            reason = self._skip_reason(cell)
        except Exception as error:  # a plugin's unsupported_reason or unavailable_reason that raises costs this cell only
            message = f"deciding whether the cell can run raised {describe_error(error)}"
            result: dict[str, Any] = {"status": "failed", "error_type": "exception", "error_message": message}
            return CellRecord.from_build(cell.as_dict(), result, self._plugin_versions, started_at, time.perf_counter() - started)
        if reason:
            result = {"status": "skipped", "error_type": "unsupported", "error_message": reason}
        else:
            task = CellTask(cell, self.suite, self.host.options, self.run_dir.path, self.cache_dir, self.run_dir.artifact_path(cell.id))
            result = self._run(task, self.run_dir.log_path(cell.id), f"cell {cell.id}", "build", cell.device)
            if result is None:
                return None
        return CellRecord.from_build(cell.as_dict(), result, self._plugin_versions, started_at, time.perf_counter() - started)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self._interrupts += 1
        if self._interrupts >= 2:
            raise KeyboardInterrupt
        self.console.print("[yellow]Ctrl-C: stopping after the current cell (press Ctrl-C again to stop now)[/]")

    def time_round_in_worker(self, slots: list[tuple[str, Contender]], device: str, log_name: str) -> dict[str, Any]:
        """Time the slots' saved models in turns, once, in a fresh worker (raises KeyboardInterrupt after a second Ctrl-C)."""
        from benchharness.tasks import TimingTask

        task = TimingTask([(slot, Path(contender.artifact)) for slot, contender in slots], device, self.suite.spec.measure, self.host.options)
        result = self._run(task, self.run_dir.log_path(log_name), f"timing {log_name}", "timing", device, group=log_name)
        if result is None:
            raise KeyboardInterrupt
        return result

    def run(self, cells: list[Cell]) -> RunSummary:
        """Run ``cells`` group by group; every finished cell is appended to ``results.jsonl`` once its group is timed."""
        summary = RunSummary(self.run_dir)
        previous_handler = signal.signal(signal.SIGINT, self._on_sigint)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
        try:
            with Progress(*columns, console=self.console, transient=False) as progress:
                self._progress = progress
                self._bar = progress.add_task("starting workers (importing torch once)", total=len(cells))
                groups = group_cells(cells, self.suite)
                settings = self.suite.spec.measure
                crowded = oversubscription_warning(settings.thread_counts(), settings.cpus) if groups else None
                if crowded:
                    progress.console.print(f"[yellow]warning:[/] {crowded}", highlight=False)
                if groups:
                    self.start()
                summary.interrupted = not self._run_groups(groups, summary)
                progress.update(self._bar, description="done" if not summary.interrupted else "interrupted")
                for reason, count in self._skip_reasons.items():
                    if count > 1:
                        progress.console.print(f"[yellow]skipped[/] {count - 1} more cell(s) for the same reason: {reason}", highlight=False)
        finally:
            signal.signal(signal.SIGINT, previous_handler)
        return summary

    def _run_groups(self, groups: list[Group], summary: RunSummary) -> bool:
        """Run the groups, as many at once as the executor allows; False when interrupted.

        The main thread waits, so that Ctrl-C reaches it: the second one cancels every running task.
        """
        parallel = max(1, self.executor.parallel_groups(self._executor_config))
        with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="group") as pool:
            futures = [pool.submit(self.run_group, group, summary) for group in groups]
            try:
                while True:
                    done, pending = wait(futures, timeout=0.2, return_when=FIRST_EXCEPTION)
                    failed = [future for future in done if future.exception() is not None]
                    if failed or not pending:
                        break
            except KeyboardInterrupt:
                failed = []
            if failed or any(not future.done() for future in futures):
                self._interrupts = max(self._interrupts, 2)
                self.executor.cancel_all()
        for future in futures:
            if future.exception() is not None:
                raise future.exception()
        return all(future.result() for future in futures)

    def run_group(self, group: Group, summary: RunSummary) -> bool:
        """Build every cell of ``group``, time them in interleaved rounds, record them; False when interrupted before the end."""
        built: list[CellRecord] = []
        complete = True
        try:
            for cell in group.cells:
                if self._interrupts:
                    complete = False
                    break
                recorded = cell.id in group.to_record
                self._progress.update(self._bar, description=f"[bold]{cell.id}[/]: building")
                if recorded:
                    self.host.hooks.before_cell(cell=cell, context={"suite": self.suite, "run_dir": self.run_dir.path})
                record = self.build_cell(cell)
                if record is None:
                    return False
                if record.status == "ok":
                    built.append(record)
                elif recorded:
                    self._finish(record, summary)
            if built:
                for record in self.time_group(group, built):
                    if record.cell_id in group.to_record:
                        self._finish(record, summary)
        except KeyboardInterrupt:
            return False
        finally:
            for record in built:
                self.run_dir.artifact_path(record.cell_id).unlink(missing_ok=True)
        return complete

    def time_group(self, group: Group, built: list[CellRecord]) -> list[CellRecord]:
        """Time the built cells of ``group`` in interleaved rounds and complete their records."""
        settings = self.suite.spec.measure
        contenders = [Contender(record.cell_id, record.artifact) for record in built if record.artifact]
        timed_on: set[str] = set()

        def show(rounds: int, widest: float) -> None:
            width = f"widest CI ±{widest:.1%}" if widest != float("inf") else "CIs need 2 rounds"
            self._progress.update(self._bar, description=f"[bold]{group.label}[/]: timing round {rounds}/{settings.max_rounds}, {width}")

        def time_round(slots: list[tuple[str, Contender]]) -> dict[str, Any]:
            result = self.time_round_in_worker(slots, group.device, f"{group.label}/rounds")
            timed_on.add((result.get("node") or {}).get("hostname") or "unknown")
            return result

        rounds = GroupRounds(contenders, group.reference, settings, time_round)
        result = rounds.run(stop_requested=lambda: self._interrupts > 0, on_round=show)
        records = [complete_record(record, result, settings) for record in built]
        for record in records:
            record.node = {**(record.node or {}), "timed_on": sorted(timed_on)}
        return records

    def _finish(self, record: CellRecord, summary: RunSummary) -> None:
        """Append ``record``, tell the plugins, count it and print it (one group at a time)."""
        with self._lock:
            self._record(record.to_json(), summary)

    def _record(self, record: dict[str, Any], summary: RunSummary) -> None:
        self.run_dir.append(record)
        self.host.hooks.after_cell(cell=self._cells[record["cell"]["id"]], record=record)
        summary.counts[record["status"]] += 1
        if record.get("noisy"):
            summary.noisy[record["cell"]["id"]] = record.get("noise_reason") or "noisy"
        if record["status"] == "skipped":
            self._skip_reasons[record.get("error_message")] += 1
        if record["status"] != "skipped" or self._skip_reasons[record.get("error_message")] == 1:
            self._progress.console.print(describe_record(record), highlight=False)
        self._progress.advance(self._bar)


def complete_record(record: CellRecord, result: GroupResult, settings: Any) -> CellRecord:
    """Add the rounds' latency, speedups, noise flags and contradictions to a built cell's record."""
    if record.in_process_rounds is not None:
        rounds = record.in_process_rounds
        record.latency = [latency_entry([timing[index] for timing in rounds], size, threads) for index, (threads, size) in enumerate(timing_points(settings))]
        record.noisy = True
        record.noise_reason = f"{record.timed_in_build_process}; it was timed in its build process, not interleaved with its reference"
        return record
    outcome = result.outcomes[record.cell_id]
    if outcome.failure is not None:
        failure = outcome.failure
        record.fail(failure.get("status", "failed"), failure.get("error_type"), f"timing failed: {failure.get('error_message')}", failure.get("traceback"))
        return record
    record.latency = outcome.latency
    record.measurement = result.summary()
    reference = result.outcomes.get(result.reference) if result.reference else None
    aa_widths = [_aa_half_width(entry) for entry in reference.latency] if reference and reference.failure is None else []
    bound = (record.metrics or {}).get("speedup_bound")
    found = []
    several = len({entry.get("threads") for entry in outcome.latency}) > 1
    for index, entry in enumerate(outcome.latency):
        where = describe_point(entry.get("threads"), entry["batch_size"], several)
        reason = contradiction(entry, bound, aa_widths[index] if index < len(aa_widths) else float("inf"), where)
        entry["speedup_contradiction"] = reason
        if reason:
            found.append(reason)
    record.speedup_contradiction = "; ".join(found) or None
    record.noisy = outcome.noisy
    record.noise_reason = "; ".join(outcome.noise_reasons) or None
    return record


def _aa_half_width(entry: dict[str, Any]) -> float:
    low, high, estimate = entry.get("aa_speedup_ci95_low"), entry.get("aa_speedup_ci95_high"), entry.get("aa_speedup")
    if low is None or high is None or not estimate:
        return float("inf")
    return (high - low) / 2.0 / estimate


def describe_record(record: dict[str, Any]) -> str:
    """One line on how a cell ended, for the console."""
    cell_id = record["cell"]["id"]
    status = record["status"]
    if status != "ok":
        colour = "yellow" if status == "skipped" else "red"
        return f"[{colour}]{status:>7}[/] {cell_id}: {record.get('error_message')}"
    metrics = record["metrics"]
    last = record["latency"][-1]
    speedup = ""
    if last.get("speedup_p50") is not None:
        speedup = f" = {last['speedup_p50']:.3g}x ({last['speedup_ci95_low']:.3g}-{last['speedup_ci95_high']:.3g})"
    elif last.get("aa_speedup") is not None:
        speedup = f", A/A {last['aa_speedup']:.3g}x ({last['aa_speedup_ci95_low']:.3g}-{last['aa_speedup_ci95_high']:.3g})"
    several = len({entry.get("threads") for entry in record["latency"]}) > 1
    line = (
        f"[green]{'ok':>7}[/] {cell_id}: top-1 {metrics['accuracy_top1']:.3f}, "
        f"p50 {last['latency_p50_ms']:.3g} ms at {describe_point(last.get('threads'), last['batch_size'], several)}{speedup}, "
        f"{metrics['size_bytes'] / 1e6:.3g} MB, trained {metrics['train_s']:.1f} s"
    )
    if record.get("noisy"):
        line += f"\n        [yellow]noisy:[/] {record.get('noise_reason')}"
    if record.get("speedup_contradiction"):
        line += f"\n        [yellow]contradiction:[/] {record['speedup_contradiction']}"
    return line
