"""Process-tree hygiene: no process a cell starts outlives the cell, or the runner.

A cell's worker may start processes that leave its process group or session
(the DDP ranks of torch's elastic launcher, anything started with
``start_new_session=True``) and may die before they do. This module finds such
processes, stops and kills them, and lets a worker notice that the runner died.
The prctl-based parts work on Linux and do nothing elsewhere; the rest uses
psutil. Processes are held as ``psutil.Process`` objects, which know their
creation time, so a pid reused by an unrelated process is never signalled.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from typing import Callable, Iterable

import psutil

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
PARENT_POLL_S = 0.2
KILL_WAIT_S = 5.0
_SIGSTOP = getattr(signal, "SIGSTOP", None)
_HAS_PROC_CHILDREN = os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")


def _prctl(option: int, value: int) -> bool:
    """Call Linux's prctl; False where there is none or it fails."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def become_subreaper() -> bool:
    """Make orphaned descendants of this process become its children instead of init's (Linux); whether it worked."""
    return _prctl(PR_SET_CHILD_SUBREAPER, 1)


def die_with_parent(signal_number: int = signal.SIGKILL, parent_pid: int | None = None) -> None:
    """Ask Linux to send ``signal_number`` to this process when its parent dies.

    The request only covers a parent alive when it is made, so this process exits at once
    when its parent is no longer ``parent_pid`` (by default, the parent before the request).
    Pass the parent's pid when it is known from before this process started: that also
    covers a parent that died while this process was starting.
    """
    expected = os.getppid() if parent_pid is None else parent_pid
    if _prctl(PR_SET_PDEATHSIG, int(signal_number)) and os.getppid() != expected:
        os._exit(1)


def close_inherited_alive_fd() -> None:
    """In a process forked by the multiprocessing forkserver, close its inherited end of the server's "alive" pipe.

    The forkserver exits when every write end of that pipe is closed. Each process it forks
    inherits one, so while a worker lives the server outlives a runner killed with
    ``kill -9``, and the worker never learns that its parent is gone. Does nothing in the
    process that started the forkserver, whose end keeps the server running.
    """
    from multiprocessing import forkserver

    server = forkserver._forkserver
    fd = server._forkserver_alive_fd
    if fd is None or server._forkserver_pid is not None:
        return
    server._forkserver_alive_fd = None
    try:
        os.close(fd)
    except OSError:
        pass


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


def _is_running(process: psutil.Process) -> bool:
    """Whether ``process`` still runs: not gone, not a zombie, its pid not reused."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _child_pids(pid: int) -> list[int]:
    """Children of ``pid`` from /proc (every thread's list): far cheaper than scanning every process."""
    pids: list[int] = []
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return pids
    for thread in threads:
        try:
            with open(f"/proc/{pid}/task/{thread}/children") as children:
                pids.extend(int(child) for child in children.read().split())
        except OSError:
            pass
    return pids


def descendants(process: psutil.Process) -> list[psutil.Process]:
    """The running children of ``process``, their children, and so on."""
    if not _is_running(process):
        return []
    if not _HAS_PROC_CHILDREN:
        try:
            return process.children(recursive=True)
        except psutil.Error:
            return []
    found, parents = [], [process.pid]
    while parents:
        for pid in _child_pids(parents.pop()):
            child = _process(pid)
            if child is not None:
                found.append(child)
                parents.append(pid)
    return found


def _signal(process: psutil.Process, signal_number: int) -> None:
    try:
        process.send_signal(signal_number)
    except psutil.Error:
        pass


def _halt(process: psutil.Process) -> None:
    """Stop ``process`` (SIGSTOP), or kill it where there is no SIGSTOP."""
    if _SIGSTOP is not None:
        _signal(process, _SIGSTOP)
    else:
        try:
            process.kill()
        except psutil.Error:
            pass


def _stop_all(roots: Iterable[psutil.Process], stop_roots: bool) -> set[psutil.Process]:
    """Stop the roots (if asked) and all their descendants, again until no new ones appear; all it found."""
    roots = [root for root in roots if _is_running(root)]
    stopped = set(roots) if stop_roots else set()
    for root in stopped:
        _halt(root)
    while True:
        new = {child for parent in [*roots, *stopped] for child in descendants(parent)} - stopped - set(roots)
        if not new:
            return stopped
        for process in new:
            _halt(process)
        stopped |= new


def _wait_gone(processes: Iterable[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait until all have ended (zombies count as ended: their parents reap them); those still running at the timeout."""
    deadline = time.monotonic() + timeout_s
    left = list(processes)
    while True:
        left = [process for process in left if _is_running(process)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.01)


def _kill_all(roots: Iterable[psutil.Process], kill_roots: bool, timeout_s: float) -> list[psutil.Process]:
    victims = _stop_all(roots, kill_roots)
    for process in victims:
        _signal(process, signal.SIGKILL)
    _wait_gone(victims, timeout_s)
    return sorted(victims, key=lambda process: process.pid)


def kill_tree(pid_or_process: int | psutil.Process, include_root: bool = True, timeout_s: float = KILL_WAIT_S) -> list[psutil.Process]:
    """Kill a process and all its descendants, whatever their process group or session; the processes killed.

    Every one is stopped (SIGSTOP) before any is killed, so none can fork meanwhile or be
    reparented away; then all get SIGKILL and are waited for (up to ``timeout_s``). Processes
    already gone are skipped. With ``include_root=False`` the root itself is spared.
    """
    root = _process(pid_or_process) if isinstance(pid_or_process, int) else pid_or_process
    if root is None:
        return []
    return _kill_all([root], include_root, timeout_s)


def kill_descendants(timeout_s: float = KILL_WAIT_S) -> list[psutil.Process]:
    """Kill every descendant of this process (a cell's leftovers), keeping this one; the processes killed."""
    return kill_tree(os.getpid(), include_root=False, timeout_s=timeout_s)


def exit_with_descendants(code: int = 1) -> None:
    """Kill every descendant of this process, then end it at once."""
    try:
        kill_descendants()
    finally:
        os._exit(code)


def watch_parent(on_orphaned: Callable[[], None] = exit_with_descendants, interval_s: float = PARENT_POLL_S) -> threading.Thread:
    """Start a daemon thread that calls ``on_orphaned`` once this process's parent is no longer the current one.

    A worker's parent is the forkserver, which exits when the runner dies (see
    :func:`close_inherited_alive_fd`). A thread notices this even while the main thread
    sits in a long C call that releases the GIL, where a Python signal handler would wait.
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval_s)
        on_orphaned()

    thread = threading.Thread(target=watch, name="watch-parent", daemon=True)
    thread.start()
    return thread


class DescendantTracker:
    """Remembers every descendant of a process seen while polling, to kill them all at the end.

    A descendant whose parent dies is reparented away from the tree (to init or a
    subreaper), where :func:`kill_tree` cannot find it any more; the tracker still can.
    """

    def __init__(self, pid: int):
        self.root = _process(pid)
        self.seen: set[psutil.Process] = set()

    def poll(self) -> None:
        """Remember the root's current descendants (cheap enough to call ten times a second)."""
        if self.root is not None:
            self.seen.update(descendants(self.root))

    def kill_all(self, timeout_s: float = KILL_WAIT_S) -> list[psutil.Process]:
        """Kill the root, its descendants and every remembered one still running, wherever it lives now; those killed."""
        self.poll()
        roots = [self.root] if self.root is not None else []
        return _kill_all(roots + [process for process in self.seen if _is_running(process)], True, timeout_s)
