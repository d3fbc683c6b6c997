"""The quantize technique's torchao methods: weight-only and dynamic int8, int4 and float8 via ``quantize_``, and PT2E static int8.

torchao's configs convert ``nn.Linear`` layers only: on a convolutional network they leave
most of the work in float, which the record's ``fast_flops_share`` and the notes say. PT2E
(``torch.export``, then ``prepare_pt2e``/``convert_pt2e`` with ``X86InductorQuantizer``) is
torch's successor of FX static quantization: the converted graph holds quantize/dequantize
pairs that inductor fuses into int8 kernels, so it always runs under ``torch.compile``.

A PT2E graph cannot be pickled; :class:`Pt2eGraph` keeps it as ``torch.export.save``'s bytes
and loads it on its first forward pass in a process. This module imports torch; the
quantize plugin imports it only when one of these methods runs.
"""

from __future__ import annotations

import importlib.util
import io
from typing import Any

import torch
from torch import nn

TORCHAO_METHODS = ("int8_weight_only", "int8_dynamic", "int4_weight_only", "float8")
INSTALL = "pip install 'benchharness[torchao]'"
FLOAT8_CAPABILITY = (8, 9)
WEIGHT_OPS = ("aten.conv1d", "aten.conv2d", "aten.conv3d", "aten.convolution", "aten.linear")


def missing_library_reason() -> str | None:
    """Why torchao's methods cannot run here, with the install command, or None."""
    if importlib.util.find_spec("torchao") is None:
        return f"torchao is not installed: {INSTALL}"
    return None


def device_reason(method: str, device: str) -> str | None:
    """Why ``method`` cannot run on ``device`` (a torch device type), or None."""
    if method == "pt2e_static" and device != "cpu":
        return "pt2e_static uses X86InductorQuantizer, whose int8 kernels are for x86 CPUs; on CUDA use int8_dynamic, int8_weight_only or float8"
    if method == "int4_weight_only" and device != "cuda":
        return "int4_weight_only runs on CUDA kernels only; on CPU use int8_weight_only or int8_dynamic"
    if method == "float8":
        if device != "cuda":
            return "float8 needs a GPU with float8 tensor cores (compute capability 8.9 or newer: Ada, Hopper, Blackwell)"
        if torch.cuda.is_available() and torch.cuda.get_device_capability() < FLOAT8_CAPABILITY:
            major, minor = torch.cuda.get_device_capability()
            return f"float8 needs compute capability 8.9 or newer; {torch.cuda.get_device_name()} has {major}.{minor}"
    return None


def torchao_config(method: str):
    """The torchao config object of ``method``."""
    from torchao import quantization

    if method == "int8_weight_only":
        return quantization.Int8WeightOnlyConfig()
    if method == "int8_dynamic":
        return quantization.Int8DynamicActivationInt8WeightConfig()
    if method == "int4_weight_only":
        return quantization.Int4WeightOnlyConfig(group_size=128)
    return quantization.Float8DynamicActivationFloat8WeightConfig()


def _linear_layers(model: nn.Module) -> list[nn.Linear]:
    return [module for module in model.modules() if isinstance(module, nn.Linear)]


def shape_problem(layer: nn.Linear, method: str, device: str) -> str | None:
    """Why torchao's CUDA kernels for ``method`` cannot take this layer's shape (e.g. a 10-class head), or None."""
    if device != "cuda":
        return None
    multiple = 128 if method == "int4_weight_only" else 16
    if layer.in_features % multiple or layer.out_features % 16:
        return f"{layer.in_features}->{layer.out_features} (the kernels need inputs a multiple of {multiple} and outputs of 16)"
    return None


def quantize_with_torchao(model: nn.Module, method: str, notes: dict[str, Any], device: str = "cpu") -> nn.Module:
    """Convert ``model``'s eligible Linear layers in place with torchao's ``quantize_``; the notes say how many it converted and why others were left."""
    from torchao.quantization import quantize_

    linears = _linear_layers(model)
    left = {id(layer): problem for layer in linears if (problem := shape_problem(layer, method, device))}
    quantize_(model, torchao_config(method), filter_fn=lambda module, name: isinstance(module, nn.Linear) and id(module) not in left)
    converted = sum(type(layer.weight).__module__.startswith("torchao") for layer in linears)
    notes[f"quantize_{method}_linear_layers"] = f"{converted} of {len(linears)}"
    if left:
        notes[f"quantize_{method}_left_float"] = sorted(set(left.values()))
    if not converted:
        notes[f"quantize_{method}_converted_nothing"] = (
            "torchao's configs convert nn.Linear layers only"
            + (": this model has none" if not linears else ": none of this model's has a shape its kernels take")
            + ", so it runs exactly as the float model"
        )
    return model.eval()


def _weight_source(node: torch.fx.Node) -> tuple[torch.fx.Node, bool]:
    """The node that holds a weight argument, and whether it is dequantized from int8 on the way."""
    if node.op == "call_function" and "dequantize" in str(node.target):
        return node.args[0], True
    return node, False


