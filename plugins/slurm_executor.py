"""The ``slurm`` executor: each task is a Slurm job, submitted and watched with submitit.

In its job a task runs exactly as the ``local`` executor runs it: the job starts a forkserver
(which imports torch once) and runs the task in a fresh process forked from it, with the
same deadline (``run.cell_timeout_s``), crash detection and killing of everything the task
started. So a task that raises, crashes or hangs ends with a result, and a job that ends
without one was lost (killed, its node failed, preempted past submitit's requeue): it is
submitted again up to ``retries`` times, then the cell is recorded as failed with error
type ``node_lost``. A job stopped at its Slurm time limit (``time_limit_min``; default: the
cell timeout rounded up to minutes plus :data:`TIME_MARGIN_MIN` for the job's start-up and
submitit's warning signal) is recorded as ``timeout``. Results carry ``node`` (the worker's
facts, plus the Slurm node name and job id) and ``attempts``.

One job per task: a job costs a fresh interpreter and the forkserver's import of torch and
the plugins (seconds), small against a cell's build but paid by every timing round too. Time
waiting in the queue does not count against ``run.cell_timeout_s``. Job logs go to
``run_dir/slurm/<job id>`` (the task's own output still goes to ``run_dir/logs``).

Measurements never overlap: by default (``exclusive_timing = true``) a timing job asks for a
whole node (``sbatch --exclusive``), so nothing else, not even another user's job, runs
beside it, and groups time in parallel on different nodes. The cost is a wait for a node
to empty and the node's other GPUs idle during a round; where that is too dear or
``--exclusive`` is not allowed, ``exclusive_timing = false`` gives timing jobs a shared name
and ``--dependency=singleton``: Slurm then runs one of your timing jobs at a time across
the cluster (so never two on one node) on the resources they ask for, while builds and
other users' jobs may share the node (disturbances are caught by ``measure.max_other_cpu``
as on any shared machine). Either way all rounds of a group run on the node of its first
round (``--nodelist``), so a group's latencies compare like with like.

Running on a cluster: submit from a login node with ``sbatch`` and ``srun`` on PATH, with
benchharness (and the plugins the suite uses) installed at the same path on every node
(jobs run this interpreter, ``sys.executable``), and put the run directory (``--out``), the
artifact cache (``--cache-dir``) and any ``--plugin`` files on a filesystem every node sees
at the same path: a build job writes the cell's model under ``run_dir/models`` and a timing
job, maybe on another node, reads it.

``cluster = "local"`` runs the jobs as processes on this machine (submitit's local executor,
for tests and for trying Slurm settings out); then groups run one at a time, as with the
``local`` executor. Those jobs ignore the terminal's Ctrl-C, which is the runner's to handle,
and are cancelled by killing their process trees.
"""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import socket
import threading
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from benchharness import StrictConfig, hookimpl
from benchharness.errors import HarnessError
from benchharness.executor import Executor, TaskSpec, failure

TIME_MARGIN_MIN = 5
POLL_S = 0.25
SINGLETON_NAME = "benchharness-timing"
JOB_MARK = "[benchharness slurm]"
INSTALL_HINT = "submitit is not installed; pip install 'benchharness[slurm]'"
ON_THIS_MACHINE = ("local", "debug")
IGNORE_CTRL_C = "trap '' INT"
LOG_TAIL_CHARS = 4000


class SlurmConfig(StrictConfig):
    """``[run.slurm]``: where jobs go and what each asks of Slurm."""

    cluster: Literal["slurm", "local", "debug"] | None = Field(
        None, description="submitit's cluster: slurm, local (jobs as processes on this machine, for tests) or debug (in this process); default: slurm, found by submitit."
    )
    partition: str | None = Field(None, description="Slurm partition (sbatch --partition); default: the cluster's.")
    gpus_for_cuda: int = Field(1, ge=0, le=64, description="GPUs a job asks for when its task runs on cuda (sbatch --gpus-per-node); other jobs ask for none.")
    cpus_per_task: int = Field(2, ge=1, le=4096, description="CPUs per job (sbatch --cpus-per-task).")
    time_limit_min: int | None = Field(
        None, ge=1, le=525_600, description=f"Slurm time limit of every job in minutes; default: run.cell_timeout_s rounded up, plus {TIME_MARGIN_MIN}."
    )
    parallel_groups: int = Field(4, ge=1, le=4096, description="Groups running at once (on cluster local or debug: 1).")
    retries: int = Field(1, ge=0, le=100, description="Times a job that ended without a result is submitted again.")
    exclusive_timing: bool = Field(True, description="Timing jobs get a whole node (--exclusive); false: one timing job at a time (--dependency=singleton).")
    setup: list[str] = Field(default_factory=list, description="Shell lines the job script runs before the task, e.g. 'module load cuda'.")
    additional_parameters: dict[str, str | int | bool] = Field(
        default_factory=dict, description="More sbatch options, e.g. {account = 'proj', mem = '16G'} (submitit's slurm_additional_parameters)."
    )


