"""ONNX Runtime as a technique: export the model with ``torch.onnx.export`` and run it in an ORT session.

The session is an :class:`OrtModule`, an ``nn.Module`` that holds the ONNX bytes and the
eager model they came from (which the harness counts layers and FLOPs on). It opens its
session on the first forward pass in each process, with ``threads`` intra-op threads (by
default the count torch runs with at that moment, so a suite's thread counts apply to ORT
too), and runs every forward pass through it: accuracy and latency come from the same
session. ``quantize = "static"`` runs ``onnxruntime.quantization.quantize_static`` on
calibration batches of the training split; ``"dynamic"`` runs ``quantize_dynamic``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import tempfile
from functools import lru_cache
from typing import Any, Literal

from pydantic import Field

from benchharness import StrictConfig, Technique, hookimpl

INSTALL = "pip install 'benchharness[onnx]'"
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
INPUT, OUTPUT = "input", "logits"


class OrtConfig(StrictConfig):
    """Parameters of the onnxruntime technique."""

    optimization: Literal["disable", "basic", "extended", "all"] = Field("all", description="ORT's graph optimisation level.")
    quantize: Literal["none", "static", "dynamic"] = Field(
        "none", description="ORT int8 quantization of the exported graph: static (calibrated, QDQ) or dynamic (weights only ahead of time)."
    )
    per_channel: bool = Field(True, description="quantize: one scale per output channel of each weight.")
    calibration_batches: int = Field(8, ge=1, le=100_000, description="quantize = static: training batches run through ORT's calibrator.")
    threads: int | None = Field(None, ge=1, le=1024, description="Intra-op threads of the session; default: the threads torch runs with when the session opens.")
    spinning: bool = Field(False, description="Let ORT's idle threads spin after each run (faster alone, but they take CPU from the models timed beside it).")
    opset: int | None = Field(None, ge=7, le=30, description="ONNX opset of the export; default: the exporter's.")


def missing_library_reason() -> str | None:
    """Why ONNX export or ONNX Runtime cannot run here, with the install command, or None."""
    missing = [name for name in ("onnx", "onnxruntime", "onnxscript") if importlib.util.find_spec(name) is None]
    return f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed: {INSTALL}" if missing else None


def export_onnx(model, example, opset: int | None = None) -> bytes:
    """``model`` exported with ``torch.onnx.export`` (dynamo) with a dynamic batch dimension, as ONNX bytes."""
    import torch

    batch = torch.export.Dim("batch", min=1, max=65536)
    with contextlib.redirect_stdout(io.StringIO()):
        program = torch.onnx.export(
            model.cpu().eval(), (example.cpu(),), dynamo=True, dynamic_shapes=({0: batch},), input_names=[INPUT], output_names=[OUTPUT], opset_version=opset, verbose=False
        )
    return program.model_proto.SerializeToString()


def _calibration_reader(batches):
    from onnxruntime.quantization import CalibrationDataReader

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{INPUT: batch.cpu().numpy()} for batch in batches])

        def get_next(self):
            return next(self.items, None)

    return Batches()


def quantize_onnx(onnx_bytes: bytes, config: OrtConfig, calibration) -> bytes:
    """The exported graph quantized by onnxruntime.quantization (static: QDQ with calibration; dynamic: weights ahead of time)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="benchharness-ort-") as folder:
        source, prepared, target = (os.path.join(folder, name) for name in ("model.onnx", "prepared.onnx", "int8.onnx"))
        with open(source, "wb") as file:
            file.write(onnx_bytes)
        quant_pre_process(source, prepared, skip_symbolic_shape=True)
        if config.quantize == "static":
            quantize_static(
                prepared, target, _calibration_reader(calibration), quant_format=QuantFormat.QDQ, per_channel=config.per_channel,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            )
        else:
            quantize_dynamic(prepared, target, per_channel=config.per_channel, weight_type=QuantType.QInt8)
        with open(target, "rb") as file:
            return file.read()


