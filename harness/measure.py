"""Measurements taken identically for every cell: latency samples, size, parameters, FLOPs.

Latency statistics over interleaved rounds live in :mod:`benchharness.rounds`, their CIs in :mod:`benchharness.stats`.
"""

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
