"""Quantization: int8 dynamic, static (FX graph mode) and quantization-aware training; torchao and PT2E; fp16/bf16 casts; binary and ternary weights.

Every method sits behind one interface (:data:`METHODS`). torch.ao.quantization's
FX mode is deprecated in recent torch releases but works; its warnings are kept
out of the user's output. Its successors come from torchao (an optional extra):
``quantize_`` configs for Linear layers on CPU and CUDA, and PT2E static int8
(:mod:`benchharness.plugins.torchao_methods`).
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from functools import lru_cache
from typing import Callable, Literal

from pydantic import Field

from benchharness import StrictConfig, Technique, hookimpl

PRELOAD = ("torch.ao.quantization", "torch.ao.quantization.quantize_fx")
INT8_METHODS = ("dynamic", "static", "qat")
LOWBIT_METHODS = ("binary", "ternary")
TORCHAO_METHODS = ("int8_weight_only", "int8_dynamic", "int4_weight_only", "float8", "pt2e_static")
CAST_DTYPES = {"fp16": "float16", "bf16": "bfloat16"}


class QuantizeConfig(StrictConfig):
    """Parameters of the quantize technique."""

    method: Literal[
        "dynamic", "static", "qat", "fp16", "bf16", "binary", "ternary", "int8_weight_only", "int8_dynamic", "int4_weight_only", "float8", "pt2e_static"
    ] = Field(
        "dynamic",
        description="dynamic: int8 Linear/LSTM weights, activations quantized on the fly; static: int8 post-training (FX graph mode); "
        "qat: quantization-aware fine-tuning, then int8; fp16/bf16: weights and activations cast; "
        "binary: Conv/Linear weights sign(w) x per-channel mean |w| (XNOR-Net); ternary: {-a, 0, +a} per channel (TWN); "
        "torchao (Linear layers only): int8_weight_only, int8_dynamic (int8 activations and weights), int4_weight_only (CUDA), "
        "float8 (GPUs of compute capability 8.9+); pt2e_static: PT2E static int8 with X86InductorQuantizer, run under torch.compile (CPU).",
    )
    backend: Literal["x86", "fbgemm", "qnnpack"] = Field("x86", description="int8 kernel backend (static and qat).")
    calibration_batches: int = Field(8, ge=1, le=100_000, description="static and pt2e_static: training batches run through the observers.")
    qat_epochs: int = Field(1, ge=1, le=10_000, description="qat: epochs of quantization-aware fine-tuning.")
    keep_first_last: bool = Field(True, description="binary/ternary: keep the first and the last Conv/Linear layer in full precision.")
    finetune_epochs: int = Field(0, ge=0, le=10_000, description="binary/ternary: epochs of fine-tuning with a straight-through estimator (0: none).")
    ternary_threshold: float = Field(0.7, gt=0, lt=10, description="ternary: a weight is zero when |w| is at most this times its channel's mean |w|.")


@contextmanager
def quiet_deprecations():
    """Silence torch.ao.quantization's deprecation warnings (they are about the API, not the user's suite)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization.*")
        warnings.filterwarnings("ignore", message=".*deprecated.*")
        warnings.filterwarnings("ignore", message="must run observer before calling calculate_qparams")
        yield


def _dynamic(model, config, context):
    import torch
    from torch import nn

    return torch.ao.quantization.quantize_dynamic(model.cpu().eval(), {nn.Linear, nn.LSTM}, dtype=torch.qint8)


def _prepare(model, config, context, for_training: bool):
    """The FX-prepared model: observers for static quantization, fake quantization for QAT."""
    import torch
    from torch.ao.quantization import get_default_qat_qconfig_mapping, get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_fx, prepare_qat_fx

    torch.backends.quantized.engine = config.backend
    example = (context.data.x_train[:1].cpu(),)
    if for_training:
        return prepare_qat_fx(model.cpu().train(), get_default_qat_qconfig_mapping(config.backend), example)
    return prepare_fx(model.cpu().eval(), get_default_qconfig_mapping(config.backend), example)


def _static(model, config, context):
    import torch
    from torch.ao.quantization.quantize_fx import convert_fx

    prepared = _prepare(model, config, context, for_training=False)
    with torch.inference_mode():
        for batch in context.calibration_batches(config.calibration_batches):
            prepared(batch.cpu())
    return convert_fx(prepared)


def _qat(model, config, context):
    from torch.ao.quantization.quantize_fx import convert_fx

    prepared = _prepare(model, config, context, for_training=True)
    context.trainer.fit(prepared, context.data, epochs=config.qat_epochs)
    return convert_fx(prepared.cpu().eval())


def _cast(model, config, context):
    import torch

    dtype = getattr(torch, CAST_DTYPES[config.method])
    return CastInputs.wrap(model.to(dtype).eval(), dtype)


