"""What else happens on the machine: the other-CPU meter, the system check and the busy warning, with real busy processes."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager

import pytest
from click.testing import CliRunner

from benchharness import system
from benchharness.cli import cli
from benchharness.system import OtherCpuMeter, busy_warning, cpu_list_text, cpu_seconds, describe_other_cores, system_check

SPIN = "import time\nend = time.monotonic() + 60\nwhile time.monotonic() < end: pass"
LAUNCH_ORPHAN = (
    "import subprocess, sys\n"
    f"spinner = subprocess.Popen([sys.executable, '-c', {SPIN!r}], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
    "print(spinner.pid)"
)
CPUS = sorted(os.sched_getaffinity(0))


@contextmanager
def busy_process(orphan: bool = False):
    """A real process spinning on this process's CPUs (it gives up after 60 s whatever happens).

    An orphan is started by a launcher that exits at once, so it is no descendant of the test
    process: the system check counts only processes unrelated to the harness.
    """
    child = None
    if orphan:
        pid = int(subprocess.run([sys.executable, "-c", LAUNCH_ORPHAN], capture_output=True, text=True, check=True, timeout=30).stdout)
    else:
        child = subprocess.Popen([sys.executable, "-c", SPIN])
        pid = child.pid
    try:
        os.sched_setaffinity(pid, CPUS)
        time.sleep(0.2)
        yield pid
    finally:
        os.kill(pid, signal.SIGKILL)
        if child is not None:
            child.wait()


def metered(seconds: float, exclude_pids=()) -> OtherCpuMeter:
    """A meter run around ``seconds`` of sleep."""
    with OtherCpuMeter(exclude_pids) as meter:
        time.sleep(seconds)
    return meter


def spin_metered(seconds: float) -> OtherCpuMeter:
    """A meter run around ``seconds`` of this process spinning."""
    started = time.perf_counter()
    with OtherCpuMeter() as meter:
        while time.perf_counter() - started < seconds:
            pass
    return meter


def quietest(windows: int = 3, seconds: float = 0.3) -> float:
    """The lowest reading of a few windows: a quiet machine, robust to a passing burst on a shared one."""
    return min(metered(seconds).other_cores for _ in range(windows))


def test_meter_sees_a_busy_process_and_a_quiet_machine_reads_clearly_less():
    """One spinning process on the same CPUs reads as most of a core; the same windows without it read far less."""
    with busy_process() as pid:
        busy = metered(0.5)
    quiet = quietest()
    assert busy.other_cores > 0.5, f"busy process {pid} not seen: {busy.describe()}"
    if quiet > 1.0:
        pytest.skip(f"other work kept this machine busy ({quiet:.2f} cores) in every quiet window: nothing to compare with")
    assert quiet < busy.other_cores - 0.3, (quiet, busy.other_cores)
    assert 0.4 < busy.wall_s < 5
    assert busy.other_cpu_s == pytest.approx(busy.other_cores * busy.wall_s)


def test_meter_leaves_out_the_measuring_process_and_excluded_pids():
    """This process's own CPU time is not 'other'; neither is an excluded pid's, read over the very same window."""
    spinning = min(spin_metered(0.3).other_cores for _ in range(2))
    assert spinning < quietest(windows=2) + 0.4, spinning
    with busy_process() as pid:
        with OtherCpuMeter() as everyone, OtherCpuMeter([pid]) as without_it:
            time.sleep(0.5)
    assert everyone.other_cores - without_it.other_cores > 0.5, (everyone.other_cores, without_it.other_cores)


def test_meter_is_cheap_and_never_negative():
    """A start/stop pair costs well under a millisecond, and a window too short to tick reads 0 or more."""
    meter = OtherCpuMeter()
    costs, readings = [], []
    for _ in range(200):
        started = time.perf_counter()
        meter.start()
        readings.append(meter.stop())
        costs.append(time.perf_counter() - started)
    assert statistics.median(costs) < 1e-3
    assert min(readings) >= 0.0


@pytest.mark.parametrize("cores, text", [(0.0, "0% of a core"), (0.85, "85% of a core"), (1.6, "1.6 cores"), (12.34, "12.3 cores")])
def test_describe_other_cores(cores, text):
    """Below one core as a percentage of a core, above in cores."""
    assert describe_other_cores(cores) == f"other processes used {text}"


def test_cpu_seconds_reads_busy_and_steal_of_the_chosen_cpus(tmp_path, monkeypatch):
    """Busy is everything but idle and iowait, steal included, summed over the chosen CPUs only."""
    stat = tmp_path / "stat"
    stat.write_text(
        "cpu  999 0 999 999 999 0 0 0 0 0\n"
        "cpu0 100 10 50 1000 200 5 5 30 7 0\n"
        "cpu1 900 0 900 100 0 0 0 0 0 0\n"
        "cpu2 20 0 10 1000 0 0 0 10 0 0\n"
        "intr 1 2 3\n"
    )
    monkeypatch.setattr(system, "PROC_STAT", stat)
    ticks = os.sysconf("SC_CLK_TCK")
    read = cpu_seconds([0, 2])
    assert read.busy == pytest.approx((100 + 10 + 50 + 5 + 5 + 30 + 20 + 10 + 10) / ticks)
    assert read.steal == pytest.approx(40 / ticks)
    assert read.total == pytest.approx((1400 + 1040) / ticks)


def test_system_check_names_a_busy_process_but_not_its_own_children():
    """An unrelated busy process is listed by pid; a child of the checking process is the harness's own."""
    with busy_process(orphan=True) as stranger, busy_process() as own_child:
        findings = {finding.name: finding for finding in system_check()}
    busy = findings["busy processes"]
    assert f"pid {stranger}" in busy.value
    assert f"pid {own_child}" not in busy.value
    assert busy.verdict == "warning" and busy.advice
    assert not findings["other processes' CPU"].ok


