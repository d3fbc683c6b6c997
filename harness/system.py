"""What else is happening on this machine: other processes' CPU time, busy processes, clocks, swap, threads.

:class:`OtherCpuMeter` runs around every timed measurement and says how much CPU
time other processes took on the CPUs this process may use meanwhile.
:func:`system_check` is ``benchharness system``: a list of findings about the
machine, like ``pyperf system show``. :func:`busy_warning` is the one-line
warning printed before a run starts on a busy machine.

The paths under /proc and /sys are module constants so that tests can point
them at fake files.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, NamedTuple

import psutil

from benchharness.conditions import allowed_cpus

PROC_STAT = Path("/proc/stat")
PROC_CPUINFO = Path("/proc/cpuinfo")
CPU_SYSFS = Path("/sys/devices/system/cpu")
INTEL_NO_TURBO = CPU_SYSFS / "intel_pstate" / "no_turbo"
CPUFREQ_BOOST = CPU_SYSFS / "cpufreq" / "boost"
NOT_READABLE = "not readable here"

OTHER_CORES_LIMIT = 0.2
BUSY_PROCESS_PERCENT = 10.0
LOAD_LIMIT = 0.5
SWAP_LIMIT_BYTES = 64 * 2**20
STEAL_LIMIT = 0.02
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
SHOWN_PROCESSES = 5


class CpuSeconds(NamedTuple):
    """CPU seconds since boot summed over some CPUs: busy (steal included), steal, and all time."""

    busy: float
    steal: float
    total: float


def cpu_seconds(cpus: Iterable[int]) -> CpuSeconds:
    """CPU seconds since boot summed over ``cpus``, from /proc/stat (psutil's whole-machine times elsewhere).

    Busy is everything but idle and iowait; guest time is already inside user and nice.
    """
    wanted = set(cpus)
    try:
        text = PROC_STAT.read_text()
    except OSError:
        times = psutil.cpu_times()
        steal = getattr(times, "steal", 0.0)
        total = sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
        return CpuSeconds(total - times.idle - getattr(times, "iowait", 0.0), steal, total)
    busy = steal = total = 0
    for line in text.splitlines()[1:]:
        if not line.startswith("cpu"):
            break
        name, *fields = line.split()
        if int(name[3:]) not in wanted:
            continue
        user, nice, system, idle, iowait, irq, softirq, stolen = (int(field) for field in (fields + ["0"] * 8)[:8])
        busy += user + nice + system + irq + softirq + stolen
        steal += stolen
        total += user + nice + system + idle + iowait + irq + softirq + stolen
    ticks_per_second = os.sysconf("SC_CLK_TCK")
    return CpuSeconds(busy / ticks_per_second, steal / ticks_per_second, total / ticks_per_second)


def describe_other_cores(cores: float) -> str:
    """'other processes used 85% of a core', or '... 1.6 cores' from one core on."""
    amount = f"{cores:.0%} of a core" if cores < 1.0 else f"{cores:.1f} cores"
    return f"other processes used {amount}"


class OtherCpuMeter:
    """The CPU time other processes use on this process's CPUs while a block runs.

    ``with OtherCpuMeter() as meter: ...`` (or ``start()``/``stop()``) sets ``other_cores``: CPU
    seconds that processes other than this one (and ``exclude_pids``) spent on the CPUs in this
    process's affinity set, per wall second; 0.85 means they used 85% of a core. Hypervisor steal
    counts as other. An excluded process's CPU time is subtracted wherever it ran, so exclude only
    processes confined to the same CPUs. Start and stop each cost some tens of microseconds.

    The kernel counts CPU time in ticks of 10 ms, so a window of a few ticks is coarse: over 50 ms,
    one tick either way is 0.2 of a core. One tick per counter is discounted (see
    :meth:`tick_slack_s`), so short windows err towards "quiet"; windows of 0.5 s or more read to
    within about 0.1 of a core.
    """

    def __init__(self, exclude_pids: Iterable[int] = ()):
        self.excluded = _processes(set(exclude_pids) - {os.getpid()})
        self.other_cores = 0.0
        self.other_cpu_s = 0.0
        self.steal_cores = 0.0
        self.wall_s = 0.0

    def _own_cpu_s(self) -> float:
        own = os.times()
        return own.user + own.system + sum(_process_cpu_s(process) for process in self.excluded)

    def start(self) -> "OtherCpuMeter":
        """Take the first reading."""
        self.cpus = allowed_cpus()
        self._started = (time.perf_counter(), cpu_seconds(self.cpus), self._own_cpu_s())
        return self

    def stop(self) -> float:
        """Take the second reading; set and return ``other_cores``."""
        wall_end, cpu_end, own_end = time.perf_counter(), cpu_seconds(self.cpus), self._own_cpu_s()
        wall_start, cpu_start, own_start = self._started
        self.wall_s = wall_end - wall_start
        self.other_cpu_s = max(0.0, (cpu_end.busy - cpu_start.busy) - (own_end - own_start) - self.tick_slack_s())
        self.other_cores = self.other_cpu_s / self.wall_s if self.wall_s > 0 else 0.0
        self.steal_cores = (cpu_end.steal - cpu_start.steal) / self.wall_s if self.wall_s > 0 else 0.0
        return self.other_cores

    def tick_slack_s(self) -> float:
        """CPU seconds the tick counters may be off by: under one tick per difference of two reads (each CPU's and this process's).

        They are discounted, so that a short window never reads a tick of rounding as a busy machine.
        """
        return (len(self.cpus) + 1) / os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> "OtherCpuMeter":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def describe(self) -> str:
        """'other processes used 85% of a core' (or '1.6 cores')."""
        return describe_other_cores(self.other_cores)


def _processes(pids: Iterable[int]) -> list[psutil.Process]:
    processes = []
    for pid in pids:
        try:
            processes.append(psutil.Process(pid))
        except psutil.Error:
            continue
    return processes


def _process_cpu_s(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0.0
    return times.user + times.system


@dataclass(frozen=True)
class BusyProcess:
    """A process that used CPU while the machine was sampled: ``percent`` of one core."""

    pid: int
    name: str
    percent: float

    def describe(self) -> str:
        """'python3 (pid 4321): 99% of a core'."""
        return f"{self.name} (pid {self.pid}): {self.percent:.0f}% of a core"


@dataclass
class Activity:
    """What other processes did during a short sample: their CPU use and the busiest of them."""

    meter: OtherCpuMeter
    busy: list[BusyProcess]


def related_pids() -> set[int]:
    """This process, its ancestors and its descendants: the harness itself, never 'others'."""
    me = psutil.Process()
    related = {me.pid}
    for relatives in (me.parents, lambda: me.children(recursive=True)):
        try:
            related.update(process.pid for process in relatives())
        except psutil.Error:
            pass
    return related


def sample_activity(seconds: float = 0.3, exclude_pids: Iterable[int] = ()) -> Activity:
    """Sample the machine for ``seconds``: others' CPU on this process's CPUs, and processes busier than 10% of a core.

    This process, its ancestors, its descendants and ``exclude_pids`` do not count. Only
    processes that may run on this process's CPUs are listed.
    """
    excluded = related_pids() | set(exclude_pids)
    with OtherCpuMeter(excluded) as meter:
        watched = _start_watching(excluded)
        time.sleep(seconds)
        busy = _busy_among(watched, set(meter.cpus))
    return Activity(meter, busy)


def _start_watching(excluded: set[int]) -> list[psutil.Process]:
    watched = []
    for process in psutil.process_iter(["name"]):
        if process.pid in excluded:
            continue
        try:
            process.cpu_percent(None)
        except psutil.Error:
            continue
        watched.append(process)
    return watched


def _busy_among(watched: list[psutil.Process], cpus: set[int]) -> list[BusyProcess]:
    busy = []
    for process in watched:
        try:
            percent = process.cpu_percent(None)
            if percent < BUSY_PROCESS_PERCENT or not _may_run_on(process, cpus):
                continue
            busy.append(BusyProcess(process.pid, process.info.get("name") or "?", percent))
        except psutil.Error:
            continue
    return sorted(busy, key=lambda entry: entry.percent, reverse=True)


def _may_run_on(process: psutil.Process, cpus: set[int]) -> bool:
    try:
        return not cpus or bool(cpus & set(process.cpu_affinity()))
    except (AttributeError, psutil.Error):
        return True


def busy_warning(threshold: float = OTHER_CORES_LIMIT, sample_s: float = 0.5, exclude_pids: Iterable[int] = ()) -> str | None:
    """A one-line warning when other processes use more than ``threshold`` cores of this process's CPUs
    over ``sample_s`` seconds, or any process is busier than 10% of one of them; else None. Names the busiest."""
    activity = sample_activity(sample_s, exclude_pids)
    if activity.meter.other_cores <= threshold and not activity.busy:
        return None
    warning = f"the machine is busy: {activity.meter.describe()} over {activity.meter.wall_s:.1f} s"
    if activity.busy:
        warning += "; busiest: " + ", ".join(process.describe() for process in activity.busy[:3])
    return warning


@dataclass(frozen=True)
class Finding:
    """One fact about the machine, whether it is fit for timing, and what to do when it is not.

    ``checked`` is False where this machine does not let us look (the value says so).
    """

    name: str
    value: str
    ok: bool
    advice: str = ""
    checked: bool = True

    @property
    def verdict(self) -> str:
        """'ok', 'warning', or 'unknown' when it could not be checked."""
        if not self.checked:
            return "unknown"
        return "ok" if self.ok else "warning"

    def as_dict(self) -> dict[str, Any]:
        """The finding as a JSON-ready dict, verdict included."""
        return {**asdict(self), "verdict": self.verdict}


def system_check(sample_s: float = 0.3) -> list[Finding]:
    """Everything on this machine that can disturb a CPU timing, each as a :class:`Finding`.

    Samples the machine for ``sample_s`` seconds (other processes' CPU time, busy processes, steal).
    """
    cpus = allowed_cpus()
    activity = sample_activity(sample_s)
    return [
        affinity_finding(cpus),
        other_cpu_finding(activity.meter),
        busy_processes_finding(activity.busy),
        load_finding(cpus),
        threads_finding(cpus, activity.meter.other_cores),
        swap_finding(),
        governor_finding(cpus),
        turbo_finding(),
        virtualisation_finding(cpus, activity.meter),
    ]


def cpu_list_text(cpus: Iterable[int]) -> str:
    """CPU ids as ranges: [0, 1, 2, 5] -> '0-2,5'."""
    ranges: list[list[int]] = []
    for cpu in sorted(cpus):
        if ranges and cpu == ranges[-1][1] + 1:
            ranges[-1][1] = cpu
        else:
            ranges.append([cpu, cpu])
    return ",".join(str(first) if first == last else f"{first}-{last}" for first, last in ranges)


def affinity_finding(cpus: list[int]) -> Finding:
    """The CPUs this process may run on, out of the machine's."""
    total = psutil.cpu_count(logical=True) or len(cpus)
    value = f"CPUs {cpu_list_text(cpus)} ({len(cpus)} of {total} logical CPUs)"
    room_to_isolate = len(cpus) == total and total > 2
    advice = "on a shared machine, pin timings to CPUs nothing else uses (suite: measure.cpus, or taskset)" if room_to_isolate else ""
    return Finding("CPU affinity", value, True, advice)


def other_cpu_finding(meter: OtherCpuMeter) -> Finding:
    """Other processes' CPU time on this process's CPUs during the sample."""
    ok = meter.other_cores <= OTHER_CORES_LIMIT
    advice = "" if ok else "stop or wait for the processes using these CPUs; timings taken now are slow and noisy"
    return Finding("other processes' CPU", f"{meter.describe()} over {meter.wall_s:.1f} s", ok, advice)


def busy_processes_finding(busy: list[BusyProcess]) -> Finding:
    """The processes busier than 10% of a core right now."""
    if not busy:
        return Finding("busy processes", f"none above {BUSY_PROCESS_PERCENT:.0f}% of a core", True)
    shown = "; ".join(process.describe() for process in busy[:SHOWN_PROCESSES])
    more = f"; and {len(busy) - SHOWN_PROCESSES} more" if len(busy) > SHOWN_PROCESSES else ""
    return Finding("busy processes", shown + more, False, "stop them (kill PID) or wait for them to finish before timing")


def load_finding(cpus: list[int]) -> Finding:
    """The load average, scaled to the share of the machine's CPUs this process may use."""
    try:
        one, five, fifteen = psutil.getloadavg()
    except (AttributeError, OSError):
        return Finding("load average", NOT_READABLE, True, checked=False)
    total = psutil.cpu_count(logical=True) or len(cpus)
    on_usable = one * len(cpus) / total
    value = f"{one:.2f}, {five:.2f}, {fifteen:.2f} (1, 5, 15 min) on {total} CPUs, {len(cpus)} usable"
    ok = on_usable < LOAD_LIMIT
    advice = "" if ok else f"about {on_usable:.1f} runnable tasks compete for the usable CPUs (1-minute average): wait or stop them"
    return Finding("load average", value, ok, advice)


def configured_threads() -> dict[str, str]:
    """The thread-count environment variables that are set, and torch's threads when torch is already imported."""
    configured = {name: os.environ[name] for name in THREAD_VARIABLES if os.environ.get(name)}
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "get_num_threads"):
        configured["torch threads"] = str(torch.get_num_threads())
    return configured


def threads_finding(cpus: list[int], other_cores: float) -> Finding:
    """Thread counts against the usable CPUs, and against what other processes leave of them."""
    configured = configured_threads()
    counts = [int(value) for value in configured.values() if value.isdigit()]
    threads = max(counts) if counts else len(cpus)
    described = ", ".join(f"{name}={value}" for name, value in configured.items()) or "not set (torch uses about one per physical core)"
    value = f"{described}; {len(cpus)} usable CPUs"
    if len(counts) < len(configured):
        return Finding("threads", value, False, "a thread variable is not a positive whole number; fix or unset it")
    if threads > len(cpus):
        return Finding("threads", value, False, f"{threads} threads on {len(cpus)} CPUs wait on each other: use at most {len(cpus)} (suite: measure.threads)")
    if threads + other_cores > len(cpus) + OTHER_CORES_LIMIT:
        spare = max(1, len(cpus) - round(other_cores + 0.5))
        advice = f"with other processes busy, {threads} threads share {len(cpus)} CPUs and wait on each other: quiet the machine or use {spare} (measure.threads)"
        return Finding("threads", value, False, advice)
    return Finding("threads", value, True)


def swap_finding() -> Finding:
    """Swap in use: the model or its inputs may be paged out while timed."""
    swap = psutil.swap_memory()
    if not swap.total:
        return Finding("swap", "no swap", True)
    value = f"{swap.used / 2**20:.0f} MiB of {swap.total / 2**20:.0f} MiB in use"
    ok = swap.used < SWAP_LIMIT_BYTES
    return Finding("swap", value, ok, "" if ok else "memory is short: close memory-hungry programs so nothing timed is paged out")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def governor_finding(cpus: list[int]) -> Finding:
    """The cpufreq scaling governor of the usable CPUs; 'performance' keeps clocks high and steady."""
    by_governor: dict[str, list[int]] = {}
    for cpu in cpus:
        governor = _read(CPU_SYSFS / f"cpu{cpu}" / "cpufreq" / "scaling_governor")
        if governor:
            by_governor.setdefault(governor, []).append(cpu)
    if not by_governor:
        return Finding("CPU governor", NOT_READABLE, True, "no cpufreq here (usual in VMs and containers): the host sets clock speeds", checked=False)
    value = ", ".join(f"{governor} (CPUs {cpu_list_text(on)})" for governor, on in by_governor.items())
    ok = set(by_governor) == {"performance"}
    advice = "" if ok else "clocks change with load: sudo cpupower frequency-set -g performance"
    return Finding("CPU governor", value, ok, advice)


def turbo_finding() -> Finding:
    """Turbo boost (intel_pstate no_turbo, or cpufreq boost): on, clock speed depends on temperature and load."""
    no_turbo = _read(INTEL_NO_TURBO)
    boost = _read(CPUFREQ_BOOST)
    if no_turbo in ("0", "1"):
        on, path, off_value = no_turbo == "0", INTEL_NO_TURBO, "1"
    elif boost in ("0", "1"):
        on, path, off_value = boost == "1", CPUFREQ_BOOST, "0"
    else:
        return Finding("turbo boost", NOT_READABLE, True, "no intel_pstate or cpufreq boost switch here (usual in VMs and containers)", checked=False)
    advice = f"clock speed varies with temperature and busy cores; for steady timings: echo {off_value} | sudo tee {path}" if on else ""
    return Finding("turbo boost", "on" if on else "off", not on, advice)


def is_virtual_machine() -> bool | None:
    """Whether the CPU reports the 'hypervisor' flag (None where /proc/cpuinfo cannot be read)."""
    text = _read(PROC_CPUINFO)
    if text is None:
        return None
    return any(line.startswith(("flags", "Features")) and "hypervisor" in line.split() for line in text.splitlines())


def virtualisation_finding(cpus: list[int], meter: OtherCpuMeter) -> Finding:
    """Whether this is a VM, and how much CPU time the hypervisor gives to other guests (steal)."""
    virtual = is_virtual_machine()
    kind = {True: "virtual machine", False: "no hypervisor flag", None: f"hypervisor flag {NOT_READABLE}"}[virtual]
    since_boot = cpu_seconds(cpus)
    steal_share_now = meter.steal_cores / max(len(cpus), 1)
    steal_share_boot = since_boot.steal / since_boot.total if since_boot.total else 0.0
    value = f"{kind}; steal {steal_share_now:.1%} of CPU time now, {steal_share_boot:.2%} since boot"
    ok = steal_share_now < STEAL_LIMIT
    if not ok:
        advice = "the hypervisor gives these CPUs to other guests: use dedicated vCPUs or bare metal, and compare only within one run"
    elif virtual:
        advice = "a VM's timings depend on its neighbours: compare only cells measured in the same run"
    else:
        advice = ""
    return Finding("virtualisation", value, ok, advice)
