"""Executors: where the runner's tasks run (this machine's forkserver, a Ray cluster, Slurm jobs).

The runner owns the run directory, the order of cells, progress, resume, the lock and
the hooks; it hands each unit of work to an executor as a :class:`TaskSpec` and gets its
result back as a dict. An executor is a plugin, registered with ``register_executors``
and chosen with ``run.executor`` in the suite or ``--executor`` on the command line. Its
options live under ``[run.<executor name>]`` and are validated by its ``Config``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from benchharness.api import NoConfig, StrictConfig

KINDS = ("describe", "build", "timing")


@dataclass(frozen=True)
class TaskSpec:
    """One unit of work for an executor.

    ``task`` is picklable and has ``run() -> dict``; the executor runs it in a fresh process
    whose output goes to ``log_path`` (:func:`benchharness.tasks.run_in_worker` does that).
    ``kind`` is ``describe``, ``build`` (train and transform one cell) or ``timing`` (one
    interleaved round of a group). A timing task is ``exclusive``: it must never run at the
    same time as another exclusive task on the same machine, so measurements do not disturb
    each other. ``device`` is the device the task needs (e.g. ``cuda`` asks for a GPU).
    ``group`` names the (model, device) group a timing task belongs to: all rounds of a group
    should run on one machine, so its speedups compare like with like.
    """

    task: Any
    """The work: a picklable object whose ``run()`` returns the result dict."""
    log_path: Path
    """Where the process that runs the task writes its output (stdout and stderr)."""
    name: str
    """A readable name for progress and logs, e.g. ``cell mlp/baseline/cpu/r0``."""
    kind: str
    """``describe``, ``build`` or ``timing``."""
    device: str
    """The device the task needs (``cpu``, ``cuda``), to ask a scheduler for."""
    timeout_s: float
    """Seconds the task may run (``run.cell_timeout_s``); past them it is killed and its result is a ``timeout``."""
    group: str | None = None
    """The (model, device) group a timing task belongs to, whose rounds should all run on one machine; None for other tasks."""

    @property
    def group_key(self) -> str:
        """What identifies the task's group (its log path when no group is named)."""
        return self.group or str(self.log_path)

    @property
    def exclusive(self) -> bool:
        """Whether the task measures, and so must have its machine to itself among measurements."""
        return self.kind == "timing"


def failure(error_type: str, message: str, traceback: str = "", status: str = "failed") -> dict[str, Any]:
    """A task result for a task that did not report: a crash, a timeout, a lost node."""
    return {"status": status, "error_type": error_type, "error_message": message, "traceback": traceback}


class Executor:
    """Runs the runner's tasks. Subclass it, set ``NAME``, and register it with ``register_executors``.

    The runner calls :meth:`start` once, then :meth:`run` for every task, possibly from
    several threads at once (up to :meth:`parallel_groups` groups run concurrently), then
    :meth:`stop`. On a second Ctrl-C it calls :meth:`cancel_all` from the main thread.
    """

    NAME: ClassVar[str]
    """The name suites use in ``[run] executor`` and ``--executor``; its options go under ``[run.<NAME>]``."""
    DESCRIPTION: ClassVar[str] = ""
    """One line shown by ``benchharness list executors``."""
    Config: ClassVar[type[StrictConfig]] = NoConfig
    """The pydantic model of the ``[run.<NAME>]`` options (a :class:`StrictConfig`); validated when the suite is loaded."""

    def unavailable_reason(self, config: Any) -> str | None:
        """Why this executor cannot be used here (e.g. its library is missing, with the install command), or None."""
        return None

    def start(self, config: Any, run_dir: Path) -> None:
        """Prepare to run tasks of the run in ``run_dir`` (start workers, connect to a cluster)."""

    def parallel_groups(self, config: Any) -> int:
        """How many (model, device) groups the runner may run at once."""
        return 1

    def run(self, spec: TaskSpec) -> dict[str, Any] | None:
        """Run one task and return its result (a dict with at least ``status``), or None when cancelled.

        Never raises for the task's own failure: a crash, a timeout or a lost node is a result
        made with :func:`failure`. Must be safe to call from several threads.
        """
        raise NotImplementedError

    def cancel_all(self) -> None:
        """Stop every task running now; their :meth:`run` calls return None."""

    def stop(self) -> None:
        """Release what :meth:`start` took; called once, also after errors."""

    def describe(self, config: Any) -> dict[str, Any]:
        """Facts about where tasks run (addresses, node counts), recorded in ``run.json``."""
        return {}
