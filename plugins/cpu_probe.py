"""The CPU probe and device: psutil facts, instruction-set flags, torch threads, peak RSS."""

from __future__ import annotations

import platform
import resource
import sys
from pathlib import Path

from benchharness import Probe, hookimpl

ISA_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c",
    "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni",
    "amx_tile", "amx_int8", "amx_bf16", "amx_fp16",
    "asimd", "asimdhp", "asimddp", "sve", "sve2", "i8mm", "bf16",
)
PROC = Path("/proc")


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields from /proc/cpuinfo (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        text = (PROC / "cpuinfo").read_text()
    except OSError:
        return fields
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def isa_flags(cpuinfo: dict[str, str]) -> list[str]:
    """The instruction-set extensions that matter for deep-learning kernels, as the CPU reports them."""
    reported = set((cpuinfo.get("flags") or cpuinfo.get("Features") or "").split())
    return [flag for flag in ISA_FLAGS if flag in reported]


class CpuProbe(Probe):
    """Describes the CPU through psutil and /proc/cpuinfo; the ``cpu`` device."""

    NAME = "cpu"
    DESCRIPTION = "CPU model, cores, frequency, memory, instruction sets and torch's thread settings (psutil)"
    DEVICE = "cpu"

    def describe(self):
        import psutil
        import torch

        info = _cpuinfo()
        frequency = psutil.cpu_freq()
        return {
            "model": info.get("model name") or platform.processor() or platform.machine(),
            "architecture": platform.machine(),
            "physical_cores": psutil.cpu_count(logical=False),
            "logical_cores": psutil.cpu_count(logical=True),
            "frequency_max_mhz": (frequency.max or frequency.current or None) if frequency else None,
            "memory_bytes": psutil.virtual_memory().total,
            "isa": isa_flags(info),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(),
        }

    def reset_peak_memory(self):
        try:
            (PROC / "self" / "clear_refs").write_text("5")
        except OSError:
            pass

    def peak_memory_bytes(self):
        try:
            for line in (PROC / "self" / "status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        unit = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit


@hookimpl
def register_probes(register):
    """Register the CPU probe."""
    register(CpuProbe())