def graph_layer_flops(graph_module: torch.fx.GraphModule, sample: torch.Tensor) -> dict[str, float]:
    """FLOPs of one sample in the graph's convolutions and linear layers, by representation: ``int8`` where the weight is dequantized from int8, else ``float``."""
    from torch.fx.passes.shape_prop import ShapeProp

    ShapeProp(graph_module).propagate(sample[:1])
    totals = {"int8": 0.0, "float": 0.0}
    for node in graph_module.graph.nodes:
        if node.op != "call_function" or not str(node.target).startswith(WEIGHT_OPS) or len(node.args) < 2:
            continue
        weight = node.args[1]
        output, weight_meta = node.meta.get("tensor_meta"), getattr(weight, "meta", {}).get("tensor_meta")
        if output is None or weight_meta is None:
            continue
        per_output = 1
        for size in weight_meta.shape[1:]:
            per_output *= size
        kind = "int8" if _weight_source(weight)[1] else "float"
        totals[kind] += 2.0 * per_output * torch.Size(output.shape).numel()
    return totals


def graph_storage(graph_module: torch.fx.GraphModule) -> dict[str, Any]:
    """Bytes of the graph's stored tensors and bits per weight of its convolution and linear weights and biases."""
    from benchharness.measure import _tensor_bytes

    constants = {node.name: _fetch(graph_module, node.target) for node in graph_module.graph.nodes if node.op == "get_attr"}
    constants = {name: value for name, value in constants.items() if isinstance(value, torch.Tensor)}
    weights = 0
    for node in graph_module.graph.nodes:
        if node.op == "call_function" and str(node.target).startswith(WEIGHT_OPS):
            for argument in node.args[1:3]:
                if isinstance(argument, torch.fx.Node):
                    source = _weight_source(argument)[0]
                    if source.name in constants:
                        weights += constants[source.name].numel()
    total = sum(_tensor_bytes(tensor) for tensor in constants.values())
    return {"size_packed_bytes": total, "bits_per_weight": 8 * total / weights if weights else None}


def _fetch(module: nn.Module, target: str) -> Any:
    value: Any = module
    for part in target.split("."):
        value = getattr(value, part, None)
    return value


class Pt2eGraph(nn.Module):
    """A PT2E-quantized graph kept as ``torch.export.save`` bytes, loaded on its first forward pass in each process.

    It declares its Linear/Conv FLOPs by representation (``benchharness_layer_flops``) and its
    stored size (``benchharness_deployed``), which modules cannot give for it: the exported
    graph has no Linear or Conv modules.
    """

    def __init__(self, program: bytes, layer_flops: dict[str, float], storage: dict[str, Any]):
        super().__init__()
        self.program = program
        self.benchharness_layer_flops = layer_flops
        self.storage = storage
        self.__dict__["_graph"] = None

    def __getstate__(self):
        return {**self.__dict__, "_graph": None}

    def graph(self) -> nn.Module:
        """The loaded graph module."""
        if self.__dict__.get("_graph") is None:
            self.__dict__["_graph"] = torch.export.load(io.BytesIO(self.program)).module()
        return self.__dict__["_graph"]

    def forward(self, x):
        return self.graph()(x)

    def benchharness_deployed(self) -> tuple[bytes, dict[str, Any]]:
        """The exported program's bytes and the storage figures of its weights."""
        return self.program, dict(self.storage)


def _reused_module_tolerant(quantizer_class: type) -> type:
    """``X86InductorQuantizer`` that also takes a module called twice (torchvision's BasicBlock calls one ``nn.ReLU`` twice).

    Such a module's source partition has two output nodes, which the quantizer refuses ("Input
    partition has more than one output node") for the whole model. Of the two, the one that
    consumes the previous partition's output (or feeds the next partition) is the one the
    pattern means.
    """

    class Tolerant(quantizer_class):
        def _get_output_nodes_of_partitions(self, partition_list):
            chosen: list[torch.fx.Node] = []
            for index, partition in enumerate(partition_list):
                outputs = list(partition.output_nodes)
                if len(outputs) > 1 and index > 0:
                    outputs = [node for node in outputs if chosen[-1] in node.all_input_nodes] or outputs
                elif len(outputs) > 1 and index + 1 < len(partition_list):
                    following = set(partition_list[index + 1].nodes)
                    outputs = [node for node in outputs if any(user in following for user in node.users)] or outputs
                if len(outputs) != 1:
                    raise ValueError("Input partition has more than one output node")
                chosen.append(outputs[0])
            return chosen

    return Tolerant


def pt2e_static(model: nn.Module, calibration: list[torch.Tensor], example: torch.Tensor) -> Pt2eGraph:
    """The PT2E flow on CPU: export with a dynamic batch, X86InductorQuantizer, calibrate on ``calibration``, convert, re-export."""
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as x86
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    batch = torch.export.Dim("batch", min=1, max=65536)
    example = example[: max(2, min(8, example.shape[0]))]
    shapes = ({0: batch},)
    exported = torch.export.export(model.cpu().eval(), (example,), dynamic_shapes=shapes).module()
    quantizer = _reused_module_tolerant(x86.X86InductorQuantizer)()
    quantizer.set_global(x86.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        for inputs in calibration:
            prepared(inputs.cpu())
    converted = convert_pt2e(prepared)
    flops, storage = graph_layer_flops(converted, example), graph_storage(converted)
    buffer = io.BytesIO()
    torch.export.save(torch.export.export(converted, (example,), dynamic_shapes=shapes), buffer)
    return Pt2eGraph(buffer.getvalue(), flops, storage)
