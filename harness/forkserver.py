"""The forkserver that cell workers are forked from: it imports torch, the harness and the plugins once.

Isolation then costs a fork, not a fresh interpreter. The process that starts it never
imports torch itself.
"""

from __future__ import annotations

import multiprocessing
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

PRELOAD = ["benchharness.worker"]
"""What the forkserver imports once (torch, torchvision, the plugins); this process never imports it."""
_context: Any = None
_launched = False
_launch_lock = threading.Lock()


def worker_context() -> Any:
    """The forkserver context whose server preloads torch and the harness (started once per process)."""
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def launch_workers(log_path: Path | None = None) -> None:
    """Start the forkserver in the background: it imports torch and the plugins while the caller goes on.

    The forkserver ignores Ctrl-C (the runner decides what Ctrl-C stops) and writes to ``log_path``
    (or nowhere), never to the caller's stdout, which it would otherwise hold open after the caller exits.
    """
    global _launched
    from multiprocessing import forkserver

    worker_context()
    with _launch_lock:
        if _launched:
            return
        with _detached_child_start(log_path):
            forkserver.ensure_running()
        _launched = True


@contextmanager
def _detached_child_start(log_path: Path | None) -> Iterator[None]:
    """While the block starts a child process: SIGINT ignored, stdout and stderr sent to ``log_path`` (or /dev/null)."""
    import os
    import sys

    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: leave the signal alone
        previous = None
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    target = os.open(str(log_path) if log_path else os.devnull, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(target, 1)
        os.dup2(target, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for descriptor in (*saved, target):
            os.close(descriptor)
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def start_workers() -> None:
    """Start the forkserver (if needed) and wait until it has imported everything, so no cell is charged for that."""
    from benchharness.tasks import ready

    launch_workers()
    process = worker_context().Process(target=ready, name="warm-up")
    process.start()
    process.join()
