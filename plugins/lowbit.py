"""Binary and ternary weights for the quantize technique: quantizers, straight-through fine-tuning and bit packing.

Binary weights are sign(w) times the mean absolute weight of their output channel
(XNOR-Net's weight binarisation, Rastegari et al. 2016); ternary weights are
{-a, 0, +a} per output channel with the threshold of Ternary Weight Networks
(Li et al. 2016). Activations stay float, so the model still runs PyTorch's float
kernels: a low-bit model is as fast as the float one, and only its stored size
shrinks. That size is measured from real packed buffers (1 bit per binary weight,
2 bits per ternary weight, plus an fp32 scale per output channel) that each
converted module keeps in ``benchharness_packed``.

This module imports torch; the quantize plugin imports it only when a method needs it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

LAYER_TYPES = (nn.Conv2d, nn.Linear)
NO_KERNELS = "PyTorch has no binary or ternary kernels: the weights are stored in float tensors and run through the float kernels, so only the stored (packed) size shrinks"


def _channel_dims(weight: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(1, weight.dim()))


def binarize(weight: torch.Tensor) -> torch.Tensor:
    """sign(w) times the mean |w| of each output channel (zero counts as positive)."""
    alpha = weight.abs().mean(dim=_channel_dims(weight), keepdim=True)
    return torch.where(weight >= 0, alpha, -alpha)


def ternarize(weight: torch.Tensor, threshold: float = 0.7) -> torch.Tensor:
    """{-a, 0, +a} per output channel: zero where |w| <= threshold x mean |w|, a the mean |w| of the others."""
    dims = _channel_dims(weight)
    magnitude = weight.abs()
    kept = magnitude > threshold * magnitude.mean(dim=dims, keepdim=True)
    alpha = (magnitude * kept).sum(dim=dims, keepdim=True) / kept.sum(dim=dims, keepdim=True).clamp(min=1)
    return torch.sign(weight) * kept * alpha


class StraightThrough(nn.Module):
    """A weight parametrization: the forward pass sees the quantized weight, the gradient reaches the latent float weight unchanged.

    The plain identity estimator (no clipping to |w| <= 1 as in BinaryConnect) is used: the
    latent weights of a trained network are far below 1, where clipping changes nothing.
    """

    def __init__(self, method: str, threshold: float):
        super().__init__()
        self.method, self.threshold = method, threshold

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        quantized = quantize_weight(weight, self.method, self.threshold)
        return weight + (quantized - weight).detach()


def quantize_weight(weight: torch.Tensor, method: str, threshold: float = 0.7) -> torch.Tensor:
    """The binary or ternary version of ``weight``."""
    return binarize(weight) if method == "binary" else ternarize(weight, threshold)


def pack(weight: torch.Tensor, method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes, scales): 1 bit (binary) or 2 bits (ternary: 0 zero, 1 plus, 2 minus) per weight, packed per output channel into uint8, and each channel's fp32 scale."""
    rows = weight.detach().float().cpu().reshape(weight.shape[0], -1).numpy()
    scales = np.abs(rows).max(axis=1).astype(np.float32)
    if method == "binary":
        codes = np.packbits(rows >= 0, axis=1)
    else:
        symbols = np.where(rows > 0, 1, np.where(rows < 0, 2, 0)).astype(np.uint8)
        padded = np.zeros((rows.shape[0], -(-rows.shape[1] // 4) * 4), dtype=np.uint8)
        padded[:, : rows.shape[1]] = symbols
        quads = padded.reshape(rows.shape[0], -1, 4)
        codes = quads[:, :, 0] | (quads[:, :, 1] << 2) | (quads[:, :, 2] << 4) | (quads[:, :, 3] << 6)
    return torch.from_numpy(np.ascontiguousarray(codes, dtype=np.uint8)), torch.from_numpy(scales)


def unpack(codes: torch.Tensor, scales: torch.Tensor, shape: tuple[int, ...], method: str) -> torch.Tensor:
    """The weight of ``shape`` that :func:`pack` packed."""
    count = int(np.prod(shape[1:]))
    array = codes.numpy()
    if method == "binary":
        signs = np.unpackbits(array, axis=1, count=count).astype(np.float32) * 2 - 1
    else:
        symbols = np.stack([(array >> shift) & 3 for shift in (0, 2, 4, 6)], axis=2).reshape(array.shape[0], -1)[:, :count]
        signs = np.where(symbols == 1, 1.0, np.where(symbols == 2, -1.0, 0.0)).astype(np.float32)
    return torch.from_numpy(signs * scales.numpy()[:, None]).reshape(shape)


def convertible_layers(model: nn.Module, keep_first_last: bool) -> list[tuple[str, nn.Module]]:
    """The Conv2d and Linear layers to convert, in definition order; without the first and the last when ``keep_first_last``."""
    layers = [(name, module) for name, module in model.named_modules() if isinstance(module, LAYER_TYPES)]
    return layers[1:-1] if keep_first_last else layers


def attach_straight_through(layers: list[tuple[str, nn.Module]], method: str, threshold: float) -> None:
    """Make every layer's forward pass use its quantized weight, with straight-through gradients, for fine-tuning."""
    for _, module in layers:
        parametrize.register_parametrization(module, "weight", StraightThrough(method, threshold))


def freeze(layers: list[tuple[str, nn.Module]], method: str, threshold: float) -> dict[str, Any]:
    """Replace every layer's weight by its quantized values, pack them, and mark the layer; the layers' figures.

    Each layer gets ``benchharness_packed`` (its weight's packed codes and scales, which
    storage metrics count instead of the float weight), ``benchharness_lowbit`` (the method)
    and ``benchharness_speedup`` (no speedup, and why).
    """
    fp32_bytes = packed_bytes = weights = 0
    for _, module in layers:
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        with torch.no_grad():
            module.weight.copy_(quantize_weight(module.weight, method, threshold))
        codes, scales = pack(module.weight, method)
        module.benchharness_packed = {"weight": [codes, scales]}
        module.benchharness_lowbit = method
        module.benchharness_speedup = (False, NO_KERNELS)
        weights += module.weight.numel()
        fp32_bytes += module.weight.numel() * 4
        packed_bytes += codes.numel() * codes.element_size() + scales.numel() * scales.element_size()
    return {
        "layers": len(layers),
        "weights": weights,
        "fp32_bytes": fp32_bytes,
        "packed_bytes": packed_bytes,
        "bits_per_weight": 8 * packed_bytes / weights if weights else None,
    }