def needs_gpu(spec: TaskSpec) -> bool:
    """Whether the task's job needs a GPU: a cuda task, or the description of a suite that lists a cuda device."""
    if spec.device.split(":")[0] == "cuda":
        return True
    suite = getattr(spec.task, "suite", None)
    return spec.kind == "describe" and suite is not None and any(device.split(":")[0] == "cuda" for device in suite.spec.devices)


def time_limit_min(config: SlurmConfig, spec: TaskSpec) -> int:
    """The job's Slurm time limit in minutes: ``time_limit_min``, or the task's timeout rounded up plus the margin."""
    return config.time_limit_min or math.ceil(spec.timeout_s / 60) + TIME_MARGIN_MIN


def job_parameters(config: SlurmConfig, spec: TaskSpec, node: str | None = None) -> dict[str, Any]:
    """submitit's ``update_parameters`` for the job running ``spec``, pinned to ``node`` when given.

    Generic names (``timeout_min``, ``gpus_per_node``, ...) apply on every cluster; ``slurm_``
    ones only in sbatch scripts.
    """
    parameters: dict[str, Any] = {
        "name": f"benchharness:{spec.name}",
        "timeout_min": time_limit_min(config, spec),
        "nodes": 1,
        "tasks_per_node": 1,
        "cpus_per_task": config.cpus_per_task,
    }
    if needs_gpu(spec) and config.gpus_for_cuda:
        parameters["gpus_per_node"] = config.gpus_for_cuda
    if config.partition:
        parameters["slurm_partition"] = config.partition
    if spec.exclusive and config.exclusive_timing:
        parameters["slurm_exclusive"] = True
    elif spec.exclusive:
        parameters.update(name=SINGLETON_NAME, slurm_dependency="singleton")
    if node:
        parameters["slurm_nodelist"] = node
    if config.setup:
        parameters["slurm_setup"] = list(config.setup)
    if config.additional_parameters:
        parameters["slurm_additional_parameters"] = dict(config.additional_parameters)
    return parameters


def run_in_job(spec: TaskSpec) -> dict[str, Any]:
    """Inside the job: run the task as the local executor does, in a worker forked from a forkserver started here.

    The forkserver's own output goes to the task's log; the result's ``node`` gains the Slurm node and job id.
    """
    from benchharness.plugins.local import run_here

    hostname = socket.gethostname()
    print(f"{JOB_MARK} {spec.name} on {hostname}, pid {os.getpid()}", flush=True)
    Path(spec.log_path).parent.mkdir(parents=True, exist_ok=True)
    result = run_here(spec, Path(spec.log_path))
    slurm = {"slurm_node": os.environ.get("SLURMD_NODENAME"), "slurm_job_id": os.environ.get("SLURM_JOB_ID")}
    result["node"] = {"hostname": hostname, **(result.get("node") or {}), **slurm}
    return result


def _first_line(text: str) -> str:
    return next((line for line in str(text).splitlines() if line.strip()), "")


