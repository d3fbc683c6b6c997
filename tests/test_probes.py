"""The CPU and CUDA probes: facts they describe, ISA flags, peak memory, and NVML absent, faked or real."""

from __future__ import annotations

import sys
import types
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from benchharness.plugins.cpu_probe import ISA_FLAGS, isa_flags
from benchharness.plugins.cuda_probe import nvml_describe

MIB = 2**20
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a CUDA GPU")


def test_cpu_probe_describe(host):
    """describe() has the model, cores, memory, ISA flags and torch's threads."""
    probe = host.probes["cpu"]
    assert probe.DEVICE == "cpu"
    assert probe.unavailable_reason() is None
    facts = probe.describe()
    assert isinstance(facts["model"], str) and facts["model"]
    assert isinstance(facts["logical_cores"], int) and facts["logical_cores"] >= 1
    assert facts["physical_cores"] is None or 1 <= facts["physical_cores"] <= facts["logical_cores"]
    assert isinstance(facts["memory_bytes"], int) and facts["memory_bytes"] > 0
    assert isinstance(facts["isa"], list)
    assert all(isinstance(flag, str) and flag in ISA_FLAGS for flag in facts["isa"])
    assert facts["torch_threads"] == torch.get_num_threads()
    assert facts["torch_interop_threads"] == torch.get_num_interop_threads()


def test_isa_flags_from_x86_cpuinfo():
    """Known flags are kept in the probe's order; unknown ones dropped."""
    assert isa_flags({"flags": "avx2 avx512f amx_int8 foo"}) == ["avx2", "avx512f", "amx_int8"]
    assert isa_flags({"flags": "amx_int8 foo avx512f avx2"}) == ["avx2", "avx512f", "amx_int8"]


def test_isa_flags_from_arm_cpuinfo_and_nothing():
    """ARM's 'Features' field is read too; no field gives no flags."""
    assert isa_flags({"Features": "fp asimd sve i8mm"}) == ["asimd", "sve", "i8mm"]
    assert isa_flags({}) == []


def test_cpu_peak_memory_grows_with_an_allocation(host):
    """After a reset, touching a 256 MiB array raises the peak by about that much."""
    probe = host.probes["cpu"]
    probe.reset_peak_memory()
    before = probe.peak_memory_bytes()
    assert isinstance(before, int) and before > 0
    array = np.ones(256 * MIB, dtype=np.uint8)
    try:
        after = probe.peak_memory_bytes()
    finally:
        del array
    assert isinstance(after, int)
    assert after >= before + 200 * MIB


def test_cpu_peak_memory_grows_with_a_tensor(host):
    """The same holds for a torch tensor."""
    probe = host.probes["cpu"]
    probe.reset_peak_memory()
    before = probe.peak_memory_bytes()
    tensor = torch.ones(64 * MIB)  # 64 Mi float32 = 256 MiB
    try:
        after = probe.peak_memory_bytes()
    finally:
        del tensor
    assert after >= before + 200 * MIB


def test_probes_say_what_their_peak_memory_counts(host):
    """The CPU probe's peak is the process's high-water mark (no method); the CUDA probe's is its allocator's."""
    assert host.probes["cpu"].PEAK_MEMORY_METHOD is None
    assert host.probes["cuda"].PEAK_MEMORY_METHOD == "cuda_max_memory_allocated"


@pytest.fixture
def without_pynvml(monkeypatch):
    """Make ``import pynvml`` fail, as on a machine without the package."""
    monkeypatch.setitem(sys.modules, "pynvml", None)


def test_cuda_probe_describes_missing_nvml(host, without_pynvml):
    """Without pynvml, describe() says NVML is unavailable and why, without raising."""
    facts = host.probes["cuda"].describe()
    assert facts["available"] is False
    assert "NVML unavailable" in facts["reason"]
    assert "pynvml cannot be imported" in facts["reason"]
    assert facts["torch_cuda"] == torch.version.cuda


@no_cuda
def test_cuda_probe_unavailable_without_nvml(host, without_pynvml):
    """unavailable_reason() names the torch build and the missing NVML."""
    reason = host.probes["cuda"].unavailable_reason()
    assert reason is not None
    assert "no CUDA GPU visible to torch" in reason
    assert torch.__version__ in reason
    assert "NVML unavailable: pynvml cannot be imported" in reason


class FakeNVMLError(Exception):
    """Stands in for pynvml.NVMLError."""


