"""weight_noise, tested with benchharness's testing kit (benchharness.testing).

The kit's fixtures (cell_context, run_cell, ...) are available because installing benchharness
installs its pytest plugin; nothing needs to be imported for them. The plugin is found through
its entry point, as `benchharness run` finds it, so install this package first:
``pip install -e .``.
"""

from __future__ import annotations

import torch

from benchharness.testing import check_technique
from benchharness_weight_noise import WeightNoise, WeightNoiseConfig


def test_weight_noise_conforms():
    """The whole plugin contract: config, unsupported_reason, apply on a real cell's context, notes, speedup expectation."""
    report = check_technique("weight_noise", {"relative_std": 0.1}, entry_points=True)
    assert report.technique == "weight_noise"


def test_noise_is_relative_to_each_tensors_spread(cell_context):
    """On a trained model, every weight tensor moves by about relative_std of its own standard deviation."""
    context = cell_context("weight_noise", {"relative_std": 0.1}, model="mlp", entry_points=True)
    model = context.trained_model("mlp")
    before = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    noisy = WeightNoise().apply(model, WeightNoiseConfig(relative_std=0.1), context)
    for name, parameter in noisy.named_parameters():
        if parameter.numel() >= 1000:
            change = (parameter.detach() - before[name]).std() / before[name].std()
            assert 0.08 < float(change) < 0.12, name
    assert context.notes["weight_noise_relative_std"] == 0.1


def test_no_noise_changes_nothing(cell_context):
    """relative_std = 0 leaves the model's predictions as they were."""
    context = cell_context("weight_noise", {"relative_std": 0.0}, model="mlp", entry_points=True)
    model = context.trained_model("mlp")
    inputs = context.data.x_test[:32]
    with torch.inference_mode():
        expected = model(inputs)
    noisy = WeightNoise().apply(model, WeightNoiseConfig(relative_std=0.0), context)
    with torch.inference_mode():
        assert torch.equal(noisy(inputs), expected)


def test_a_real_cell(run_cell):
    """A cell of the real harness: trained, perturbed in a worker process, measured and timed."""
    record = run_cell("weight_noise", {"weight_noise": {"relative_std": 0.05}}, entry_points=True)
    assert record["status"] == "ok", record["error_message"]
    assert record["notes"]["weight_noise_relative_std"] == 0.05
    assert [step["step"] for step in record["steps"]] == ["train", "weight_noise"]
    assert record["metrics"]["accuracy_top1"] > 0.5 and record["latency"][0]["latency_p50_ms"] > 0
