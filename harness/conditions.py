"""The controlled state every timing starts from: threads, CPU affinity and the allocator.

A measuring process applies these before it loads a model, and the run records
them in ``run.json`` (``conditions``) and in every record, so that a number can
be reproduced and two numbers compared only when they were taken alike.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from typing import Any

THREAD_ENVIRONMENT = (
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_WAIT_POLICY", "OMP_PROC_BIND", "OMP_PLACES",
    "GOMP_SPINCOUNT", "KMP_AFFINITY", "KMP_BLOCKTIME", "MALLOC_CONF", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_ARENA_MAX", "LD_PRELOAD",
)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 2**20
TRIM_THRESHOLD_BYTES = 2**30


def allowed_cpus() -> list[int]:
    """The CPUs this process may run on (all logical CPUs where affinity is not supported)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:
        return list(range(os.cpu_count() or 1))


def unavailable_cpus(requested: list[int] | None) -> list[int]:
    """The requested CPUs this process may not use (empty when all are usable)."""
    if not requested:
        return []
    allowed = set(allowed_cpus())
    return [cpu for cpu in requested if cpu not in allowed]


def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


def fix_allocator() -> dict[str, Any]:
    """Fix glibc malloc's thresholds so allocator behaviour no longer depends on what ran before.

    glibc raises its mmap threshold dynamically whenever a large block is freed, so the same
    forward pass is served by mmap/munmap in a fresh process and from the heap after any larger
    one. Fixed thresholds (as ``mallopt`` sets them) end that adaptation: every allocation up to
    ``MMAP_THRESHOLD_BYTES`` comes from the heap, and freed memory is not returned to the system.
    """
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None) if libc is not None else None
    if mallopt is None:
        return {"allocator": "system default (mallopt unavailable: not glibc)"}
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    if not ok:
        return {"allocator": "glibc default (mallopt refused the fixed thresholds)"}
    return {"allocator": "glibc, fixed thresholds", "mmap_threshold_bytes": MMAP_THRESHOLD_BYTES, "trim_threshold_bytes": TRIM_THRESHOLD_BYTES}


def oversubscribed(threads: int, cpus: list[int] | None = None) -> bool:
    """Whether ``threads`` exceed the CPUs ``cpus`` (default: those this process may use), so that threads wait for each other's CPU."""
    return threads > len(cpus if cpus else allowed_cpus())


def oversubscription_warning(counts: list[int], cpus: list[int] | None = None) -> str | None:
    """A one-line warning naming the thread counts above the CPUs timing runs on, or None when every count fits."""
    available = len(cpus if cpus else allowed_cpus())
    above = [count for count in counts if count > available]
    if not above:
        return None
    listed = ", ".join(str(count) for count in above)
    return (
        f"latency will be timed at {listed} threads on {available} CPUs: threads that share a CPU wait for each other, "
        "so those timings mean nothing; they are flagged noisy (lower measure.threads or give it more CPUs)"
    )


class AtThreads:
    """A model called with torch's intra-op threads set to ``threads``, so that one process can time it at several counts in turns.

    The count is switched (a fraction of a microsecond) only when the current one differs; the
    affinity stays as pinned. ``applied_threads`` is torch's count during the last call.
    """

    def __init__(self, model: Any, threads: int):
        import torch

        self.model, self.threads, self.applied_threads = model, threads, None
        self._torch = torch

    def eval(self) -> "AtThreads":
        """Put the model in eval mode; returns this wrapper."""
        self.model.eval()
        return self

    def __call__(self, batch: Any) -> Any:
        """The model's output on ``batch``, computed with ``threads`` intra-op threads."""
        current = self._torch.get_num_threads()
        if current != self.threads:
            self._torch.set_num_threads(self.threads)
            current = self._torch.get_num_threads()
        self.applied_threads = current
        return self.model(batch)


def pin(cpus: list[int] | None, threads: int) -> dict[str, Any]:
    """Pin this process to ``cpus`` (default: those allowed) and set torch's intra-op threads."""
    import torch

    chosen = list(cpus) if cpus else allowed_cpus()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, chosen)
    torch.set_num_threads(threads)
    return {"cpus": chosen, "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads()}


def thread_environment() -> dict[str, str | None]:
    """The environment variables that change threading or allocation, as set for this process."""
    return {name: os.environ.get(name) for name in THREAD_ENVIRONMENT}


def apply(cpus: list[int] | None, threads: int) -> dict[str, Any]:
    """Apply the controlled state (allocator, affinity, threads) to this process and return it for the record."""
    return {**fix_allocator(), **pin(cpus, threads), "environment": {k: v for k, v in thread_environment().items() if v is not None}}


def describe(cpus: list[int] | None, threads: int, timed_threads: list[int] | None = None) -> dict[str, Any]:
    """What :func:`apply` will set, for ``run.json`` (without changing this process).

    ``threads`` is the count cells are built and trained with; ``timed_threads`` the counts latency
    is timed at (default: ``threads`` alone), with those above the CPUs in ``oversubscribed_threads``.
    """
    chosen = list(cpus) if cpus else allowed_cpus()
    timed = list(timed_threads) if timed_threads else [threads]
    return {
        "cpus": chosen,
        "threads": threads,
        "timed_threads": timed,
        "oversubscribed_threads": [count for count in timed if oversubscribed(count, chosen)],
        "allocator": "glibc with fixed mmap/trim thresholds (mallopt) in every measuring process" if _libc() is not None else "system default",
        "mmap_threshold_bytes": MMAP_THRESHOLD_BYTES,
        "trim_threshold_bytes": TRIM_THRESHOLD_BYTES,
        "isolation": "every round in a fresh process forked from the same preloaded server; the group's models restored from their saved files and timed in turns of interleave_ms, at every timed thread count",
        "environment": thread_environment(),
    }