def fake_pynvml(count: int = 1, init_error: Exception | None = None, power_error: bool = False) -> types.ModuleType:
    """A pynvml stand-in describing one fake GPU; ``calls`` records init and shutdown."""
    module = types.ModuleType("pynvml")
    module.calls = []
    module.NVMLError = FakeNVMLError
    module.NVML_CLOCK_SM = 1
    module.NVML_CLOCK_MEM = 2

    def nvmlInit():
        module.calls.append("init")
        if init_error:
            raise init_error

    def nvmlShutdown():
        module.calls.append("shutdown")

    def nvmlDeviceGetEnforcedPowerLimit(handle):
        if power_error:
            raise FakeNVMLError("not supported")
        return 300_000

    module.nvmlInit = nvmlInit
    module.nvmlShutdown = nvmlShutdown
    module.nvmlDeviceGetCount = lambda: count
    module.nvmlDeviceGetHandleByIndex = lambda index: ("handle", index)
    module.nvmlDeviceGetName = lambda handle: b"Fake GPU 80GB"
    module.nvmlSystemGetDriverVersion = lambda: "550.54.15"
    module.nvmlDeviceGetMemoryInfo = lambda handle: SimpleNamespace(total=80 * 2**30, free=79 * 2**30, used=2**30)
    module.nvmlDeviceGetEnforcedPowerLimit = nvmlDeviceGetEnforcedPowerLimit
    module.nvmlDeviceGetMaxClockInfo = lambda handle, clock: {1: 1980, 2: 2619}[clock]
    module.nvmlSystemGetCudaDriverVersion = lambda: 12040
    return module


def test_nvml_describe_reads_the_fake_gpu():
    """Name (decoded), driver, memory, power limit in W, clocks and CUDA driver version."""
    facts = nvml_describe(fake_pynvml(), 0)
    assert facts == {
        "name": "Fake GPU 80GB",
        "driver": "550.54.15",
        "memory_bytes": 80 * 2**30,
        "power_limit_w": 300.0,
        "sm_clock_max_mhz": 1980,
        "memory_clock_max_mhz": 2619,
        "cuda_driver_version": 12040,
    }


def test_nvml_describe_tolerates_unsupported_optional_facts():
    """An optional reading that raises NVMLError is recorded as None."""
    facts = nvml_describe(fake_pynvml(power_error=True), 0)
    assert facts["power_limit_w"] is None
    assert facts["name"] == "Fake GPU 80GB"


def test_cuda_probe_describe_with_fake_nvml(host, monkeypatch):
    """Through a working NVML, describe() reports the GPU and shuts NVML down."""
    pynvml = fake_pynvml()
    monkeypatch.setitem(sys.modules, "pynvml", pynvml)
    facts = host.probes["cuda"].describe()
    assert facts["name"] == "Fake GPU 80GB"
    assert facts["memory_bytes"] == 80 * 2**30
    assert facts["power_limit_w"] == 300.0
    assert facts["gpu_count"] == 1
    assert "shutdown" in pynvml.calls
    assert facts["available"] is torch.cuda.is_available()
    if not torch.cuda.is_available():
        assert "no CUDA GPU visible to torch" in facts["reason"]


def test_cuda_probe_with_failing_nvml_init(host, monkeypatch):
    """An NVML that fails to initialise is reported with the error's type and message."""
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(init_error=FakeNVMLError("Driver Not Loaded")))
    facts = host.probes["cuda"].describe()
    assert facts["available"] is False
    assert facts["reason"] == "NVML unavailable: FakeNVMLError: Driver Not Loaded"


def test_cuda_probe_with_no_gpu_in_nvml(host, monkeypatch):
    """An NVML that counts no GPU is reported as such."""
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(count=0))
    facts = host.probes["cuda"].describe()
    assert facts["available"] is False
    assert facts["reason"] == "NVML found no GPU"


@no_cuda
def test_cuda_probe_with_real_pynvml_and_no_gpu(host):
    """With the real pynvml but no GPU (driver), the probe reports unavailable with a reason."""
    pytest.importorskip("pynvml")
    probe = host.probes["cuda"]
    reason = probe.unavailable_reason()
    assert isinstance(reason, str) and "no CUDA GPU visible to torch" in reason
    facts = probe.describe()
    assert facts["available"] is False
    assert isinstance(facts["reason"], str) and facts["reason"]
    assert host.skip_reason(SimpleNamespace(device="cuda", steps=[])).startswith("device 'cuda' unavailable: ")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_probe_on_a_real_gpu(host):
    """On a GPU the probe names it, synchronises, and tracks peak allocated memory."""
    probe = host.probes["cuda"]
    assert probe.unavailable_reason() is None
    facts = probe.describe()
    assert facts["available"] is True
    assert isinstance(facts["name"], str) and facts["name"]
    assert facts["memory_bytes"] > 0
    assert facts["gpu_count"] >= 1
    probe.synchronize()
    probe.reset_peak_memory()
    tensor = torch.ones(64 * MIB // 4, device="cuda")  # 64 MiB
    probe.synchronize()
    assert probe.peak_memory_bytes() >= 64 * MIB
    del tensor


@pytest.mark.parametrize("count", [0, 1])
def test_nvml_is_always_shut_down(host, monkeypatch, count):
    """Every nvmlInit is matched by an nvmlShutdown, whatever the probe found."""
    pynvml = fake_pynvml(count=count)
    monkeypatch.setitem(sys.modules, "pynvml", pynvml)
    probe = host.probes["cuda"]
    probe.describe()
    probe.unavailable_reason()
    assert pynvml.calls.count("init") == pynvml.calls.count("shutdown") >= 1
