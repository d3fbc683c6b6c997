"""A model's own inference memory: weights, input and live activations at their peak, tracked on CPU, from the allocator on CUDA."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from benchharness.memory import TRACKING_METHOD, inference_memory, resident_bytes, resident_tensors, tracked_peak_bytes
from benchharness.plugins.amp import autocast_module

MIB = 2**20
IN, HIDDEN, OUT = 1024, 2048, 10
FLOAT_WEIGHT_BYTES = 4 * (IN * HIDDEN + HIDDEN + HIDDEN * OUT + OUT)


def mlp() -> nn.Module:
    """Linear(1024, 2048) -> ReLU -> Linear(2048, 10): 8.5 MB of float32 weights."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(IN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, OUT)).eval()


def convnet() -> nn.Module:
    """Two 3x3 convolutions and a classifier, for 3x16x16 inputs."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    ).eval()


class BigIntermediate(nn.Module):
    """A linear layer whose forward also makes, uses and drops a 64 MiB tensor."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(IN, OUT)

    def forward(self, x):
        scratch = torch.ones(16 * MIB)  # 16 Mi float32 = 64 MiB
        scale = scratch.sum() / scratch.numel()
        del scratch
        return self.linear(x) * scale


class SparseInside(nn.Module):
    """A forward pass that goes through a sparse tensor, whose memory has no storage to track."""

    def forward(self, x):
        return x.to_sparse().to_dense() * 2


@pytest.fixture(autouse=True)
def one_thread():
    """Run torch on one thread, restoring the previous count afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def batch(size: int) -> torch.Tensor:
    """A batch of ``size`` random MLP inputs."""
    return torch.randn(size, IN)


def test_resident_bytes_are_the_weights():
    """The MLP's parameters and buffers are counted once each, at their float32 size."""
    model = mlp()
    assert resident_bytes(resident_tensors(model)) == FLOAT_WEIGHT_BYTES
    model[2].weight = model[0].weight  # a tied weight is one storage
    assert resident_bytes(resident_tensors(model)) < FLOAT_WEIGHT_BYTES


def test_mlp_peak_holds_weights_input_and_activations():
    """The peak covers weights and input, and grows with the batch by the activations' bytes.

    At the ReLU both the first layer's output and the ReLU's output are alive: 2 x batch x 2048 floats.
    """
    model = mlp()
    small, large = tracked_peak_bytes(model, batch(16)), tracked_peak_bytes(model, batch(256))
    assert small >= FLOAT_WEIGHT_BYTES + 16 * IN * 4
    expected_growth = (256 - 16) * (IN * 4 + 2 * HIDDEN * 4)
    assert large - small == pytest.approx(expected_growth, rel=0.1)
    assert large < FLOAT_WEIGHT_BYTES + 256 * (IN + 3 * HIDDEN) * 4


def test_peak_does_not_depend_on_a_previous_pass():
    """Measuring twice gives the same figure: nothing is left over from the first pass."""
    model = mlp()
    inputs = batch(64)
    assert tracked_peak_bytes(model, inputs) == tracked_peak_bytes(model, inputs)


def test_dynamic_int8_model_uses_less_memory_than_its_float_original():
    """quantize_dynamic stores int8 weights in packed parameters; their state-dict tensors count, at a quarter of the size."""
    model = mlp()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)
    weights = resident_bytes(resident_tensors(quantized))
    assert FLOAT_WEIGHT_BYTES / 4 <= weights < FLOAT_WEIGHT_BYTES / 3
    inputs = batch(32)
    float_peak, int8_peak = tracked_peak_bytes(model, inputs), tracked_peak_bytes(quantized, inputs)
    assert weights < int8_peak < float_peak / 2


