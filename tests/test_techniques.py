"""prune, quantize and distill on real models and the digits data, through the same context a worker uses."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from benchharness.api import Cell, Probe
from benchharness.errors import SuiteError
from benchharness.matrix import expand
from benchharness.representation import QUANTIZED_MODULE_PREFIXES, count_parameters, inspect_representation, nonfinite_tensor
from benchharness.suite import load_suite_text
from benchharness.train import evaluate_accuracy
from benchharness.worker import CellRun, CellTask

SUITE = """
models = ["small_cnn", "mlp"]
[data]
name = "digits"
[train]
epochs = 8
batch_size = 64
optimizer = "adam"
lr = 0.005
weight_decay = 0.0
[measure]
threads = 2
"""


@pytest.fixture(scope="module")
def run(host, tmp_path_factory):
    """A prepared cell run (small_cnn on digits, CPU) with a fresh cache, and its context."""
    suite = load_suite_text(SUITE, "techniques.toml", host)
    cell = expand(suite)[0]
    cell_run = CellRun(CellTask(cell, suite, host.options, tmp_path_factory.mktemp("work"), tmp_path_factory.mktemp("cache")))
    context = cell_run.prepare()
    return cell_run, context


@pytest.fixture(scope="module")
def trained(run):
    """The trained small CNN (from the cache after the first call)."""
    cell_run, _ = run
    model = cell_run.trained_model("small_cnn")
    return model


def accuracy(model, context) -> float:
    """Top-1 accuracy on the digits test split."""
    return evaluate_accuracy(model, context.data, 512, context.torch_device)


def technique(host, name, **params):
    """A registered technique and its validated config."""
    item = host.techniques[name]
    return item, item.Config.model_validate(params)


def test_trained_model_is_good(run, trained):
    """The reference model the techniques start from learns the digits."""
    assert accuracy(trained, run[1]) > 0.95


def test_magnitude_pruning_global(host, run, trained):
    """Global magnitude pruning zeros the requested share of weights and leaves no masks behind."""
    prune, config = technique(host, "prune", method="magnitude", amount=0.5)
    model = prune.apply(copy.deepcopy(trained), config, run[1])
    weights = [module.weight for module in model.modules() if isinstance(module, (nn.Conv2d, nn.Linear))]
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros / sum(w.numel() for w in weights) == pytest.approx(0.5, abs=0.01)
    assert not any(name.endswith(("_orig", "_mask")) for name in model.state_dict())
    assert all(not module._forward_pre_hooks for module in model.modules())
    facts = inspect_representation(model, count_parameters(trained)[0])
    assert facts["speedup_expected"] is False and "dense" in facts["speedup_reason"]
    assert accuracy(model, run[1]) > 0.85


def test_magnitude_pruning_per_layer(host, run, trained):
    """Per-layer scope prunes every layer by the same ratio."""
    prune, config = technique(host, "prune", method="magnitude", amount=0.3, scope="layer")
    model = prune.apply(copy.deepcopy(trained), config, run[1])
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            assert float((module.weight == 0).float().mean()) == pytest.approx(0.3, abs=0.02)


def test_channel_pruning_removes_channels(host, run, trained):
    """Channel pruning physically shrinks the layers; the classifier keeps its classes; the model still runs."""
    prune, config = technique(host, "prune", method="channels", amount=0.5)
    model = prune.apply(copy.deepcopy(trained), config, run[1])
    convs = [module for module in model.modules() if isinstance(module, nn.Conv2d)]
    assert [conv.out_channels for conv in convs] == [16, 32, 64]
    assert [module for module in model.modules() if isinstance(module, nn.Linear)][-1].out_features == 10
    params, nonzero = count_parameters(model)
    assert params < 0.3 * count_parameters(trained)[0]
    assert params == nonzero
    assert model(run[1].data.x_test[:5]).shape == (5, 10)
    assert inspect_representation(model, count_parameters(trained)[0])["speedup_expected"] is True


def test_channel_pruning_restores_from_state(host, run, trained):
    """A cached fine-tuned pruned model is rebuilt exactly: re-prune, then load the weights."""
    prune, config = technique(host, "prune", method="channels", amount=0.5, finetune_epochs=1)
    model = prune.apply(copy.deepcopy(trained), config, run[1])
    state = prune.cache_state(model, config)
    restored = prune.restore(copy.deepcopy(trained), config, run[1], state)
    sample = run[1].data.x_test[:8]
    assert torch.equal(restored(sample), model(sample))


def test_dynamic_quantization(host, run, trained):
    """Dynamic int8 replaces Linear layers with dynamically quantized ones and keeps the accuracy."""
    quantize, config = technique(host, "quantize", method="dynamic")
    model = quantize.apply(copy.deepcopy(trained), config, run[1])
    assert any(type(module).__module__.startswith("torch.ao.nn.quantized.dynamic") for module in model.modules())
    assert accuracy(model, run[1]) > accuracy(trained, run[1]) - 0.03


def test_static_quantization(host, run, trained):
    """Static FX int8 quantizes convolutions too, shrinks the model about 4x and keeps the accuracy."""
    from benchharness.measure import serialized_size_bytes

    quantize, config = technique(host, "quantize", method="static", calibration_batches=4)
    model = quantize.apply(copy.deepcopy(trained), config, run[1])
    quantized = [module for module in model.modules() if type(module).__module__.startswith(QUANTIZED_MODULE_PREFIXES)]
    assert any("Conv" in type(module).__name__ for module in quantized)
    assert serialized_size_bytes(model) < 0.35 * serialized_size_bytes(trained)
    assert accuracy(model, run[1]) > accuracy(trained, run[1]) - 0.03
    facts = inspect_representation(model, count_parameters(trained)[0])
    assert facts["speedup_expected"] is True and facts["fake_quantized_modules"] == 0


def test_quantization_aware_training_and_restore(host, run, trained):
    """QAT fine-tunes with fake quantization, converts to int8, and is restored exactly from its state."""
    quantize, config = technique(host, "quantize", method="qat", qat_epochs=1)
    model = quantize.apply(copy.deepcopy(trained), config, run[1])
    assert inspect_representation(model, 1)["quantized_modules"] > 0
    assert accuracy(model, run[1]) > 0.9
    restored = quantize.restore(copy.deepcopy(trained), config, run[1], quantize.cache_state(model, config))
    sample = run[1].data.x_test[:8]
    assert torch.equal(restored(sample), model(sample))


def test_fake_quantized_model_is_flagged(trained):
    """A model left with fake-quantize modules is honestly said not to be faster."""
    from torch.ao.quantization import get_default_qat_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_qat_fx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_qat_fx(copy.deepcopy(trained).train(), get_default_qat_qconfig_mapping("x86"), (torch.zeros(1, 1, 8, 8),))
    facts = inspect_representation(prepared, count_parameters(trained)[0])
    assert facts["speedup_expected"] is False and "fake-quantized" in facts["speedup_reason"]


def test_non_finite_weights_are_found_by_name_and_observers_are_not(trained):
    """nonfinite_tensor names the first NaN or inf parameter or buffer; uncalibrated observers (min/max at inf) are fine."""
    from torch.ao.quantization import get_default_qat_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_qat_fx

    assert nonfinite_tensor(trained) is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_qat_fx(copy.deepcopy(trained).train(), get_default_qat_qconfig_mapping("x86"), (torch.zeros(1, 1, 8, 8),))
    assert any(not torch.isfinite(buffer).all() for buffer in prepared.buffers())
    assert nonfinite_tensor(prepared) is None
    poisoned = copy.deepcopy(trained)
    names = [name for name, _ in poisoned.named_parameters()]
    with torch.no_grad():
        dict(poisoned.named_parameters())[names[-1]][0] = float("inf")
    assert nonfinite_tensor(poisoned) == names[-1]
    batchnorm = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    batchnorm[1].running_var[1] = float("nan")
    assert nonfinite_tensor(batchnorm) == "1.running_var"


def test_notes_are_converted_to_json_values():
    """Tensors, arrays, numpy scalars, paths, dtypes and nested containers become JSON values; the rest is refused by name."""
    import json
    from pathlib import Path

    import numpy as np

    from benchharness.worker import json_safe_notes

    notes = {
        "loss": torch.tensor(0.25),
        "matrix": torch.eye(2, dtype=torch.bfloat16),
        "half": np.float16(1.5),
        "flags": np.array([True, False]),
        "where": Path("out") / "x.pt",
        "dtype": torch.float16,
        "device": torch.device("cpu"),
        "nested": {1: (np.int32(2), {"deep": [torch.tensor([1, 2])]}), None: {3, 1, 2}},
        "plain": [1, "a", None, 2.5, True],
    }
    converted = json_safe_notes(notes)
    assert converted == {
        "loss": 0.25,
        "matrix": [[1.0, 0.0], [0.0, 1.0]],
        "half": 1.5,
        "flags": [True, False],
        "where": "out/x.pt",
        "dtype": "torch.float16",
        "device": "cpu",
        "nested": {"1": [2, {"deep": [[1, 2]]}], "null": [1, 2, 3]},
        "plain": [1, "a", None, 2.5, True],
    }
    assert json.loads(json.dumps(converted)) == converted
    assert type(json_safe_notes({"x": np.float64(1.0)})["x"]) is float
    with pytest.raises(TypeError, match=r"note 'stats\.layers\[1\]' is a object; notes must be JSON values"):
        json_safe_notes({"stats": {"layers": [1, object()]}})
    with pytest.raises(TypeError, match="note 'z' is a complex"):
        json_safe_notes({"z": torch.tensor(1 + 2j)})


def test_masks_left_in_place_are_flagged(trained):
    """Pruning masks still attached mean no speedup."""
    from torch.nn.utils import prune

    model = copy.deepcopy(trained)
    prune.l1_unstructured(model[0], "weight", amount=0.5)
    facts = inspect_representation(model, count_parameters(trained)[0])
    assert facts["pruning_masks"] == 1 and facts["speedup_expected"] is False


@pytest.mark.parametrize("method, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_casts(host, run, trained, method, dtype):
    """fp16/bf16 cast weights and activations; callers still pass and get float32."""
    quantize, config = technique(host, "quantize", method=method)
    model = quantize.apply(copy.deepcopy(trained), config, run[1])
    assert {p.dtype for p in model.parameters()} == {dtype}
    output = model(run[1].data.x_test[:4])
    assert output.dtype == torch.float32
    assert accuracy(model, run[1]) > accuracy(trained, run[1]) - 0.05


def test_int8_is_unsupported_on_cuda(host):
    """int8 methods name the reason they cannot run on a GPU; casts can."""

    class FakeCuda(Probe):
        NAME = "cuda"
        DEVICE = "cuda"

    quantize = host.techniques["quantize"]
    for method in ("dynamic", "static", "qat"):
        assert "CPU" in quantize.unsupported_reason(quantize.Config(method=method), FakeCuda())
    assert quantize.unsupported_reason(quantize.Config(method="bf16"), FakeCuda()) is None


def test_quantization_warnings_stay_out_of_the_output(host, run, trained):
    """torch.ao.quantization's deprecation warnings are not shown to the user."""
    quantize, config = technique(host, "quantize", method="static", calibration_batches=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quantize.apply(copy.deepcopy(trained), config, run[1])
    assert not [w for w in caught if "quantiz" in str(w.message).lower() or issubclass(w.category, DeprecationWarning)]


def test_distillation_loss_formula():
    """alpha=0 is plain cross-entropy; equal logits make the KL term zero; T^2 scales the soft term."""
    from benchharness.plugins.distill import distillation_loss

    torch.manual_seed(0)
    student, teacher, targets = torch.randn(16, 10), torch.randn(16, 10), torch.randint(10, (16,))
    ce = nn.functional.cross_entropy(student, targets)
    assert torch.allclose(distillation_loss(student, teacher, targets, 0.0, 4.0), ce)
    assert distillation_loss(student, student, targets, 1.0, 4.0).abs() < 1e-6
    kl = nn.functional.kl_div(nn.functional.log_softmax(student / 2, 1), nn.functional.softmax(teacher / 2, 1), reduction="batchmean")
    assert torch.allclose(distillation_loss(student, teacher, targets, 1.0, 2.0), kl * 4)


def test_distill_records_teacher_and_gain(host, run):
    """The student (an MLP) learns from the small CNN; the notes carry both accuracies and the gain."""
    cell_run, context = run
    distill, config = technique(host, "distill", teacher="small_cnn", alpha=0.7)
    student = cell_run.fresh_model("mlp")
    student = distill.apply(student, config, context)
    notes = context.notes
    assert notes["teacher"] == "small_cnn" and notes["teacher_accuracy_top1"] > 0.95
    assert notes["distill_gain_top1"] == pytest.approx(accuracy(student, context) - notes["student_without_teacher_accuracy_top1"])
    assert accuracy(student, context) > 0.9


@pytest.mark.parametrize(
    "table, path, words",
    [
        ('steps = ["prune"]\nprune = { amount = 1.5 }', "techniques[0].prune.amount", "less than 1"),
        ('steps = ["prune"]\nprune = { method = "bogus" }', "techniques[0].prune.method", "magnitude"),
        ('steps = ["quantize"]\nquantize = { method = "int4" }', "techniques[0].quantize.method", "dynamic"),
        ('steps = ["quantize"]\nquantize = { backend = "x86", calibration = 4 }', "techniques[0].quantize.calibration", "calibration_batches"),
        ('steps = ["distill"]\ndistill = { teacher = "resnet18_cifar" }', "techniques[0].distill", "not a model of the suite"),
        ('steps = ["distill"]', "techniques[0].distill.teacher", "missing"),
    ],
)
def test_bad_technique_parameters_fail_at_validate_time(host, table, path, words):
    """Bad parameters name the key path and say what is expected."""
    text = SUITE + "\n[[techniques]]\n" + table + "\n"
    with pytest.raises(SuiteError) as caught:
        load_suite_text(text, "bad.toml", host)
    message = str(caught.value)
    assert path in message and words in message, message