def test_system_check_covers_every_topic():
    """Each finding has a name, a value and a verdict; the topics of pyperf's system show are all there."""
    findings = system_check(sample_s=0.1)
    assert [finding.name for finding in findings] == [
        "CPU affinity", "other processes' CPU", "busy processes", "load average", "threads", "swap", "CPU governor", "turbo boost", "virtualisation",
    ]
    for finding in findings:
        assert finding.value and finding.verdict in ("ok", "warning", "unknown")
        assert finding.ok or finding.advice, f"{finding.name}: a warning without advice"
    assert cpu_list_text(CPUS) in findings[0].value


def test_busy_warning_names_the_busiest_process():
    """Before a run: a warning naming the busy process while it spins; once it is gone it is not named."""
    with busy_process(orphan=True) as pid:
        warning = busy_warning()
    assert warning is not None and "\n" not in warning
    assert f"pid {pid}" in warning and "other processes used" in warning
    after = busy_warning(sample_s=0.3)
    assert after is None or f"pid {pid}" not in after


def invoke(*args: str):
    """Run the CLI in-process with a wide terminal."""
    return CliRunner().invoke(cli, list(args), terminal_width=250, env={"COLUMNS": "250"})


def test_system_command_prints_a_table():
    """`benchharness system` prints what, value, verdict and advice for every finding, and exits 0."""
    result = invoke("system")
    assert result.exit_code == 0, result.output
    for text in ("what", "value", "verdict", "advice", "busy processes", "CPU governor", "other processes used"):
        assert text in result.output


def test_system_command_json():
    """`benchharness system --json` prints the findings as a JSON list."""
    result = invoke("system", "--json")
    assert result.exit_code == 0, result.output
    findings = json.loads(result.output)
    assert {"swap", "threads", "turbo boost"} <= {finding["name"] for finding in findings}
    assert set(findings[0]) == {"name", "value", "ok", "advice", "checked", "verdict"}


@pytest.fixture
def fake_sysfs(tmp_path, monkeypatch):
    """Point the cpufreq paths at an empty directory; tests write the files they need."""
    monkeypatch.setattr(system, "CPU_SYSFS", tmp_path)
    monkeypatch.setattr(system, "INTEL_NO_TURBO", tmp_path / "intel_pstate" / "no_turbo")
    monkeypatch.setattr(system, "CPUFREQ_BOOST", tmp_path / "cpufreq" / "boost")

    def write(relative: str, text: str) -> None:
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")

    return write


def test_governor_and_turbo_not_readable(fake_sysfs):
    """Without the sysfs files the findings say so, and are neither ok nor a warning."""
    for finding in (system.governor_finding([0, 1]), system.turbo_finding()):
        assert finding.value == "not readable here"
        assert finding.verdict == "unknown"


def test_governor_read_per_cpu(fake_sysfs):
    """'performance' on every usable CPU is ok; any other governor is a warning that says how to fix it."""
    fake_sysfs("cpu0/cpufreq/scaling_governor", "performance")
    fake_sysfs("cpu1/cpufreq/scaling_governor", "performance")
    assert system.governor_finding([0, 1]).ok
    fake_sysfs("cpu1/cpufreq/scaling_governor", "powersave")
    finding = system.governor_finding([0, 1])
    assert not finding.ok
    assert "performance (CPUs 0)" in finding.value and "powersave (CPUs 1)" in finding.value
    assert "cpupower frequency-set -g performance" in finding.advice


@pytest.mark.parametrize(
    "relative, text, state",
    [("intel_pstate/no_turbo", "0", "on"), ("intel_pstate/no_turbo", "1", "off"), ("cpufreq/boost", "1", "on"), ("cpufreq/boost", "0", "off")],
)
def test_turbo_read_from_either_switch(fake_sysfs, relative, text, state):
    """intel_pstate's no_turbo and cpufreq's boost both tell; turbo on is a warning naming the switch to flip."""
    fake_sysfs(relative, text)
    finding = system.turbo_finding()
    assert finding.value == state
    assert finding.ok == (state == "off")
    if state == "on":
        assert relative in finding.advice


@pytest.mark.parametrize("flags, expected", [("fpu vme hypervisor avx2", True), ("fpu vme avx2", False), (None, None)])
def test_virtual_machine_from_the_hypervisor_flag(tmp_path, monkeypatch, flags, expected):
    """The cpuinfo 'hypervisor' flag marks a VM; no cpuinfo means we cannot tell."""
    cpuinfo = tmp_path / "cpuinfo"
    if flags is not None:
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    monkeypatch.setattr(system, "PROC_CPUINFO", cpuinfo)
    assert system.is_virtual_machine() is expected


def test_threads_against_usable_cpus(monkeypatch):
    """More threads than usable CPUs, a malformed count, or threads plus others' load beyond the CPUs are warnings."""
    for name in system.THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setitem(sys.modules, "torch", None)
    assert system.threads_finding(CPUS, other_cores=0.0).ok
    monkeypatch.setenv("OMP_NUM_THREADS", str(len(CPUS) + 1))
    assert "wait on each other" in system.threads_finding(CPUS, other_cores=0.0).advice
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")
    assert not system.threads_finding(CPUS, other_cores=0.0).ok
    monkeypatch.setenv("OMP_NUM_THREADS", str(len(CPUS)))
    crowded = system.threads_finding(CPUS, other_cores=1.0)
    assert not crowded.ok and "other processes busy" in crowded.advice


def test_cpu_list_text():
    """CPU ids are shown as ranges."""
    assert cpu_list_text([5, 0, 1, 2]) == "0-2,5"
    assert cpu_list_text([3]) == "3"
