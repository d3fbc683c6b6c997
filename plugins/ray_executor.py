"""The ``ray`` executor: each task runs on a node of a Ray cluster, or of a Ray instance started here.

On its node a task runs exactly as the ``local`` executor runs it: in a fresh process forked
from a forkserver that imports torch once (one forkserver per Ray worker process), with the
same deadline, crash detection and killing of everything the task started. So a task that
crashes, hangs or leaks still ends with its own process, never with the Ray worker.

Measurements never overlap: every node offers the custom resource ``benchharness_measure``
(1 unit) and every timing task asks for the whole unit, so Ray runs at most one timing task
per node at a time, on any number of nodes. All timing rounds of a group run on the node
that ran its first round, so its latencies and speedups compare like with like. Builds ask
for CPUs only (``cpus_per_task``) and may share a node, with each other and with timing.

A Ray task whose worker process or node dies is run again by Ray (``max_retries``) up to
``retries`` times; after that the cell is recorded as failed with error type ``node_lost``.
A task's own failure (an exception, a crash of its forked process, a timeout) is its result
and is never retried. Results carry ``node`` (the hostname and Ray node id that ran the task)
and ``attempts`` (how many times it ran on a node). Ray sets ``OMP_NUM_THREADS`` from
``cpus_per_task``, so a task's torch uses that many threads (at least one).

Running on a cluster (``[run.ray] address = "HOST:6379"``, ``--set run.ray.address=...`` or
``RAY_ADDRESS``):

* start every node with the measurement resource, e.g.
  ``ray start --address=HEAD:6379 --resources='{"benchharness_measure": 1}'``;
* install benchharness (and the plugins the suite uses) on every node, in the same Python
  version as the driver;
* put the run directory (``--out``), the artifact cache (``--cache-dir``) and any
  ``--plugin`` files on a filesystem every node sees at the same path: a build writes the
  cell's model under ``run_dir/models`` and a timing task, maybe on another node, reads it.

Without an address, a local Ray instance is started for the run (with ``num_cpus`` CPUs and
the measurement resource) and shut down at its end; its session files and logs go to
``temp_dir`` (Ray's default is /tmp/ray).
"""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from pydantic import Field, model_validator

from benchharness import StrictConfig, hookimpl
from benchharness.errors import HarnessError
from benchharness.executor import Executor, TaskSpec, failure

MEASURE_RESOURCE = "benchharness_measure"
LOCAL = "local"
POLL_S = 0.2
ATTEMPT_MARK = "[benchharness ray] attempt on"
INSTALL_HINT = "ray is not installed; pip install 'benchharness[ray]'"


