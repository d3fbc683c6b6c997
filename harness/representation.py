"""What a model's representation allows: can a speedup be expected from it at all?

The answer comes from inspecting the modules and tensors, whatever technique
produced them (a module that changes how the model runs, such as an autocast
wrapper, says so in a ``benchharness_speedup = (expected, reason)`` attribute): fake-quantized modules and pruning masks cost time, zeros in
dense tensors cost the same as any other value, while int8 kernels and
removed channels really do less work.
"""

from __future__ import annotations

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


def inspect_representation(model: nn.Module, reference_params: int) -> dict[str, Any]:
    """Facts about ``model``'s representation and whether a speedup over ``reference_params`` dense float parameters can be expected."""
    modules = list(model.modules())
    quantized = sum(_is_quantized(module) for module in modules)
    fake_quantized = sum(_is_fake_quantized(module) for module in modules)
    masked = sum(_has_pruning_mask(module) for module in modules)
    dtypes = sorted({str(p.dtype).replace("torch.", "") for p in model.parameters()})
    params, nonzero = count_parameters(model)
    sparsity = 1.0 - nonzero / params if params else 0.0
    declared = [module.benchharness_speedup for module in modules if hasattr(module, "benchharness_speedup")]
    if fake_quantized:
        expected, reason = False, "fake-quantized modules simulate int8 in floating point: slower, not faster"
    elif masked:
        expected, reason = False, "pruning masks are applied in every forward pass: no speedup"
    elif quantized:
        expected, reason = True, f"{quantized} modules run int8 kernels"
    elif declared:
        expected, reason = declared[0]
    elif reference_params and params < STRUCTURAL_REDUCTION * reference_params:
        expected, reason = True, f"channels removed: {params / reference_params:.0%} of the parameters remain, in smaller dense layers"
    elif any(dtype in ("float16", "bfloat16") for dtype in dtypes):
        expected, reason = True, "half-precision weights: faster only where the device has fast kernels for them"
    elif sparsity > SPARSITY_NOTICED:
        expected, reason = False, f"{sparsity:.0%} zeros stored in dense tensors: dense kernels do the same work"
    else:
        expected, reason = False, "dense float model: the reference representation"
    return {
        "params": params,
        "params_nonzero": nonzero,
        "speedup_expected": expected,
        "speedup_reason": reason,
        "sparsity": sparsity,
        "quantized_modules": quantized,
        "fake_quantized_modules": fake_quantized,
        "pruning_masks": masked,
        "param_dtypes": dtypes,
    }