def test_static_int8_model_is_tracked():
    """An FX static int8 model (quantized activations, torchbind packed weights) is tracked and smaller than the float one."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    model = convnet()
    inputs = torch.randn(8, 3, 16, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_fx(copy.deepcopy(model), get_default_qconfig_mapping("x86"), (inputs,))
        with torch.no_grad():
            prepared(inputs)
        quantized = convert_fx(prepared)
    float_peak, int8_peak = tracked_peak_bytes(model, inputs), tracked_peak_bytes(quantized, inputs)
    assert int8_peak > resident_bytes(resident_tensors(quantized)) + inputs.nbytes
    assert int8_peak < float_peak / 2


def test_channels_last_model_counts_the_same_storages():
    """The same convolutions in channels-last layout hold as many bytes as in the contiguous one."""
    model = convnet()
    inputs = torch.randn(8, 3, 16, 16)
    contiguous = tracked_peak_bytes(model, inputs)
    channels_last = tracked_peak_bytes(copy.deepcopy(model).to(memory_format=torch.channels_last), inputs.contiguous(memory_format=torch.channels_last))
    assert channels_last == pytest.approx(contiguous, rel=0.05)


def test_autocast_wrapper_is_tracked():
    """Under the amp plugin's autocast wrapper, the bf16 copies of the weights made in the forward pass count too."""
    model = mlp()
    inputs = batch(32)
    wrapped = autocast_module(model, "cpu", torch.bfloat16)
    assert tracked_peak_bytes(wrapped, inputs) >= FLOAT_WEIGHT_BYTES + inputs.nbytes + IN * HIDDEN * 2


def test_a_big_intermediate_shows_in_the_peak():
    """A 64 MiB tensor made and dropped inside forward raises the peak by at least that much."""
    model = BigIntermediate().eval()
    peak = tracked_peak_bytes(model, batch(4))
    assert peak >= 64 * MIB + resident_bytes(resident_tensors(model))
    assert peak < 65 * MIB + resident_bytes(resident_tensors(model))


def test_inference_memory_on_the_cpu_probe(host):
    """On CPU: the tracked peak, its method, and the process's high-water mark labelled as such."""
    model, inputs = mlp(), batch(32)
    metrics = inference_memory(model, inputs, host.probes["cpu"])
    assert metrics["inference_peak_method"] == TRACKING_METHOD
    assert metrics["inference_peak_bytes"] == tracked_peak_bytes(model, inputs)
    assert metrics["process_peak_rss_bytes"] > 10 * metrics["inference_peak_bytes"]  # torch itself


def test_untrackable_model_falls_back_without_failing(host):
    """A forward pass through tensors without storage is run untracked: no figure, the reason, and the process's peak."""
    model = SparseInside()
    with pytest.raises(RuntimeError, match="without a storage"):
        tracked_peak_bytes(model, batch(4))
    metrics = inference_memory(model, batch(4), host.probes["cpu"])
    assert metrics["inference_peak_bytes"] is None
    assert metrics["inference_peak_method"].startswith("unavailable: RuntimeError")
    assert metrics["process_peak_rss_bytes"] > 0


def test_a_failing_forward_pass_still_raises(host):
    """Tracking never hides a model that cannot run: its error reaches the caller."""

    class Broken(nn.Module):
        def forward(self, x):
            raise ValueError("broken model")

    with pytest.raises(ValueError, match="broken model"):
        inference_memory(Broken(), batch(4), host.probes["cpu"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_allocator_peak_is_the_models_own(host):
    """On CUDA the allocator's peak, less what the device held before (here a 256 MiB tensor), matches the tracked peak."""
    probe = host.probes["cuda"]
    model, inputs = mlp().cuda(), batch(256).cuda()
    other = torch.ones(64 * MIB, device="cuda")
    with torch.inference_mode():
        model(inputs)  # cuBLAS allocates its workspace on the first matmul
    metrics = inference_memory(model, inputs, probe)
    tracked = tracked_peak_bytes(model, inputs)
    assert metrics["inference_peak_method"] == "cuda_max_memory_allocated"
    assert metrics["process_peak_rss_bytes"] is None
    assert metrics["inference_peak_bytes"] == pytest.approx(tracked, rel=0.05)
    assert metrics["inference_peak_bytes"] < other.nbytes
