"""The CUDA probe and device: GPU facts through NVML (pynvml), CUDA synchronisation and peak memory."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Any

from benchharness import Probe, hookimpl

SAMPLE_INTERVAL_S = 0.02
THROTTLE_REASONS = {
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
}


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


class NvmlSampler:
    """Samples one GPU through NVML in a background thread: power, utilisation, SM clock, temperature, throttling."""

    def __init__(self, pynvml: Any, index: int = 0, interval_s: float = SAMPLE_INTERVAL_S):
        self.nvml = pynvml
        self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        self.interval_s = interval_s
        self.samples: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="nvml-sampler", daemon=True)

    def _energy_mj(self) -> float | None:
        try:
            return float(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))
        except self.nvml.NVMLError:
            return None

    def _throttle_bits(self) -> int:
        read = getattr(self.nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or self.nvml.nvmlDeviceGetCurrentClocksThrottleReasons
        return int(read(self.handle))

    def _read(self) -> dict[str, float]:
        nvml, handle = self.nvml, self.handle
        sample: dict[str, float] = {"t": time.perf_counter()}
        readings = {
            "power_w": lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,
            "util_pct": lambda: nvml.nvmlDeviceGetUtilizationRates(handle).gpu,
            "sm_clock_mhz": lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM),
            "temperature_c": lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU),
            "throttle_bits": self._throttle_bits,
        }
        for key, read in readings.items():
            try:
                sample[key] = float(read())
            except nvml.NVMLError:
                pass
        return sample

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self._read())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "NvmlSampler":
        self._energy_start = self._energy_mj()
        self._started = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(self._read())
        self._energy_end = self._energy_mj()
        self._ended = time.perf_counter()

    def summary(self) -> dict[str, Any]:
        """Aggregates of the samples, energy in joules and how it was obtained, and whether the GPU throttled."""
        def values(key: str) -> list[float]:
            return [sample[key] for sample in self.samples if key in sample]

        summary: dict[str, Any] = {"gpu_samples": len(self.samples), "gpu_sampled_s": self._ended - self._started}
        for key, name in (("power_w", "gpu_power"), ("util_pct", "gpu_util"), ("sm_clock_mhz", "gpu_sm_clock"), ("temperature_c", "gpu_temperature")):
            found = values(key)
            if found:
                unit = key.rsplit("_", 1)[1]
                summary[f"{name}_mean_{unit}"] = sum(found) / len(found)
                summary[f"{name}_max_{unit}"] = max(found)
        if self._energy_start is not None and self._energy_end is not None:
            summary["energy_j"] = (self._energy_end - self._energy_start) / 1000.0
            summary["energy_method"] = "nvml_total_energy_counter"
        else:
            timed = [(sample["t"], sample["power_w"]) for sample in self.samples if "power_w" in sample]
            if len(timed) >= 2:
                summary["energy_j"] = sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in zip(timed, timed[1:]))
                summary["energy_method"] = "integrated_power_samples"
        bits = 0
        for found in values("throttle_bits"):
            bits |= int(found)
        reasons = [name for bit, name in THROTTLE_REASONS.items() if bits & bit]
        summary["gpu_throttle_reasons"] = reasons
        summary["gpu_throttled"] = bool(reasons)
        return summary


class CudaProbe(Probe):
    """Describes NVIDIA GPUs through NVML; the ``cuda`` device."""

    NAME = "cuda"
    DESCRIPTION = "GPU name, driver, memory, power limit and clocks through NVML (pynvml)"
    DEVICE = "cuda"
    PEAK_MEMORY_METHOD = "cuda_max_memory_allocated"

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

    @contextmanager
    def sample(self):
        pynvml, reason = self._nvml()
        results: dict[str, Any] = {}
        if pynvml is None:
            results["gpu_sampling"] = reason
            yield results
            return
        try:
            with NvmlSampler(pynvml) as sampler:
                yield results
            results.update(sampler.summary())
        finally:
            pynvml.nvmlShutdown()


@hookimpl
def register_probes(register):
    """Register the CUDA probe."""
    register(CudaProbe())
