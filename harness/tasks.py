"""What the runner sends to a worker process, and the worker's entry point; imports no torch.

The runner builds these tasks and pickles them to workers forked from the
preloaded server (:mod:`benchharness.worker`), where torch and the plugins are
already imported. Keeping them here, away from torch, lets the runner's own
process start in a fraction of a second while the server imports torch.
"""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchharness.api import Cell
from benchharness.host import PluginOptions
from benchharness.suite import MeasureSettings, Suite


@dataclass
class CellTask:
    """Everything a worker needs to build one cell (train, transform, measure all but latency); pickled to the worker.

    The final model is saved to ``artifact`` for the measuring workers that time it in rounds.
    """

    cell: Cell
    suite: Suite
    plugins: PluginOptions
    workdir: Path
    cache_dir: Path | None = None
    artifact: Path | None = None

    def run(self) -> dict[str, Any]:
        """Build the cell and return the measured part of its record."""
        from benchharness.worker import CellRun

        return CellRun(self).execute()


@dataclass
class TimingTask:
    """One round of a group: every slot's saved model timed at every batch size, in turns, in one fresh worker.

    ``slots`` pairs a slot name (a cell id, or the A/A control) with the saved model it times;
    the same file may appear twice (the A/A control restores the reference a second time).
    """

    slots: list[tuple[str, Path]]
    device: str
    settings: MeasureSettings
    plugins: PluginOptions

    def run(self) -> dict[str, Any]:
        """Apply the controlled conditions, restore the models and time them."""
        from benchharness.worker import time_round

        return time_round(self)


@dataclass
class DescribeTask:
    """What ``run.json`` records about the environment and the probes, and why each device is unavailable.

    Run in a worker because describing torch and the probes needs torch, which the runner's
    own process never imports.
    """

    suite: Suite
    plugins: PluginOptions

    def run(self) -> dict[str, Any]:
        """``run.json``'s contents and every probe's unavailability reason ('' when available)."""
        from benchharness.describe import describe_probes_and_devices, run_info
        from benchharness.host import PluginHost

        host = PluginHost(self.plugins)
        probes, reasons = describe_probes_and_devices(host)
        described = {"info": run_info(self.suite, host, probes), "device_reasons": reasons}
        # plain JSON types only (torch.__version__ is a torch class): unpickling must not import torch in the runner
        return {"status": "ok", **json.loads(json.dumps(described, default=str))}


def ready() -> None:
    """A no-op worker: returns once the forkserver can fork workers with everything imported."""


def run_in_worker(task: Any, connection: Any, log_path: str) -> None:
    """Entry point of a worker process: run the task, send its result, exit.

    No process the task starts outlives it: the worker adopts orphaned descendants, kills
    them all before it reports, and kills them and exits when the runner dies.
    """
    from benchharness import processes

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.setpgrp()
    processes.watch_parent()
    processes.close_inherited_alive_fd()
    processes.become_subreaper()
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    faulthandler.enable()
    started = time.perf_counter()
    try:
        result = task.run()
    except BaseException as error:  # every failure becomes a record, never a lost cell
        from benchharness.worker import failure_record

        traceback.print_exc()
        result = failure_record(error)
    finally:
        processes.kill_descendants()
    result["worker_wall_s"] = time.perf_counter() - started
    sys.stdout.flush()
    sys.stderr.flush()
    connection.send(result)
    connection.close()
