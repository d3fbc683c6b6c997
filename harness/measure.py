"""Measurements taken identically for every cell: latency, throughput, size, parameters, FLOPs, memory."""

from __future__ import annotations

import io
import math
import time
import zlib
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from benchharness.representation import count_parameters  # noqa: F401  (part of the measuring API)
from benchharness.suite import MeasureSettings


BOOTSTRAP_CHUNK_ELEMENTS = 2_000_000


def bootstrap_median_ci(samples: list[float], confidence: float = 0.95, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """A percentile-bootstrap confidence interval of the median of ``samples`` (memory bounded by resampling in chunks)."""
    values = np.asarray(samples, dtype=float)
    if values.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    chunk = max(1, BOOTSTRAP_CHUNK_ELEMENTS // values.size)
    medians = np.concatenate(
        [np.median(rng.choice(values, size=(min(chunk, resamples - start), values.size), replace=True), axis=1) for start in range(0, resamples, chunk)]
    )
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(medians, [tail, 100.0 - tail])
    return float(low), float(high)


def summarise_latency(samples_ms: list[float], batch_size: int) -> dict[str, Any]:
    """p50/p90/p99/mean/std of latency samples, the median's 95% CI, and throughput."""
    values = np.asarray(samples_ms, dtype=float)
    low, high = bootstrap_median_ci(samples_ms)
    total_s = float(values.sum()) / 1000.0
    return {
        "batch_size": batch_size,
        "latency_p50_ms": float(np.percentile(values, 50)),
        "latency_p90_ms": float(np.percentile(values, 90)),
        "latency_p99_ms": float(np.percentile(values, 99)),
        "latency_mean_ms": float(values.mean()),
        "latency_std_ms": float(values.std(ddof=1)) if values.size > 1 else 0.0,
        "latency_p50_ci95_low_ms": low,
        "latency_p50_ci95_high_ms": high,
        "throughput_sps": batch_size * values.size / total_s if total_s > 0 else math.nan,
        "iterations": int(values.size),
        "samples_ms": [float(v) for v in values],
    }


def example_batch(inputs: torch.Tensor, batch_size: int) -> torch.Tensor:
    """A batch of real samples of the given size (repeating the available ones when too few)."""
    repeats = -(-batch_size // inputs.shape[0])
    return inputs.repeat(repeats, *([1] * (inputs.dim() - 1)))[:batch_size].contiguous()


@torch.inference_mode()
def time_inference(model: nn.Module, batch: torch.Tensor, settings: MeasureSettings, synchronize: Callable[[], None]) -> list[float]:
    """Latency samples in ms: warmup, then timed iterations until both minimum count and time are reached."""
    model.eval()
    for _ in range(settings.warmup):
        model(batch)
    synchronize()
    samples: list[float] = []
    spent = 0.0
    while len(samples) < settings.max_iterations and (len(samples) < settings.min_iterations or spent < settings.min_seconds):
        started = time.perf_counter()
        model(batch)
        synchronize()
        elapsed = time.perf_counter() - started
        spent += elapsed
        samples.append(elapsed * 1000.0)
    return samples


def serialize(model: nn.Module) -> bytes:
    """``torch.save(model.state_dict())`` as bytes: what a user ships."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


def serialized_size_bytes(model: nn.Module) -> int:
    """Bytes of the serialized state dict."""
    return len(serialize(model))


def size_metrics(model: nn.Module) -> dict[str, int]:
    """Serialized size, and its size after zlib compression (what zeros and low-entropy weights save)."""
    payload = serialize(model)
    return {"size_bytes": len(payload), "size_compressed_bytes": len(zlib.compress(payload, 1))}


@torch.inference_mode()
def count_flops(model: nn.Module, sample: torch.Tensor) -> int | None:
    """FLOPs of one forward pass of one sample (torch.utils.flop_counter), or None when it cannot count."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    try:
        with counter:
            model(sample[:1])
    except Exception:
        return None
    return int(counter.get_total_flops())
