"""What a model's representation allows: can a speedup be expected from it at all?

The answer comes from inspecting the modules and tensors, whatever technique
produced them (a module that changes how the model runs, such as an autocast
wrapper, says so in a ``benchharness_speedup = (expected, reason)`` attribute): fake-quantized modules and pruning masks cost time, zeros in
dense tensors cost the same as any other value, while int8 kernels and
removed channels really do less work.
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


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(parameters, non-zero parameters), counting the packed weights of quantized modules too."""
    total = nonzero = 0
    for tensor in weight_tensors(model):
        values = tensor.dequantize() if tensor.is_quantized else tensor
        total += values.numel()
        nonzero += int(torch.count_nonzero(values).item())
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
        for name, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
        if tensor is not None and (tensor.is_floating_point() or tensor.is_complex())
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


def _representation(module: nn.Module, ancestors_fast: bool) -> str:
    if _is_quantized(module):
        return "int8"
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dtype in (torch.float16, torch.bfloat16):
        return "half"
    return "declared" if ancestors_fast else "float"


def layer_flops(model: nn.Module, sample: torch.Tensor) -> dict[str, float]:
    """FLOPs of one sample's forward pass in Linear and Conv layers, by representation (int8, half, declared, float).

    Counted from the layers' shapes, so quantized layers (which torch's FLOP counter skips) are
    counted alike. ``declared`` is the work under a module that declares ``benchharness_speedup``
    as expected (e.g. an autocast wrapper).
    """
    totals: dict[str, float] = {"int8": 0.0, "half": 0.0, "declared": 0.0, "float": 0.0}
    fast_roots = [module for module in model.modules() if getattr(module, "benchharness_speedup", (False,))[0]]
    fast_members = {id(child) for root in fast_roots for child in root.modules()}
    handles = []

    def count(module, inputs, output):
        totals[_representation(module, id(module) in fast_members)] += _layer_flops(module, output)

    for module in model.modules():
        if (hasattr(module, "in_features") or hasattr(module, "in_channels")) and any(part in type(module).__name__ for part in _DENSE_LAYERS):
            handles.append(module.register_forward_hook(count))
    try:
        with torch.inference_mode():
            model.eval()(sample[:1])
    except Exception:
        return {}
    finally:
        for handle in handles:
            handle.remove()
    return totals


def fast_share(flops: dict[str, float], reference_flops: dict[str, float]) -> float | None:
    """Share of the reference model's Linear/Conv FLOPs that are removed or run in a faster representation."""
    reference_total = sum(reference_flops.values()) if reference_flops else 0.0
    if not flops or reference_total <= 0:
        return None
    total = sum(flops.values())
    removed = max(0.0, reference_total - total)
    faster = flops["int8"] + flops["half"] + flops["declared"]
    return min(1.0, (removed + faster) / reference_total)


def _share_reason(share: float, flops: dict[str, float], reference_flops: dict[str, float]) -> str:
    reference_total = sum(reference_flops.values())
    removed = max(0.0, reference_total - sum(flops.values())) / reference_total
    parts = []
    if removed > 0.005:
        parts.append(f"{removed:.0%} removed")
    for kind, label in (("int8", "in int8 kernels"), ("half", "in half precision"), ("declared", "under autocast or another declared fast mode")):
        if flops[kind] > 0:
            parts.append(f"{flops[kind] / reference_total:.0%} {label}")
    detail = ", ".join(parts) or "none removed or in a faster representation"
    return f"{share:.1%} of the reference's FLOPs are faster ({detail}); at most {speedup_bound(share):.3g}x"


def speedup_bound(share: float | None) -> float:
    """Amdahl's bound: the speedup if the faster share took no time at all (inf when all of it is faster)."""
    if share is None:
        return math.inf
    return math.inf if share >= 1.0 else 1.0 / (1.0 - share)


def inspect_representation(
    model: nn.Module, reference_params: int, reference_flops: dict[str, float] | None = None, sample: torch.Tensor | None = None
) -> dict[str, Any]:
    """Facts about ``model``'s representation and how much speedup over the dense float reference it allows.

    ``fast_flops_share`` is the share of the reference's Linear/Conv FLOPs that are removed or
    run in a faster representation (int8 kernels, half precision, a declared fast mode);
    ``speedup_expected`` says whether that share is large enough to notice.
    """
    modules = list(model.modules())
    quantized = sum(_is_quantized(module) for module in modules)
    fake_quantized = sum(_is_fake_quantized(module) for module in modules)
    masked = sum(_has_pruning_mask(module) for module in modules)
    dtypes = sorted({str(p.dtype).replace("torch.", "") for p in model.parameters()})
    params, nonzero = count_parameters(model)
    sparsity = 1.0 - nonzero / params if params else 0.0
    declared = [module.benchharness_speedup for module in modules if hasattr(module, "benchharness_speedup")]
    flops = layer_flops(model, sample) if sample is not None and reference_flops else {}
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
    elif share is not None and share < 0.005 and sparsity <= SPARSITY_NOTICED and not quantized:
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
