"""How much speedup a representation allows: the share of the reference's FLOPs that are removed or faster."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from benchharness.plugins.amp import autocast_module
from benchharness.plugins.models import MLP, ResNet18Cifar
from benchharness.representation import count_parameters, fast_share, inspect_representation, layer_flops, speedup_bound


def facts_for(model: nn.Module, reference: nn.Module, sample: torch.Tensor) -> dict:
    return inspect_representation(model, count_parameters(reference)[0], layer_flops(reference, sample), sample)


def dynamic_int8(model: nn.Module) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model.eval(), {nn.Linear}, dtype=torch.qint8)


def test_layer_flops_match_torchs_counter_for_a_float_model():
    """Counted from shapes, a float model's Linear and Conv FLOPs equal torch.utils.flop_counter's."""
    from torch.utils.flop_counter import FlopCounterMode

    model = ResNet18Cifar().build(10, (3, 32, 32)).eval()
    sample = torch.randn(1, 3, 32, 32)
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(sample)
    counted = layer_flops(model, sample)
    assert counted["float"] == pytest.approx(counter.get_total_flops(), rel=1e-6)
    assert counted["int8"] == counted["half"] == counted["declared"] == 0


def test_dynamic_int8_of_a_resnet_is_not_expected_to_be_faster():
    """Dynamic int8 converts only the ResNet-18's final Linear: a negligible share of its FLOPs."""
    reference = ResNet18Cifar().build(10, (3, 32, 32)).eval()
    sample = torch.randn(1, 3, 32, 32)
    facts = facts_for(dynamic_int8(ResNet18Cifar().build(10, (3, 32, 32))), reference, sample)
    assert facts["quantized_modules"] >= 1
    assert facts["fast_flops_share"] < 0.001 and facts["speedup_bound"] < 1.001
    assert facts["speedup_expected"] is False and "too little" in facts["speedup_reason"]


def test_dynamic_int8_of_an_mlp_runs_all_its_flops_in_int8():
    """Every Linear of the MLP runs int8 kernels: all of its FLOPs, an unbounded Amdahl limit."""
    reference = MLP().build(10, (1, 8, 8)).eval()
    sample = torch.randn(1, 1, 8, 8)
    facts = facts_for(dynamic_int8(MLP().build(10, (1, 8, 8))), reference, sample)
    assert facts["fast_flops_share"] == pytest.approx(1.0)
    assert math.isinf(facts["speedup_bound"]) and facts["speedup_expected"] is True
    assert "100% in int8 kernels" in facts["speedup_reason"]


def test_removed_channels_count_as_faster_flops():
    """Halving the hidden width removes half of the FLOPs: a 2x bound."""
    reference = nn.Sequential(nn.Flatten(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10)).eval()
    pruned = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)).eval()
    facts = facts_for(pruned, reference, torch.randn(1, 1, 8, 8))
    assert facts["fast_flops_share"] == pytest.approx(0.5)
    assert facts["speedup_bound"] == pytest.approx(2.0)
    assert facts["speedup_expected"] is True and "50% removed" in facts["speedup_reason"]


def test_zeros_stored_dense_allow_no_speedup():
    """Magnitude-pruned weights have as many FLOPs in the same representation: bound 1, not expected."""
    reference = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).eval()
    sparse = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).eval()
    with torch.no_grad():
        for layer in (sparse[1], sparse[3]):
            layer.weight[:, ::2] = 0
    facts = facts_for(sparse, reference, torch.randn(1, 1, 8, 8))
    assert facts["fast_flops_share"] == 0 and facts["speedup_bound"] == 1.0
    assert facts["speedup_expected"] is False and "zeros stored in dense tensors" in facts["speedup_reason"]
    same = facts_for(reference, reference, torch.randn(1, 1, 8, 8))
    assert same["speedup_expected"] is False and same["speedup_reason"].startswith("dense float model")


def test_autocast_declares_its_flops_faster_and_half_weights_count_as_half():
    """An autocast wrapper declares the work under it faster; a half-precision copy's layers count as half."""
    reference = MLP().build(10, (1, 8, 8)).eval()
    sample = torch.randn(1, 1, 8, 8)
    wrapped = facts_for(autocast_module(MLP().build(10, (1, 8, 8)), "cpu", torch.bfloat16), reference, sample)
    assert wrapped["fast_flops_share"] == pytest.approx(1.0) and "under autocast" in wrapped["speedup_reason"]
    half = MLP().build(10, (1, 8, 8)).to(torch.bfloat16).eval()
    assert layer_flops(half, sample.to(torch.bfloat16))["half"] == sum(layer_flops(reference, sample).values())


def test_amdahl_bound():
    """1 / (1 - share); infinite when every FLOP is faster; unknown share gives no bound."""
    assert speedup_bound(0.75) == pytest.approx(4.0)
    assert math.isinf(speedup_bound(1.0)) and math.isinf(speedup_bound(None))
    assert fast_share({}, {"float": 1.0}) is None
