"""Measurements taken identically for every cell: latency samples, size, parameters, FLOPs.

Latency statistics over interleaved rounds live in :mod:`benchharness.rounds`, their CIs in :mod:`benchharness.stats`.
"""

from __future__ import annotations

import io
import math
import random
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


def time_inference(model: nn.Module, batch: torch.Tensor, settings: MeasureSettings, synchronize: Callable[[], None]) -> list[float]:
    """Latency samples in ms of one model: warmup, then timed iterations until both minimum count and time are reached."""
    return time_interleaved({"model": model}, {"model": batch}, settings, synchronize)["model"]


@torch.inference_mode()
def time_interleaved(
    models: dict[str, nn.Module], batches: dict[str, torch.Tensor], settings: MeasureSettings, synchronize: Callable[[], None]
) -> dict[str, list[float]]:
    """Latency samples in ms of several models, timed in turns so that the machine's drift touches them alike.

    Every model first runs its ``warmup`` iterations. Then the models take turns: a turn times
    one model's iterations until ``interleave_ms`` have passed or the model is done (at least
    one iteration). Every cycle of turns comes in a new random order (seeded, so repeatable):
    a model that followed a similar one would find its buffers warm in the caches, and fixed
    neighbours would turn that into a bias of several percent. A model is done once
    it has ``min_iterations`` samples and ``min_seconds`` of them, or ``max_iterations``; timing
    ends after the cycle in which all are done. A model that is done keeps a one-iteration turn
    (so the others keep their neighbours) unless it reached ``max_iterations``.
    """
    names = list(models)
    for name in names:
        models[name].eval()
        for _ in range(settings.warmup):
            models[name](batches[name])
    synchronize()
    samples: dict[str, list[float]] = {name: [] for name in names}
    spent = dict.fromkeys(names, 0.0)
    turn_s = settings.interleave_ms / 1000.0

    def done(name: str) -> bool:
        count = len(samples[name])
        return count >= settings.max_iterations or (count >= settings.min_iterations and spent[name] >= settings.min_seconds)

    shuffler = random.Random(0)
    order = list(names)
    while not all(done(name) for name in names):
        shuffler.shuffle(order)
        for name in order:
            model, batch, times = models[name], batches[name], samples[name]
            turn_started = time.perf_counter()
            while len(times) < settings.max_iterations:
                started = time.perf_counter()
                model(batch)
                synchronize()
                ended = time.perf_counter()
                times.append((ended - started) * 1000.0)
                spent[name] += ended - started
                if ended - turn_started >= turn_s or done(name):
                    break
    return samples


def serialize(model: nn.Module) -> bytes:
    """``torch.save(model.state_dict())`` as bytes: what a user ships."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


def serialized_size_bytes(model: nn.Module) -> int:
    """Bytes of the serialized state dict."""
    return len(serialize(model))


def size_metrics(model: nn.Module) -> dict[str, Any]:
    """Serialized size, its size after zlib compression (what zeros and low-entropy weights save), and :func:`storage_metrics`.

    A model that is deployed in another format (an ONNX file) gives its bytes and storage
    figures from ``benchharness_deployed() -> (bytes, {"size_packed_bytes", "bits_per_weight"})``.
    """
    from benchharness.representation import declared_attribute, eager_view

    deployed = declared_attribute(model, "benchharness_deployed")
    if callable(deployed):
        payload, storage = deployed()
    else:
        eager = eager_view(model)
        payload, storage = serialize(eager), storage_metrics(eager)
    return {"size_bytes": len(payload), "size_compressed_bytes": len(zlib.compress(payload, 1)), **storage}


def _tensor_bytes(tensor: torch.Tensor) -> int:
    """Bytes a tensor stores; a tensor subclass (torchao's quantized weights) counts the inner tensors it is made of."""
    from benchharness.representation import inner_tensors

    return sum(inner.numel() * inner.element_size() for inner in inner_tensors(tensor))


def storage_metrics(model: nn.Module) -> dict[str, Any]:
    """The weights' bytes as a deployable format stores them (``size_packed_bytes``) and ``bits_per_weight`` (8 x those bytes per weight).

    Every parameter counts at its element size, int8 modules' packed weights and biases at
    theirs; a module that stores a parameter in packed form names the packed tensors in a
    ``benchharness_packed = {parameter name: [tensors]}`` attribute, and those count instead
    (binary weights: one bit each, plus a scale per channel). fp32 weights give 32 bits per weight.
    """
    from benchharness.representation import _packed

    total_bytes = weights = 0
    for module in model.modules():
        packed = getattr(module, "benchharness_packed", None) or {}
        for name, parameter in module.named_parameters(recurse=False):
            weights += parameter.numel()
            total_bytes += sum(_tensor_bytes(tensor) for tensor in packed[name]) if name in packed else _tensor_bytes(parameter)
        if _packed(module):
            for tensor in module._weight_bias():
                if tensor is not None:
                    weights += tensor.numel()
                    total_bytes += _tensor_bytes(tensor)
    return {"size_packed_bytes": total_bytes, "bits_per_weight": 8 * total_bytes / weights if weights else None}


@torch.inference_mode()
def count_flops(model: nn.Module, sample: torch.Tensor) -> int | None:
    """FLOPs of one forward pass of one sample (torch.utils.flop_counter), or None when it cannot count.

    A wrapper (a compiled model, an ONNX Runtime session) is counted through its ``benchharness_eager`` module.
    """
    from torch.utils.flop_counter import FlopCounterMode

    from benchharness.representation import eager_view

    counter, model = FlopCounterMode(display=False), eager_view(model)
    try:
        with counter:
            model(sample[:1])
    except Exception:
        return None
    return int(counter.get_total_flops())
