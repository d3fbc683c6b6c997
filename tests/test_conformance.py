"""Every built-in technique passes the plugin authors' conformance check (benchharness.testing.check_technique)."""

from __future__ import annotations

import pytest
import torch

from benchharness.testing import check_technique

BUILT_INS = [
    pytest.param("baseline", {}, "small_cnn", id="baseline"),
    pytest.param("prune", {"method": "magnitude"}, "small_cnn", id="prune-magnitude"),
    pytest.param("prune", {"method": "channels"}, "small_cnn", id="prune-channels"),
    pytest.param("prune", {"method": "channels", "amount": 0.25, "finetune_epochs": 1}, "small_cnn", id="prune-channels-finetuned"),
    pytest.param("prune", {"method": "magnitude", "scope": "layer", "finetune_epochs": 1}, "small_cnn", id="prune-magnitude-finetuned"),
    pytest.param("quantize", {"method": "dynamic"}, "small_cnn", id="quantize-dynamic"),
    pytest.param("quantize", {"method": "static"}, "small_cnn", id="quantize-static"),
    pytest.param("quantize", {"method": "qat"}, "small_cnn", id="quantize-qat"),
    pytest.param("quantize", {"method": "fp16"}, "small_cnn", id="quantize-fp16"),
    pytest.param("quantize", {"method": "bf16"}, "mlp", id="quantize-bf16"),
    pytest.param("distill", {"teacher": "small_cnn"}, "small_cnn", id="distill-teacher-small_cnn"),
    pytest.param("distill", {"teacher": "mlp"}, "small_cnn", id="distill-teacher-mlp"),
    pytest.param("amp", {"dtype": "bf16"}, "mlp", id="amp-bf16"),  # mlp: bf16 convolutions are slow on CPUs without bf16 kernels
    pytest.param("ddp", {"world_size": 2, "compare_single_process": False}, "mlp", id="ddp-2-processes", marks=pytest.mark.slow),
]
CUDA_BUILT_INS = [
    pytest.param("baseline", {}, id="baseline"),
    pytest.param("prune", {"method": "channels", "finetune_epochs": 1}, id="prune-channels-finetuned"),
    pytest.param("quantize", {"method": "fp16"}, id="quantize-fp16"),
    pytest.param("amp", {"dtype": "fp16"}, id="amp-fp16"),
    pytest.param("amp", {"dtype": "bf16"}, id="amp-bf16"),
    pytest.param("distill", {"teacher": "mlp"}, id="distill-teacher-mlp"),
]


@pytest.fixture(scope="module")
def shared_dir(tmp_path_factory):
    """One directory for the module's checks: they share the artifact cache, as the cells of a run do."""
    return tmp_path_factory.mktemp("conformance")


@pytest.mark.parametrize("technique, config, model", BUILT_INS)
def test_built_in_technique_conforms(technique, config, model, shared_dir):
    """check_technique passes (it raises TechniqueNotConforming otherwise); a technique that cannot run on the CPU says why."""
    report = check_technique(technique, config, model=model, tmp_path=shared_dir)
    if report.skip_reason:
        assert report.skip_reason.strip() and not report.failed
        pytest.skip(report.skip_reason)
    assert report.ok and report.outcome("apply returns a module") == "passed"


def test_amp_fp16_on_the_cpu_gives_a_skip_reason(shared_dir):
    """fp16 autocast is for CUDA: the checks that run it are not applicable, with the technique's own reason."""
    report = check_technique("amp", {"dtype": "fp16"}, model="mlp", tmp_path=shared_dir)
    assert report.skip_reason == 'amp: fp16 autocast is for CUDA; on CPU use dtype = "bf16"'
    assert report.outcome("logits") == "not applicable" and report.outcome("unsupported_reason") == "passed"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("technique, config", CUDA_BUILT_INS)
def test_built_in_technique_conforms_on_cuda(technique, config, shared_dir):
    """On a GPU the techniques that run there pass too."""
    report = check_technique(technique, config, model="mlp", device="cuda", tmp_path=shared_dir)
    assert report.ok and report.skip_reason is None