def _lowbit(model, config, context):
    from benchharness.plugins import lowbit

    layers = lowbit.convertible_layers(model, config.keep_first_last)
    if config.finetune_epochs:
        lowbit.attach_straight_through(layers, config.method, config.ternary_threshold)
        context.trainer.fit(model, context.data, epochs=config.finetune_epochs)
    _note_lowbit(context, config, lowbit.freeze(layers, config.method, config.ternary_threshold))
    return model.eval()


def _note_lowbit(context, config, figures) -> None:
    context.notes.update({f"quantize_{config.method}_{name}": value for name, value in figures.items()})


def _torchao(model, config, context):
    from benchharness.plugins import torchao_methods

    return torchao_methods.quantize_with_torchao(model.eval(), config.method, context.notes, context.torch_device.type)


def _pt2e_static(model, config, context):
    from benchharness.plugins import compiled, torchao_methods

    batches = context.calibration_batches(config.calibration_batches)
    graph = torchao_methods.pt2e_static(model, batches, context.data.x_test)
    context.notes["quantize_pt2e_static_int8_flops_share"] = graph.benchharness_layer_flops["int8"] / max(1.0, sum(graph.benchharness_layer_flops.values()))
    return compiled.compile_module(graph, compiled.CompileConfig())


METHODS: dict[str, Callable] = {
    "dynamic": _dynamic,
    "static": _static,
    "qat": _qat,
    "fp16": _cast,
    "bf16": _cast,
    "binary": _lowbit,
    "ternary": _lowbit,
    **dict.fromkeys(TORCHAO_METHODS[:-1], _torchao),
    "pt2e_static": _pt2e_static,
}


def __getattr__(name: str):
    """``Cast`` is built on first use, so importing this plugin does not import torch (pickle finds it here)."""
    if name == "Cast":
        return _cast_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@lru_cache(maxsize=1)
def _cast_class():
    from torch import nn

    class Cast(nn.Module):
        """Casts float32 inputs to ``dtype`` for the wrapped (cast) model and its logits back to float32."""

        def __init__(self, inner, dtype):
            super().__init__()
            self.inner = inner
            self.dtype = dtype
            name = str(dtype).replace("torch.", "")
            self.benchharness_speedup = (True, f"{name} weights and activations: faster only where the device has fast {name} kernels")

        def forward(self, x):
            return self.inner(x.to(self.dtype)).float()

    Cast.__module__, Cast.__qualname__ = __name__, "Cast"
    return Cast


class CastInputs:
    """Builds a module that casts inputs to ``dtype`` and logits back to float32 around a cast model."""

    @staticmethod
    def wrap(model, dtype):
        """Wrap ``model`` so callers keep feeding float32 tensors."""
        return _cast_class()(model, dtype)


class Quantize(Technique):
    """int8 (dynamic, static, qat) on CPU, torchao and PT2E methods, fp16/bf16 casts, or binary/ternary weights (any device, no speedup)."""

    NAME = "quantize"
    DESCRIPTION = "int8 dynamic / static (FX) / qat via torch.ao.quantization, torchao int8/int4/float8 and PT2E static int8, fp16/bf16 casts, binary/ternary weights"
    Config = QuantizeConfig

    def unsupported_reason(self, config, device):
        if config.method in INT8_METHODS and device.DEVICE != "cpu":
            return f"int8 {config.method} quantization runs on CPU kernels only (torch.ao.quantization has no {device.DEVICE} int8 backend)"
        if config.method in TORCHAO_METHODS:
            from benchharness.plugins import torchao_methods

            return torchao_methods.missing_library_reason() or torchao_methods.device_reason(config.method, device.DEVICE)
        return None

    def check_suite(self, config, suite):
        if config.method not in LOWBIT_METHODS and (config.finetune_epochs or not config.keep_first_last or config.ternary_threshold != 0.7):
            return f"finetune_epochs, keep_first_last and ternary_threshold apply to methods binary and ternary, not {config.method!r}"
        return None

    def cacheable(self, config):
        return config.method == "qat" or (config.method in LOWBIT_METHODS and config.finetune_epochs > 0)

    def apply(self, model, config, context):
        with quiet_deprecations():
            return METHODS[config.method](model, config, context)

    def restore(self, model, config, context, state):
        if config.method in LOWBIT_METHODS:
            from benchharness.plugins import lowbit

            model.load_state_dict(state["state_dict"])
            _note_lowbit(context, config, lowbit.freeze(lowbit.convertible_layers(model, config.keep_first_last), config.method, config.ternary_threshold))
            return model.eval()
        from torch.ao.quantization.quantize_fx import convert_fx

        with quiet_deprecations():
            converted = convert_fx(_prepare(model, config, context, for_training=True).eval())
            converted.load_state_dict(state["state_dict"])
        return converted


@hookimpl
def register_techniques(register):
    """Register the quantize technique."""
    register(Quantize())
