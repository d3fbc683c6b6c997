"""Automatic mixed precision: torch.autocast for training and inference (bf16, or fp16 with a GradScaler on CUDA)."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field

from benchharness import StrictConfig, Technique, hookimpl

DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


class AmpConfig(StrictConfig):
    """Parameters of the amp technique."""

    dtype: Literal["bf16", "fp16"] = Field("bf16", description="Autocast dtype: bf16 (CPU and recent GPUs) or fp16 (CUDA, with a GradScaler).")


def __getattr__(name: str):
    """``Autocast`` is built on first use, so importing this plugin does not import torch (pickle finds it here)."""
    if name == "Autocast":
        return _autocast_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@lru_cache(maxsize=1)
def _autocast_class():
    import torch
    from torch import nn

    class Autocast(nn.Module):
        """Runs the wrapped model's forward pass under torch.autocast and returns float32 logits."""

        def __init__(self, inner, device_type: str, dtype):
            super().__init__()
            self.inner = inner
            self.device_type = device_type
            self.dtype = dtype
            self.benchharness_speedup = (
                True,
                f"autocast {str(dtype).replace('torch.', '')}: faster only where the device has fast kernels for it "
                "(tensor cores; AMX or AVX512-BF16 on CPU) and layers are large enough to amortise the casts",
            )

        def forward(self, x):
            with torch.autocast(self.device_type, dtype=self.dtype):
                return self.inner(x).float()

    Autocast.__module__, Autocast.__qualname__ = __name__, "Autocast"
    return Autocast


def autocast_module(model, device_type: str, dtype):
    """``model`` wrapped so that every forward pass runs under torch.autocast and returns float32 logits."""
    return _autocast_class()(model, device_type, dtype)


class Amp(Technique):
    """An execution mode: training (when it is the first step) and inference run under torch.autocast."""

    NAME = "amp"
    DESCRIPTION = "mixed precision via torch.autocast: bf16, or fp16 with a GradScaler on CUDA"
    TRAINS = True

    Config = AmpConfig

    def unsupported_reason(self, config, device):
        import torch

        if device.DEVICE == "cpu" and config.dtype == "fp16":
            return "fp16 autocast is for CUDA; on CPU use dtype = \"bf16\""
        if device.DEVICE == "cuda" and config.dtype == "bf16" and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
            return f"this GPU ({torch.cuda.get_device_name(0)}) has no bf16 support; use dtype = \"fp16\""
        if device.DEVICE not in ("cpu", "cuda"):
            return f"autocast is not wired for device {device.DEVICE!r}"
        return None

    def cacheable(self, config):
        return True

    def _dtype(self, config):
        import torch

        return getattr(torch, DTYPES[config.dtype])

    def apply(self, model, config, context):
        dtype = self._dtype(config)
        context.trainer.set_autocast(dtype)
        if not context.model_trained:
            context.trainer.fit(model, context.data)
        context.notes["amp_dtype"] = str(dtype).replace("torch.", "")
        context.notes["amp_grad_scaler"] = config.dtype == "fp16"
        return autocast_module(model, context.torch_device.type, dtype)

    def cache_state(self, model, config):
        return {"state_dict": model.inner.state_dict()}

    def restore(self, model, config, context, state):
        model.load_state_dict(state["state_dict"])
        dtype = self._dtype(config)
        context.trainer.set_autocast(dtype)
        return autocast_module(model, context.torch_device.type, dtype)


@hookimpl
def register_techniques(register):
    """Register the amp technique."""
    register(Amp())
