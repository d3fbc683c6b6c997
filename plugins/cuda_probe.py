"""The CUDA probe and device: GPU facts through NVML (pynvml), CUDA synchronisation and peak memory."""

from __future__ import annotations

from typing import Any

from benchharness import Probe, hookimpl


def _decode(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def nvml_describe(pynvml: Any, index: int = 0) -> dict[str, Any]:
    """Static facts of GPU ``index`` read through an initialised NVML."""
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
    facts: dict[str, Any] = {
        "name": _decode(pynvml.nvmlDeviceGetName(handle)),
        "driver": _decode(pynvml.nvmlSystemGetDriverVersion()),
        "memory_bytes": int(memory.total),
    }
    optional = {
        "power_limit_w": lambda: pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0,
        "sm_clock_max_mhz": lambda: pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM),
        "memory_clock_max_mhz": lambda: pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_MEM),
        "cuda_driver_version": lambda: pynvml.nvmlSystemGetCudaDriverVersion(),
    }
    for key, read in optional.items():
        try:
            facts[key] = read()
        except pynvml.NVMLError:
            facts[key] = None
    return facts


class CudaProbe(Probe):
    """Describes NVIDIA GPUs through NVML; the ``cuda`` device."""

    NAME = "cuda"
    DESCRIPTION = "GPU name, driver, memory, power limit and clocks through NVML (pynvml)"
    DEVICE = "cuda"

    def _nvml(self) -> tuple[Any, str | None]:
        """The initialised pynvml module (the caller shuts it down), or None and why NVML cannot be used."""
        try:
            import pynvml
        except ImportError as error:
            return None, f"NVML unavailable: pynvml cannot be imported ({error})"
        try:
            pynvml.nvmlInit()
        except Exception as error:
            return None, f"NVML unavailable: {type(error).__name__}: {error}"
        try:
            count = pynvml.nvmlDeviceGetCount()
        except Exception as error:
            reason = f"NVML cannot count GPUs: {error}"
        else:
            if count >= 1:
                return pynvml, None
            reason = "NVML found no GPU"
        pynvml.nvmlShutdown()
        return None, reason

    def _nvml_reason(self) -> str | None:
        """Why NVML cannot be used, or None (leaving NVML shut down either way)."""
        pynvml, reason = self._nvml()
        if pynvml is not None:
            pynvml.nvmlShutdown()
        return reason

    def unavailable_reason(self):
        import torch

        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            nvml_reason = self._nvml_reason()
            return f"no CUDA GPU visible to torch {torch.__version__} ({build}); {nvml_reason or 'NVML sees a GPU'}"
        return None

    def describe(self):
        import torch

        facts: dict[str, Any] = {"torch_cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None}
        pynvml, reason = self._nvml()
        if reason:
            facts["available"] = False
            facts["reason"] = reason
            return facts
        try:
            facts.update(nvml_describe(pynvml, 0))
            facts["gpu_count"] = pynvml.nvmlDeviceGetCount()
        finally:
            pynvml.nvmlShutdown()
        if torch.cuda.is_available():
            facts["compute_capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
        facts["available"] = torch.cuda.is_available()
        if not facts["available"]:
            facts["reason"] = self.unavailable_reason()
        return facts

    def synchronize(self):
        import torch

        torch.cuda.synchronize()

    def reset_peak_memory(self):
        import torch

        torch.cuda.reset_peak_memory_stats()

    def peak_memory_bytes(self):
        import torch

        return int(torch.cuda.max_memory_allocated())


@hookimpl
def register_probes(register):
    """Register the CUDA probe."""
    register(CudaProbe())