class RayConfig(StrictConfig):
    """``[run.ray]``: which Ray cluster to use and what each task asks of it."""

    address: str | None = Field(None, description="Ray cluster address (HOST:PORT or ray://HOST:PORT); unset: $RAY_ADDRESS if set, else a local Ray instance started for the run ('local' forces that).")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of the local Ray instance (default: all of this machine's); only for a local instance.")
    temp_dir: str | None = Field(None, min_length=1, description="Where the local Ray instance keeps its session files and logs (default: Ray's, /tmp/ray); only for a local instance.")
    parallel_groups: int | None = Field(None, ge=1, description="How many (model, device) groups run at once; unset: 1 on a Ray instance started here (one machine: builds beside timing rounds would make them noisy), 2 on a cluster.")
    cpus_per_task: float = Field(1.0, gt=0, description="CPUs each task asks Ray for.")
    retries: int = Field(1, ge=0, le=100, description="How many times a task whose Ray worker or node died is run again before its cell fails as node_lost.")
    measure_resource: str = Field(MEASURE_RESOURCE, min_length=1, description="Custom Ray resource each node offers 1 of; a timing task takes it all, so timings never overlap on a node.")

    @model_validator(mode="after")
    def _local_only_options(self) -> "RayConfig":
        if self.address not in (None, LOCAL):
            given = [name for name in ("num_cpus", "temp_dir") if getattr(self, name) is not None]
            if given:
                raise ValueError(f"{' and '.join(given)} only apply to a local Ray instance; a cluster's nodes set theirs with `ray start`")
        return self


@contextmanager
def _ray_script_hidden() -> Iterator[None]:
    """Hide this Ray worker's main script from multiprocessing while the block runs.

    Otherwise every process forked for a task would run Ray's worker script again as its
    ``__mp_main__``, importing Ray (about half a second a task) for nothing.
    """
    main = sys.modules["__main__"]
    path = main.__dict__.pop("__file__", None)
    try:
        yield
    finally:
        if path is not None:
            main.__file__ = path


def run_on_node(spec: TaskSpec, logs_dir: str) -> dict[str, Any]:
    """The Ray task: run ``spec`` as the local executor would, on this node; its result with the node that ran it."""
    import ray

    from benchharness.plugins.local import run_here

    node = {"hostname": socket.gethostname(), "ray_node_id": ray.get_runtime_context().get_node_id()}
    if not Path(logs_dir).is_dir():
        message = f"the run directory's logs ({logs_dir}) are not visible on {node['hostname']}: put the run directory (--out) on a filesystem every node sees"
        return {**failure("no_shared_filesystem", message), "node": node}
    with open(spec.log_path, "a") as log:
        log.write(f"{ATTEMPT_MARK} {node['hostname']} (Ray worker pid {os.getpid()})\n")
    with _ray_script_hidden():
        result = run_here(spec, Path(logs_dir) / f"forkserver-{node['hostname']}-{os.getpid()}.log")
    result["node"] = {**node, **(result.get("node") or {}), "ray_node_id": node["ray_node_id"]}
    return result


def _attempts(log_path: Path, offset: int) -> int:
    """How many attempts the task logged after ``offset`` (0 when the log cannot be read here)."""
    try:
        with open(log_path, "rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace").count(ATTEMPT_MARK)
    except OSError:
        return 0


def _needs_gpu(device: str) -> bool:
    return device == "cuda" or device.startswith("cuda:")


class RayExecutor(Executor):
    """Tasks on a Ray cluster: one fresh forked process per task on its node, timing serialised per node."""

    NAME = "ray"
    DESCRIPTION = "each task on a node of a Ray cluster (or a local Ray instance); timing tasks never overlap on a node"
    Config = RayConfig

    def __init__(self) -> None:
        self._config: RayConfig | None = None
        self._remote: Any = None
        self._logs_dir = ""
        self._owns_connection = False
        self._started_instance = False
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self._running: set[Any] = set()
        self._timing_nodes: dict[str, str] = {}

    def unavailable_reason(self, config: Any) -> str | None:
        """Why Ray cannot be used: it is not installed."""
        return None if importlib.util.find_spec("ray") is not None else INSTALL_HINT

    def parallel_groups(self, config: Any) -> int:
        """``parallel_groups`` from the config; unset, 1 on a local instance started for the run and 2 on a cluster."""
        if config.parallel_groups is not None:
            return config.parallel_groups
        return 1 if self._started_instance else 2

    def start(self, config: Any, run_dir: Path) -> None:
        """Connect to the cluster (or start a local instance) and check that some node offers the measurement resource."""
        import ray

        self._config = config
        self._cancelled.clear()
        self._logs_dir = str(Path(run_dir).resolve() / "logs")
        Path(self._logs_dir).mkdir(parents=True, exist_ok=True)
        if not ray.is_initialized():
            self._init(ray, config)
        self._remote = ray.remote(run_on_node)
        if not any(node["Alive"] and node["Resources"].get(config.measure_resource, 0) >= 1 for node in ray.nodes()):
            self.stop()
            raise HarnessError(
                f"no node of the Ray cluster offers the resource {config.measure_resource!r}, which timing tasks need; start each node with "
                f"`ray start --address=HEAD:6379 --resources='{{\"{config.measure_resource}\": 1}}'`"
            )

    def _init(self, ray: Any, config: RayConfig) -> None:
        address = config.address or os.environ.get("RAY_ADDRESS") or LOCAL
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "WARNING"}
        if address == LOCAL:
            options.update(num_cpus=config.num_cpus, resources={config.measure_resource: 1})
            if config.temp_dir:
                options["_temp_dir"] = str(Path(config.temp_dir).resolve())
        try:
            ray.init(address=address, **options)
        except (OSError, ValueError, RuntimeError) as error:
            raise HarnessError(f"could not {'start a local Ray instance' if address == LOCAL else f'connect to the Ray cluster at {address}'}: {error}") from error
        self._owns_connection = True
        self._started_instance = address == LOCAL

    def run(self, spec: TaskSpec) -> dict[str, Any] | None:
        """Run the task as a Ray task; its result, a ``node_lost``/``exception`` failure, or None when cancelled."""
        import ray

        if self._cancelled.is_set():
            return None
        if _needs_gpu(spec.device) and ray.cluster_resources().get("GPU", 0) < 1:
            return failure("infeasible", f"{spec.name} needs a GPU and no node of the Ray cluster has one")
        offset = spec.log_path.stat().st_size if spec.log_path.exists() else 0
        ref = self._remote.options(**self._options(spec)).remote(spec, self._logs_dir)
        with self._lock:
            self._running.add(ref)
        try:
            outcome = self._wait(ref)
        finally:
            with self._lock:
                self._running.discard(ref)
        if outcome is None:
            return None
        attempts = _attempts(spec.log_path, offset)
        result = outcome if isinstance(outcome, dict) else self._failure(outcome, spec, attempts)
        if attempts:
            result.setdefault("attempts", attempts)
        node_id = (result.get("node") or {}).get("ray_node_id")
        if spec.exclusive and node_id:
            self._timing_nodes.setdefault(spec.group_key, node_id)
        return result

    def _options(self, spec: TaskSpec) -> dict[str, Any]:
        """What the task asks of Ray: its CPUs, a GPU for CUDA, the whole measurement resource for timing, its retries.

        A group's later timing rounds (same log file) must run on the node that ran its first.
        """
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        config = self._config
        options: dict[str, Any] = {
            "name": spec.name,
            "num_cpus": config.cpus_per_task,
            "num_gpus": 1 if _needs_gpu(spec.device) else 0,
            "resources": {config.measure_resource: 1} if spec.exclusive else {},
            "max_retries": config.retries,
            "retry_exceptions": False,
        }
        pinned = self._timing_nodes.get(spec.group_key) if spec.exclusive else None
        if pinned:
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(pinned, soft=False)
        return options

    def _wait(self, ref: Any) -> Any:
        """The task's result or the Ray error it ended with; None when cancelled. Waits in short steps so :meth:`cancel_all` can stop it."""
        import ray
        from ray.exceptions import RayError, TaskCancelledError

        while not ray.wait([ref], timeout=POLL_S)[0]:
            if self._cancelled.is_set():
                ray.cancel(ref, force=True)
                return None
        try:
            return ray.get(ref)
        except TaskCancelledError:
            return None
        except RayError as error:
            return None if self._cancelled.is_set() else error

    def _failure(self, error: Any, spec: TaskSpec, attempts: int) -> dict[str, Any]:
        """The result for a task that ended with a Ray error: an exception in the Ray task itself, or a lost worker or node.

        Ray raises ``WorkerCrashedError`` or ``NodeDiedError`` only once every retry has been used.
        """
        from ray.exceptions import NodeDiedError, RayTaskError, WorkerCrashedError

        from benchharness.plugins.local import log_tail

        if isinstance(error, RayTaskError):
            return failure("exception", f"the Ray task running {spec.name} raised {error.cause!r}", str(error))
        retries = self._config.retries if isinstance(error, (WorkerCrashedError, NodeDiedError)) else max(attempts - 1, 0)
        message = f"the Ray worker running it died (retried {retries} time(s)): {type(error).__name__}: {error}"
        return {**failure("node_lost", message, log_tail(spec.log_path)), "attempts": max(attempts, retries + 1)}

    def cancel_all(self) -> None:
        """Cancel every running task (its Ray worker is killed, and with it the task's process); their :meth:`run` returns None."""
        import ray

        self._cancelled.set()
        with self._lock:
            running = list(self._running)
        for ref in running:
            ray.cancel(ref, force=True)

    def stop(self) -> None:
        """Disconnect from Ray, shutting down the local instance if :meth:`start` started it; nothing if Ray was already connected."""
        if self._owns_connection:
            import ray

            ray.shutdown()
            self._owns_connection = self._started_instance = False

    def describe(self, config: Any) -> dict[str, Any]:
        """The cluster: its address (or that a local instance was started, and where its logs are), its live nodes and their resources."""
        import ray

        if not ray.is_initialized():
            return {"address": config.address}
        context = ray.get_runtime_context()
        nodes = [node for node in ray.nodes() if node["Alive"]]
        described = {
            "address": "local instance started for the run" if self._started_instance else context.gcs_address,
            "ray_version": ray.__version__,
            "session": context.get_session_name(),
            "nodes": [{"hostname": node["NodeManagerHostname"], "ray_node_id": node["NodeID"], "resources": node["Resources"]} for node in nodes],
            "resources": ray.cluster_resources(),
        }
        if self._started_instance:
            described["ray_logs"] = str(Path(context.get_temp_dir()) / described["session"] / "logs")
        return described


@hookimpl
def register_executors(register):
    """Register the Ray executor."""
    register(RayExecutor)