class SlurmExecutor(Executor):
    """One Slurm job per task, submitted with submitit; lost jobs are submitted again."""

    NAME = "slurm"
    DESCRIPTION = "each task in a Slurm job submitted with submitit (cluster = 'local' runs the jobs on this machine)"
    Config = SlurmConfig

    def __init__(self) -> None:
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self._jobs: set[Any] = set()
        self._group_nodes: dict[Path, str] = {}
        self._config: SlurmConfig | None = None
        self._folder: Path | None = None

    def unavailable_reason(self, config: SlurmConfig) -> str | None:
        """Why jobs cannot be submitted from here: submitit missing, or no sbatch/srun for cluster slurm."""
        if importlib.util.find_spec("submitit") is None:
            return INSTALL_HINT
        if config.cluster in ON_THIS_MACHINE:
            return None
        missing = [command for command in ("sbatch", "srun") if shutil.which(command) is None]
        if missing:
            return f"{' and '.join(missing)} not found on PATH: this machine cannot submit Slurm jobs (run.slurm.cluster = \"local\" runs the jobs as local processes)"
        return None

    def start(self, config: SlurmConfig, run_dir: Path) -> None:
        """Remember the options; job folders will be ``run_dir/slurm/<job id>``."""
        self._config = config
        self._folder = Path(run_dir).resolve() / "slurm" / "%j"
        self._cancelled.clear()
        self._group_nodes.clear()

    def parallel_groups(self, config: SlurmConfig) -> int:
        """``parallel_groups`` on a cluster; 1 when the jobs share this machine."""
        return 1 if config.cluster in ON_THIS_MACHINE else config.parallel_groups

    def describe(self, config: SlurmConfig) -> dict[str, Any]:
        """The cluster, the jobs' folder and how timing jobs are kept apart."""
        import submitit

        timing = "exclusive node (--exclusive)" if config.exclusive_timing else "one at a time (--dependency=singleton)"
        return {"cluster": config.cluster or submitit.AutoExecutor.which(), "jobs_folder": "slurm/<job id>", "timing_jobs": timing, "submitit": submitit.__version__}

    def run(self, spec: TaskSpec) -> dict[str, Any] | None:
        """Run the task in a job, again when the job is lost; its result, a failure, or None when cancelled."""
        from submitit.core.utils import FailedJobError, UncompletedJobError

        assert self._config is not None, "start() first"
        config, lost = self._config, []
        for attempt in range(1, config.retries + 2):
            if self._cancelled.is_set():
                return None
            job = self._submit(spec)
            try:
                if not self._wait(job):
                    return None
                result = job.result()
            except FailedJobError as error:
                if "timed-out" in str(error):
                    return self._timeout(spec, job, str(error))
                lost.append((job, "raised", str(error)))
            except UncompletedJobError as error:
                state = job.state
                if state.upper().startswith("TIMEOUT"):
                    return self._timeout(spec, job, str(error))
                lost.append((job, f"ended without a result (state {state})", str(error)))
            else:
                self._remember_node(spec, result)
                return {**result, "attempts": attempt}
            finally:
                with self._lock:
                    self._jobs.discard(job)
            self._group_nodes.pop(spec.group_key, None)
        return self._lost(spec, lost)

    def _submit(self, spec: TaskSpec) -> Any:
        import submitit

        assert self._config is not None and self._folder is not None
        executor = submitit.AutoExecutor(folder=self._folder, cluster=self._config.cluster)
        executor.update_parameters(**job_parameters(self._config, spec, self._group_nodes.get(spec.group_key) if spec.exclusive else None))
        if self._config.cluster == "local":
            executor.update_parameters(local_setup=[IGNORE_CTRL_C])
        try:
            job = executor.submit(run_in_job, spec)
        except Exception as error:
            raise HarnessError(f"could not submit the Slurm job for {spec.name}: {error}") from error
        if self._config.cluster in ON_THIS_MACHINE:
            job._results_timeout_s = 0  # no shared filesystem to wait for: a local job's result is on disk when it ends
        with self._lock:
            self._jobs.add(job)
        return job

    def _wait(self, job: Any) -> bool:
        """Wait for the job to end (True) or for a cancel, which cancels it (False)."""
        while not job.done():
            if self._cancelled.wait(POLL_S):
                self._cancel(job)
                return False
        return True

    def _cancel(self, job: Any) -> None:
        """scancel the job; a local-cluster job ignores SIGINT (submitit's way to cancel it), so its process tree is killed."""
        if self._config is not None and self._config.cluster == "local":
            from benchharness.processes import kill_tree

            kill_tree(int(job.job_id))
        else:
            job.cancel(check=False)

    def _remember_node(self, spec: TaskSpec, result: dict[str, Any]) -> None:
        """Pin the group's later timing rounds to the Slurm node of its first."""
        node = (result.get("node") or {}).get("slurm_node")
        if spec.exclusive and node:
            self._group_nodes.setdefault(spec.group_key, node)

    def _timeout(self, spec: TaskSpec, job: Any, details: str) -> dict[str, Any]:
        assert self._config is not None
        minutes = time_limit_min(self._config, spec)
        message = f"Slurm job {job.job_id} reached its time limit of {minutes} min (run.slurm.time_limit_min) and was stopped"
        return failure("timeout", message, details[-LOG_TAIL_CHARS:], status="timeout")

    def _lost(self, spec: TaskSpec, lost: list[tuple[Any, str, str]]) -> dict[str, Any]:
        assert self._config is not None
        retries = self._config.retries
        _, how, details = lost[-1]
        jobs = ", ".join(str(job.job_id) for job, _, _ in lost)
        error_type = "job_error" if how == "raised" else "node_lost"
        message = f"the Slurm job for {spec.name} {how}, retried {retries} time(s) (run.slurm.retries); jobs {jobs}: {_first_line(details)}"
        return failure(error_type, message, details[-LOG_TAIL_CHARS:])

    def cancel_all(self) -> None:
        """Cancel every job; running and later :meth:`run` calls return None."""
        self._cancelled.set()

    def stop(self) -> None:
        """Cancel any job still tracked."""
        with self._lock:
            jobs, self._jobs = list(self._jobs), set()
        for job in jobs:
            self._cancel(job)


@hookimpl
def register_executors(register):
    """Register the slurm executor."""
    register(SlurmExecutor)