def onnx_storage(onnx_bytes: bytes) -> tuple[dict[str, Any], set[str]]:
    """Storage figures of the graph's initializers, and the names of the weights stored as int8."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_from_string(onnx_bytes).graph
    total = weights = 0
    quantized: set[str] = set()
    for initializer in graph.initializer:
        array = numpy_helper.to_array(initializer)
        total += array.nbytes
        if array.ndim >= 1 and array.size > 1:
            weights += array.size if array.dtype.itemsize >= 1 and not initializer.name.endswith(("_scale", "_zero_point")) else 0
        if array.dtype.itemsize == 1 and initializer.name.endswith("_quantized"):
            quantized.add(initializer.name.removesuffix("_quantized").removesuffix("_Transposed"))
    return {"size_packed_bytes": total, "bits_per_weight": 8 * total / weights if weights else None}, quantized


def _layer_kinds(model, sample, quantized: set[str]) -> dict[str, float]:
    from benchharness.representation import named_layer_flops

    totals = {"int8": 0.0, "float": 0.0}
    for name, flops in named_layer_flops(model, sample).items():
        totals["int8" if f"{name}.weight" in quantized else "float"] += flops
    return totals


def __getattr__(name: str):
    """``OrtModule`` is built on first use, so importing this plugin does not import torch (pickle finds it here)."""
    if name == "OrtModule":
        return _ort_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@lru_cache(maxsize=1)
def _ort_class():
    import numpy as np
    import torch
    from torch import nn

    class OrtModule(nn.Module):
        """An ONNX Runtime session over ``onnx_bytes``, opened on the first forward pass in each process (one per thread count)."""

        def __init__(self, eager: nn.Module, onnx_bytes: bytes, config: OrtConfig, provider: str, layer_flops: dict[str, float], storage: dict[str, Any]):
            super().__init__()
            self.eager = eager
            self.onnx_bytes = onnx_bytes
            self.storage = storage
            self.options = config.model_dump()
            self.provider = provider
            self.benchharness_layer_flops = None if config.quantize == "none" else layer_flops
            self.benchharness_speedup = (
                True,
                f"ONNX Runtime session ({provider}, graph optimisation {config.optimization}"
                + (f", {config.quantize} int8" if config.quantize != "none" else "")
                + "): its own kernels and fusions instead of eager PyTorch",
            )
            self.__dict__["_sessions"] = {}

        @property
        def benchharness_eager(self) -> nn.Module:
            """The eager model that was exported."""
            return self.eager

        def __getstate__(self):
            return {**self.__dict__, "_sessions": {}}

        def session_threads(self) -> int:
            """The intra-op threads the next session opens with."""
            return self.options["threads"] or torch.get_num_threads()

        def session(self):
            """The session for the current thread count."""
            import onnxruntime as ort

            threads = self.session_threads()
            sessions = self.__dict__.setdefault("_sessions", {})
            if threads not in sessions:
                options = ort.SessionOptions()
                options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
                options.graph_optimization_level = {
                    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                }[self.options["optimization"]]
                options.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.options["spinning"] else "0")
                sessions[threads] = ort.InferenceSession(self.onnx_bytes, options, providers=[self.provider])
            return sessions[threads]

        def forward(self, x):
            outputs = self.session().run([OUTPUT], {INPUT: np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)})
            return torch.from_numpy(outputs[0]).to(x.device)

        def benchharness_deployed(self) -> tuple[bytes, dict[str, Any]]:
            """The ONNX file's bytes and the storage figures of its initializers."""
            return self.onnx_bytes, dict(self.storage)

    OrtModule.__module__, OrtModule.__qualname__ = __name__, "OrtModule"
    return OrtModule


class OnnxRuntime(Technique):
    """Exports the model to ONNX and runs it in ONNX Runtime (an execution mode: pruning or distillation may come before it)."""

    NAME = "onnxruntime"
    DESCRIPTION = "export with torch.onnx.export and run in an ONNX Runtime session (CPU, or CUDA where onnxruntime-gpu has it), optionally int8"
    Config = OrtConfig

    def unsupported_reason(self, config, device):
        missing = missing_library_reason()
        if missing:
            return missing
        import onnxruntime

        provider = PROVIDERS.get(device.DEVICE)
        if provider is None:
            return f"ONNX Runtime is not wired for device {device.DEVICE!r} here (cpu and cuda are)"
        if provider not in onnxruntime.get_available_providers():
            return f"this onnxruntime has no {provider} (it has {', '.join(onnxruntime.get_available_providers())}); for CUDA install onnxruntime-gpu"
        if config.quantize == "static" and device.DEVICE != "cpu":
            return "ORT static int8 (QDQ) targets the CPU provider; on CUDA use quantize = \"none\""
        return None

    def apply(self, model, config, context):
        sample = context.data.x_test[:8]
        from benchharness.representation import eager_view

        eager = eager_view(model)
        try:
            onnx_bytes = export_onnx(eager, sample, config.opset)
        except Exception as error:
            raise RuntimeError(f"torch.onnx.export could not export this model ({type(error).__name__}: {str(error).splitlines()[0][:300]})") from error
        layer_flops: dict[str, float] = {}
        if config.quantize != "none":
            onnx_bytes = quantize_onnx(onnx_bytes, config, context.calibration_batches(config.calibration_batches))
        storage, quantized = onnx_storage(onnx_bytes)
        if config.quantize != "none":
            layer_flops = _layer_kinds(eager.cpu(), sample.cpu(), quantized)
            context.notes["onnxruntime_int8_weights"] = len(quantized)
        module = _ort_class()(eager, onnx_bytes, config, PROVIDERS[context.torch_device.type], layer_flops, storage)
        context.notes.update(
            {
                "onnxruntime_version": __import__("onnxruntime").__version__,
                "onnxruntime_provider": module.provider,
                "onnxruntime_threads": module.session_threads(),
                "onnxruntime_optimization": config.optimization,
                "onnxruntime_quantize": config.quantize,
            }
        )
        return module


@hookimpl
def register_techniques(register):
    """Register the onnxruntime technique."""
    register(OnnxRuntime())
