"""Binary and ternary weights: the quantizers, bit packing, straight-through fine-tuning, storage metrics and the record."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from benchharness.measure import storage_metrics
from benchharness.plugins import lowbit
from benchharness.representation import inspect_representation
from benchharness.train import evaluate_accuracy


@pytest.mark.parametrize("method", ["binary", "ternary"])
@pytest.mark.parametrize("shape", [(7, 3, 3, 3), (10, 13), (1, 1)])
def test_packing_round_trips_exactly(method, shape):
    """Unpacking the packed codes and scales gives back exactly the quantized weight; the codes take 1 or 2 bits per weight."""
    weight = lowbit.quantize_weight(torch.randn(shape), method)
    codes, scales = lowbit.pack(weight, method)
    assert torch.equal(lowbit.unpack(codes, scales, tuple(weight.shape), method), weight)
    per_row = weight[0].numel()
    assert codes.dtype == torch.uint8 and codes.shape == (shape[0], -(-per_row * (1 if method == "binary" else 2) // 8))


def test_binary_is_plus_or_minus_the_channel_mean():
    """Every binary weight is +-mean|w| of its output channel, with w's sign."""
    weight = torch.randn(4, 2, 3, 3)
    binary = lowbit.binarize(weight)
    alpha = weight.abs().mean(dim=(1, 2, 3))
    for channel in range(4):
        assert torch.allclose(binary[channel].abs(), alpha[channel].expand_as(binary[channel]))
        assert torch.equal(torch.sign(binary[channel]), torch.where(weight[channel] >= 0, 1.0, -1.0))


def test_ternary_has_zeros_and_one_magnitude_per_channel():
    """Ternary weights are 0 below the threshold and +-a above it, a the mean |w| of the kept ones."""
    weight = torch.tensor([[0.1, -0.2, 1.0, -3.0]])
    ternary = lowbit.ternarize(weight, threshold=0.7)
    assert torch.allclose(ternary, torch.tensor([[0.0, 0.0, 2.0, -2.0]]))


def test_first_and_last_layers_stay_full_precision(tiny_model):
    """keep_first_last leaves the first and last Conv/Linear layers as they were; without it every layer converts."""
    kept = lowbit.convertible_layers(tiny_model, keep_first_last=True)
    every = lowbit.convertible_layers(tiny_model, keep_first_last=False)
    assert len(every) == len(kept) + 2 and every[1:-1] == kept
    first_before = every[0][1].weight.detach().clone()
    lowbit.freeze(kept, "binary", 0.7)
    assert torch.equal(every[0][1].weight, first_before)
    assert all(len(torch.unique(module.weight[0])) == 2 for _, module in kept)


def test_storage_metrics_count_packed_weights(tiny_model):
    """An fp32 model stores 32 bits per weight; binarising its inner layers stores about 1 bit for those, measured from the packed buffers."""
    before = storage_metrics(tiny_model)
    assert before["bits_per_weight"] == 32.0
    figures = lowbit.freeze(lowbit.convertible_layers(tiny_model, True), "binary", 0.7)
    after = storage_metrics(tiny_model)
    assert after["size_packed_bytes"] == before["size_packed_bytes"] - figures["fp32_bytes"] + figures["packed_bytes"]
    assert figures["packed_bytes"] * 20 <= figures["fp32_bytes"]
    assert 1.0 < figures["bits_per_weight"] < 1.2 and after["bits_per_weight"] < 3


def test_binary_weights_declare_no_speedup(tiny_model, tiny_data):
    """The representation verdict names the missing binary kernels instead of calling the model a dense float reference."""
    from benchharness.representation import count_parameters, layer_flops

    sample = tiny_data.x_test[:1]
    reference = layer_flops(tiny_model, sample)
    lowbit.freeze(lowbit.convertible_layers(tiny_model, True), "binary", 0.7)
    verdict = inspect_representation(tiny_model, count_parameters(tiny_model)[0], reference, sample)
    assert verdict["speedup_expected"] is False and "no binary or ternary kernels" in verdict["speedup_reason"]


def test_straight_through_fine_tuning_recovers_accuracy(cell_context):
    """Binarising a trained small CNN costs accuracy; two epochs of straight-through fine-tuning win most of it back and change the latent weights."""
    from benchharness.plugins.quantize import Quantize, QuantizeConfig

    context = cell_context("quantize", {"method": "binary"}, model="small_cnn")
    trained = context.trained_model("small_cnn")
    float_accuracy = context.evaluate(trained)
    plain = Quantize().apply(copy.deepcopy(trained), QuantizeConfig(method="binary"), context)
    tuned = Quantize().apply(copy.deepcopy(trained), QuantizeConfig(method="binary", finetune_epochs=2), context)
    plain_accuracy, tuned_accuracy = context.evaluate(plain), context.evaluate(tuned)
    assert tuned_accuracy > plain_accuracy and tuned_accuracy > float_accuracy - 0.05, (float_accuracy, plain_accuracy, tuned_accuracy)
    inner = [name for name, _ in lowbit.convertible_layers(trained, True)]
    tuned_weights, plain_weights = dict(tuned.named_modules()), dict(plain.named_modules())
    assert not torch.equal(tuned_weights[inner[0]].weight, plain_weights[inner[0]].weight)
    assert context.notes["quantize_binary_layers"] == 2 and context.notes["quantize_binary_bits_per_weight"] < 1.2


def test_conformance_of_binary_and_ternary():
    """Both methods pass the plugin conformance checks, fine-tuned (cached) and not."""
    from benchharness.conformance import check_technique

    check_technique("quantize", {"method": "binary", "finetune_epochs": 1})
    check_technique("quantize", {"method": "ternary"})


def test_low_bit_options_are_refused_for_other_methods(host):
    """finetune_epochs on an int8 method is a suite error, not silently ignored."""
    from benchharness.errors import SuiteError
    from benchharness.suite import load_suite_text

    text = 'models = ["mlp"]\n[data]\nname = "digits"\n[[techniques]]\nsteps = ["quantize"]\nquantize = { method = "dynamic", finetune_epochs = 2 }\n'
    with pytest.raises(SuiteError, match="apply to methods binary and ternary"):
        load_suite_text(text, "suite.toml", host)


def test_a_binary_cell_records_packed_size_and_no_speedup(run_cell):
    """Through the runner: the record has bits_per_weight and size_packed_bytes, the expectation is no speedup, and accuracy stays useful."""
    record = run_cell("quantize", {"quantize": {"method": "binary", "finetune_epochs": 1}}, model="small_cnn")
    assert record["status"] == "ok", record.get("error_message")
    metrics = record["metrics"]
    assert 1 < metrics["bits_per_weight"] < 8 and metrics["size_packed_bytes"] * 4 < metrics["size_bytes"]
    assert metrics["speedup_expected"] is False and "kernels" in metrics["speedup_reason"]
    baseline_step = record["steps"][0]["metrics"]
    assert baseline_step["bits_per_weight"] == 32.0
    assert metrics["accuracy_top1"] > 0.5
