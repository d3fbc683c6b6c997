"""What a model's representation allows: can a speedup be expected from it at all?

The answer comes from inspecting the modules and tensors, whatever technique
produced them: fake-quantized modules and pruning masks cost time, zeros in
dense tensors cost the same as any other value, while int8 kernels, torchao's
quantized weights and removed channels really do less work.

Modules may describe themselves with attributes:

- ``benchharness_speedup = (expected, reason)``: a module that changes how the model runs
  (an autocast wrapper, a compiled graph, an ONNX Runtime session) says whether it can be faster;
- ``benchharness_eager``: a wrapper that runs another model (compiled, or exported) names the
  eager module whose layers are counted;
- ``benchharness_layer_flops``: a graph without Linear/Conv modules (a PT2E-converted graph)
  gives its Linear/Conv FLOPs by representation itself.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

QUANTIZED_MODULE_PREFIXES = ("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized", "torch.nn.quantized")
STRUCTURAL_REDUCTION = 0.98
SPARSITY_NOTICED = 0.05


def _packed(module: nn.Module) -> bool:
    return callable(getattr(module, "_weight_bias", None))


def weight_tensors(model: nn.Module) -> list[torch.Tensor]:
    """Every weight of the model: parameters, and the packed weight and bias of quantized modules (counted once)."""
    tensors = [parameter.detach() for parameter in model.parameters()]
    packed_names: list[str] = []
    for name, module in model.named_modules():
        if _packed(module) and not any(name.startswith(parent + ".") for parent in packed_names):
            packed_names.append(name)
            tensors += [tensor for tensor in module._weight_bias() if tensor is not None]
    return tensors


def inner_tensors(tensor: torch.Tensor) -> list[torch.Tensor]:
    """The plain tensors a tensor subclass (torchao's quantized weights) is made of; a plain tensor is its own."""
    flatten = getattr(tensor, "__tensor_flatten__", None)
    if type(tensor) in (torch.Tensor, nn.Parameter) or not callable(flatten):
        return [tensor]
    names, _ = flatten()
    return [inner for name in names if isinstance(getattr(tensor, name, None), torch.Tensor) for inner in inner_tensors(getattr(tensor, name))]


def _nonzero(tensor: torch.Tensor) -> int:
    if tensor.is_quantized:
        return int(torch.count_nonzero(tensor.dequantize()).item())
    parts = inner_tensors(tensor)
    if parts == [tensor]:
        return int(torch.count_nonzero(tensor).item())
    codes = max(parts, key=lambda part: part.numel())
    return int(torch.count_nonzero(codes).item()) if codes.numel() == tensor.numel() else tensor.numel()


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(parameters, non-zero parameters), counting the packed weights of quantized modules and torchao's quantized tensors too."""
    total = nonzero = 0
    for tensor in weight_tensors(model):
        total += tensor.numel()
        nonzero += _nonzero(tensor)
    return total, nonzero


def _is_quantized(module: nn.Module) -> bool:
    return type(module).__module__.startswith(QUANTIZED_MODULE_PREFIXES)


def _is_fake_quantized(module: nn.Module) -> bool:
    from torch.ao.quantization import FakeQuantizeBase
    from torch.ao.quantization.observer import ObserverBase

    return isinstance(module, (FakeQuantizeBase, ObserverBase))


def _has_pruning_mask(module: nn.Module) -> bool:
    from torch.nn.utils.prune import BasePruningMethod

    return any(isinstance(hook, BasePruningMethod) for hook in module._forward_pre_hooks.values())


def nonfinite_tensor(model: nn.Module) -> str | None:
    """The name of the first floating-point parameter or buffer holding a NaN or an infinity, or None.

    Observers and fake-quantize modules are left out: their running minimum and maximum start
    at infinity by design. One host synchronisation for the whole model.
    """
    named = [
        (f"{module_name}.{name}" if module_name else name, tensor.detach())
        for module_name, module in model.named_modules()
        if not _is_fake_quantized(module)
        for name, outer in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
        if outer is not None
        for tensor in inner_tensors(outer.detach())
        if tensor.is_floating_point() or tensor.is_complex()
    ]
    if not named:
        return None
    device = named[0][1].device
    finite = torch.stack([torch.isfinite(tensor).all().to(device) for _, tensor in named]).cpu()
    if bool(finite.all()):
        return None
    return named[int((~finite).nonzero()[0])][0]


FAST_SHARE_NOTICED = 0.10
_DENSE_LAYERS = ("Linear", "Conv1d", "Conv2d", "Conv3d")


def _layer_flops(module: nn.Module, output: Any) -> int:
    """FLOPs (2 x multiply-accumulates) of one Linear or Conv call, float or quantized, from its output's shape."""
    if not isinstance(output, torch.Tensor):
        return 0
    name = type(module).__name__
    if "Linear" in name and hasattr(module, "in_features"):
        return 2 * module.in_features * output.numel()
    if "Conv" in name and hasattr(module, "in_channels"):
        kernel = 1
        for size in module.kernel_size:
            kernel *= size
        return 2 * (module.in_channels // module.groups) * kernel * output.numel()
    return 0


def wrapper_chain(model: nn.Module) -> list[nn.Module]:
    """``model``, then the modules it runs through ``benchharness_eager``, outermost first."""
    chain = [model]
    while isinstance(getattr(chain[-1], "benchharness_eager", None), nn.Module) and len(chain) < 8:
        chain.append(chain[-1].benchharness_eager)
    return chain


def eager_view(model: nn.Module) -> nn.Module:
    """The eager module whose layers a wrapper runs (``benchharness_eager``, followed through nested wrappers), else ``model``."""
    return wrapper_chain(model)[-1]


def declared_attribute(model: nn.Module, name: str) -> Any:
    """The outermost non-None ``name`` attribute along ``model``'s wrapper chain, or None."""
    for module in wrapper_chain(model):
        value = getattr(module, name, None)
        if value is not None:
            return value
    return None


def _is_torchao_tensor(tensor: Any) -> bool:
    return isinstance(tensor, torch.Tensor) and type(tensor).__module__.startswith("torchao")


def _representation(module: nn.Module, ancestors_fast: bool) -> str:
    if _is_quantized(module):
        return "int8"
    weight = getattr(module, "weight", None)
    if _is_torchao_tensor(weight):
        return "torchao"
    if isinstance(weight, torch.Tensor) and weight.dtype in (torch.float16, torch.bfloat16):
        return "half"
    return "declared" if ancestors_fast else "float"


REPRESENTATIONS = ("int8", "torchao", "half", "declared", "float")
REPRESENTATION_LABELS = {
    "int8": "in int8 kernels",
    "torchao": "in torchao's quantized tensors",
    "half": "in half precision",
    "declared": "under autocast or another declared fast mode",
}


def layer_flops(model: nn.Module, sample: torch.Tensor) -> dict[str, float]:
    """FLOPs of one sample's forward pass in Linear and Conv layers, by representation (int8, torchao, half, declared, float).

    Counted from the layers' shapes, so quantized layers (which torch's FLOP counter skips) are
    counted alike. ``declared`` is the work under a module that declares ``benchharness_speedup``
    as expected (e.g. an autocast wrapper). A wrapper is counted through its
    ``benchharness_eager`` module; a model with ``benchharness_layer_flops`` gives its own.
    """
    declared_flops = declared_attribute(model, "benchharness_layer_flops")
    if isinstance(declared_flops, dict) and declared_flops:
        return {**dict.fromkeys(REPRESENTATIONS, 0.0), **declared_flops}
    model = eager_view(model)
    totals: dict[str, float] = dict.fromkeys(REPRESENTATIONS, 0.0)
    fast_roots = [module for module in model.modules() if getattr(module, "benchharness_speedup", (False,))[0]]
    fast_members = {id(child) for root in fast_roots for child in root.modules()}
    by_layer = _flops_per_layer(model, sample)
    if by_layer is None:
        return {}
    for module, flops in by_layer:
        totals[_representation(module, id(module) in fast_members)] += flops
    return totals


def _flops_per_layer(model: nn.Module, sample: torch.Tensor) -> list[tuple[nn.Module, int]] | None:
    """(layer, FLOPs) of every Linear/Conv call in one sample's forward pass, or None when the forward pass fails."""
    found: list[tuple[nn.Module, int]] = []
    handles = [
        module.register_forward_hook(lambda module, inputs, output: found.append((module, _layer_flops(module, output))))
        for module in model.modules()
        if (hasattr(module, "in_features") or hasattr(module, "in_channels")) and any(part in type(module).__name__ for part in _DENSE_LAYERS)
    ]
    try:
        with torch.inference_mode():
            model.eval()(sample[:1])
    except Exception:
        return None
    finally:
        for handle in handles:
            handle.remove()
    return found


def named_layer_flops(model: nn.Module, sample: torch.Tensor) -> dict[str, float]:
    """FLOPs of one sample's forward pass per Linear/Conv layer, by the layer's name in ``model`` (empty when the forward pass fails)."""
    names = {id(module): name for name, module in model.named_modules()}
    totals: dict[str, float] = {}
    for module, flops in _flops_per_layer(model, sample) or []:
        totals[names[id(module)]] = totals.get(names[id(module)], 0.0) + flops
    return totals


def fast_share(flops: dict[str, float], reference_flops: dict[str, float]) -> float | None:
    """Share of the reference model's Linear/Conv FLOPs that are removed or run in a faster representation."""
    reference_total = sum(reference_flops.values()) if reference_flops else 0.0
    if not flops or reference_total <= 0:
        return None
    total = sum(flops.values())
    removed = max(0.0, reference_total - total)
    faster = sum(flops.get(kind, 0.0) for kind in REPRESENTATION_LABELS)
    return min(1.0, (removed + faster) / reference_total)


def _share_reason(share: float, flops: dict[str, float], reference_flops: dict[str, float]) -> str:
    reference_total = sum(reference_flops.values())
    removed = max(0.0, reference_total - sum(flops.values())) / reference_total
    parts = []
    if removed > 0.005:
        parts.append(f"{removed:.0%} removed")
    for kind, label in REPRESENTATION_LABELS.items():
        if flops.get(kind, 0) > 0:
            parts.append(f"{flops[kind] / reference_total:.0%} {label}")
    detail = ", ".join(parts) or "none removed or in a faster representation"
    bound = speedup_bound(share)
    return f"{share:.1%} of the reference's FLOPs are faster ({detail})" + (f"; at most {bound:.3g}x" if math.isfinite(bound) else "")


def speedup_bound(share: float | None) -> float:
    """Amdahl's bound: the speedup if the faster share took no time at all (inf when all of it is faster)."""
    if share is None:
        return math.inf
    return math.inf if share >= 1.0 else 1.0 / (1.0 - share)


def inspect_representation(
    model: nn.Module,
    reference_params: int,
    reference_flops: dict[str, float] | None = None,
    sample: torch.Tensor | None = None,
    flops: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Facts about ``model``'s representation and how much speedup over the dense float reference it allows.

    ``fast_flops_share`` is the share of the reference's Linear/Conv FLOPs that are removed or
    run in a faster representation (int8 kernels, half precision, a declared fast mode);
    ``speedup_expected`` says whether that share is large enough to notice. A wrapper that runs
    another model (``benchharness_eager``) is judged by its own declaration together with the
    verdict on the model it runs.
    """
    if flops is None:
        flops = layer_flops(model, sample) if sample is not None and reference_flops else {}
    eager = eager_view(model)
    if eager is not model:
        facts = inspect_representation(eager, reference_params, reference_flops, sample, flops)
        expected, reason = getattr(model, "benchharness_speedup", (False, "a wrapper that runs the model unchanged"))
        facts["speedup_reason"] = f"{reason}; the model it runs: {facts['speedup_reason']}"
        facts["speedup_expected"] = bool(expected or facts["speedup_expected"])
        if expected:
            facts["speedup_bound"] = None
        return facts
    modules = list(model.modules())
    quantized = sum(_is_quantized(module) for module in modules)
    fake_quantized = sum(_is_fake_quantized(module) for module in modules)
    masked = sum(_has_pruning_mask(module) for module in modules)
    dtypes = sorted({str(p.dtype).replace("torch.", "") for p in model.parameters()})
    params, nonzero = count_parameters(model)
    sparsity = 1.0 - nonzero / params if params else 0.0
    declared = [module.benchharness_speedup for module in modules if hasattr(module, "benchharness_speedup")]
    share = fast_share(flops, reference_flops or {})
    if fake_quantized:
        expected, reason = False, "fake-quantized modules simulate int8 in floating point: slower, not faster"
    elif masked:
        expected, reason = False, "pruning masks are applied in every forward pass: no speedup"
    elif any(not verdict[0] for verdict in declared) and not (share is not None and share >= FAST_SHARE_NOTICED):
        expected, reason = False, next(verdict[1] for verdict in declared if not verdict[0])
    elif share is not None and share >= FAST_SHARE_NOTICED:
        expected, reason = True, _share_reason(share, flops, reference_flops)
        if declared and declared[0][0]:
            reason += "; " + declared[0][1]
    elif share is not None and share < 0.005 and sparsity <= SPARSITY_NOTICED and not quantized and not any(flops.get(kind) for kind in REPRESENTATION_LABELS):
        expected, reason = False, "dense float model: the reference representation (no FLOPs removed or in a faster form)"
    elif share is not None:
        expected = False
        reason = _share_reason(share, flops, reference_flops) + ": too little to be measurably faster"
        if sparsity > SPARSITY_NOTICED:
            reason = f"{sparsity:.0%} zeros stored in dense tensors: dense kernels do the same work; " + reason
    else:
        expected, reason = _legacy_verdict(quantized, declared, params, reference_params, dtypes, sparsity)
    return {
        "params": params,
        "params_nonzero": nonzero,
        "speedup_expected": expected,
        "speedup_reason": reason,
        "fast_flops_share": share,
        "speedup_bound": speedup_bound(share) if share is not None else None,
        "sparsity": sparsity,
        "quantized_modules": quantized,
        "fake_quantized_modules": fake_quantized,
        "pruning_masks": masked,
        "param_dtypes": dtypes,
    }


def _legacy_verdict(quantized: int, declared: list, params: int, reference_params: int, dtypes: list[str], sparsity: float) -> tuple[bool, str]:
    """The verdict from modules and tensors alone, where FLOPs cannot be counted."""
    if quantized:
        return True, f"{quantized} modules run int8 kernels"
    if declared:
        return declared[0]
    if reference_params and params < STRUCTURAL_REDUCTION * reference_params:
        return True, f"channels removed: {params / reference_params:.0%} of the parameters remain, in smaller dense layers"
    if any(dtype in ("float16", "bfloat16") for dtype in dtypes):
        return True, "half-precision weights: faster only where the device has fast kernels for them"
    if sparsity > SPARSITY_NOTICED:
        return False, f"{sparsity:.0%} zeros stored in dense tensors: dense kernels do the same work"
    return False, "dense float model: the reference representation"
