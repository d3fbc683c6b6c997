"""Deployment paths: torch.compile, torchao and PT2E quantization, ONNX Runtime; and what the harness records of them."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

from benchharness.artifact import load_model, save_model
from benchharness.measure import count_flops, size_metrics
from benchharness.plugins import compiled, ort, quantize, torchao_methods
from benchharness.representation import count_parameters, inspect_representation, layer_flops, nonfinite_tensor

HAS_TORCHAO = importlib.util.find_spec("torchao") is not None
HAS_ORT = ort.missing_library_reason() is None
needs_torchao = pytest.mark.skipif(not HAS_TORCHAO, reason="needs torchao: pip install 'benchharness[torchao]'")
needs_ort = pytest.mark.skipif(not HAS_ORT, reason="needs onnx, onnxruntime, onnxscript: pip install 'benchharness[onnx]'")


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 64, 10)).eval()


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)).eval()


def deeper_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 64, 10)).eval()


def conv_only() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 10, 8), nn.Flatten()).eval()


class Breaking(nn.Module):
    """A model whose forward pass has a graph break (a Python value read from a tensor)."""

    def __init__(self):
        super().__init__()
        self.first, self.second = nn.Linear(64, 32), nn.Linear(32, 10)

    def forward(self, x):
        hidden = self.first(x.flatten(1))
        if hidden.sum().item() > 1e9:
            hidden = hidden * 0
        return self.second(hidden)


@pytest.fixture
def images():
    return torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def test_compiled_model_is_saved_whole_and_compiles_again_in_the_loading_process(tmp_path, images):
    """A compiled model pickles without its compiled callable, gives the eager outputs, and counts compilations per shape."""
    model = mlp()
    wrapped = compiled.compile_module(model, compiled.CompileConfig(backend="eager"))
    with torch.inference_mode():
        assert torch.allclose(wrapped(images), model(images), atol=1e-6)
    save_model(wrapped, images, tmp_path / "model.pt")
    torch._dynamo.reset()
    loaded, _ = load_model(tmp_path / "model.pt", "cpu")
    assert loaded.compilations == 0 and loaded.__dict__["_compiled"] is None
    with torch.inference_mode():
        for batch in (images[:1], images[:32], images[:1], images[:32]):
            loaded(batch)
        assert torch.allclose(loaded(images), model(images), atol=1e-6)
    assert loaded.benchharness_compilations() == 3 and loaded.recompilations() == 0, (loaded.compilations, loaded.shapes)


def test_graph_breaks_are_counted_with_their_reasons(images):
    """torch._dynamo.explain's graph breaks reach the notes: a .item() in forward splits the graph."""
    found = compiled.graph_breaks(Breaking().eval(), images[:1])
    assert found["graph_breaks"] >= 1 and found["graphs"] >= 2 and found["break_reasons"], found
    assert compiled.graph_breaks(mlp(), images[:1])["graph_breaks"] == 0


def test_compiled_representation_counts_the_eager_layers(images):
    """FLOPs, size and the verdict of a compiled model come from the eager model it runs, plus its own declaration."""
    model = mlp()
    reference = layer_flops(model, images[:1])
    wrapped = compiled.compile_module(model, compiled.CompileConfig(backend="eager"))
    facts = inspect_representation(wrapped, count_parameters(model)[0], reference, images[:1])
    assert facts["speedup_expected"] is True and facts["speedup_reason"].startswith("compiled graph (eager")
    assert "dense float model" in facts["speedup_reason"] and facts["speedup_bound"] is None
    assert count_flops(wrapped, images) == count_flops(model, images) > 0
    assert size_metrics(wrapped)["size_bytes"] == size_metrics(model)["size_bytes"]


def test_compile_refuses_unknown_backends_and_cuda_graphs_on_cpu(host):
    """A backend torch does not have, or reduce-overhead on a CPU, is a skip reason that names the fix."""
    technique, cpu = host.techniques["compile"], host.probes["cpu"]
    assert "no backend 'nope'" in technique.unsupported_reason(compiled.CompileConfig(backend="nope"), cpu)
    assert "CUDA graphs" in technique.unsupported_reason(compiled.CompileConfig(mode="reduce-overhead"), cpu)
    assert technique.unsupported_reason(compiled.CompileConfig(), cpu) is None


def test_missing_libraries_are_skip_reasons_with_the_install_command(host, monkeypatch):
    """Without torchao or onnxruntime their methods are skipped, and the reason says what to install."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name.split(".")[0] in ("torchao", "onnxruntime") else real(name, *args))
    cpu = host.probes["cpu"]
    for method in ("int8_dynamic", "int8_weight_only", "pt2e_static"):
        reason = host.techniques["quantize"].unsupported_reason(quantize.QuantizeConfig(method=method), cpu)
        assert reason == "torchao is not installed: pip install 'benchharness[torchao]'"
    assert "onnxruntime is not installed: pip install 'benchharness[onnx]'" == host.techniques["onnxruntime"].unsupported_reason(ort.OrtConfig(), cpu)


def test_torchao_methods_that_need_a_gpu_say_so(host):
    """int4 and float8 are CUDA paths; PT2E's X86 quantizer is a CPU path."""
    assert "CUDA kernels only" in torchao_methods.device_reason("int4_weight_only", "cpu")
    assert "compute capability 8.9" in torchao_methods.device_reason("float8", "cpu")
    assert "x86 CPUs" in torchao_methods.device_reason("pt2e_static", "cuda")
    assert torchao_methods.device_reason("int8_dynamic", "cpu") is None
    layer = nn.Linear(64, 10)
    assert "multiple of 16" in torchao_methods.shape_problem(layer, "int8_dynamic", "cuda")
    assert torchao_methods.shape_problem(layer, "int8_dynamic", "cpu") is None


@needs_torchao
@pytest.mark.parametrize("method", ["int8_dynamic", "int8_weight_only"])
def test_torchao_converts_linear_layers_and_the_record_counts_them(method, images, tmp_path):
    """Every Linear of an MLP becomes a torchao int8 tensor: about 8 bits per weight, all FLOPs in torchao's tensors, close outputs, saved whole."""
    model, reference = mlp(), mlp()
    notes: dict = {}
    quantized = torchao_methods.quantize_with_torchao(model, method, notes)
    assert notes[f"quantize_{method}_linear_layers"] == "2 of 2"
    with torch.inference_mode():
        assert (quantized(images) - reference(images)).abs().max() < 0.05
    reference_flops = layer_flops(reference, images[:1])
    facts = inspect_representation(quantized, count_parameters(reference)[0], reference_flops, images[:1])
    assert facts["fast_flops_share"] == pytest.approx(1.0) and facts["speedup_expected"] is True
    assert "in torchao's quantized tensors" in facts["speedup_reason"]
    storage = size_metrics(quantized)
    assert 8.0 < storage["bits_per_weight"] < 9.5, storage
    total, nonzero = count_parameters(quantized)
    assert total == count_parameters(reference)[0] and 0.98 * total < nonzero < total, "int8 rounds the smallest weights to zero, no more"
    assert nonfinite_tensor(quantized) is None
    save_model(quantized, images, tmp_path / "ao.pt")
    loaded, _ = load_model(tmp_path / "ao.pt", "cpu")
    with torch.inference_mode():
        assert torch.equal(loaded(images), quantized(images))


@needs_torchao
def test_torchao_on_a_model_without_linear_layers_converts_nothing_and_expects_nothing(images):
    """A conv net without Linear layers runs exactly as before: the notes and the verdict say so."""
    model, notes = conv_only(), {}
    reference_flops = layer_flops(model, images[:1])
    torchao_methods.quantize_with_torchao(model, "int8_dynamic", notes)
    assert notes["quantize_int8_dynamic_linear_layers"] == "0 of 0"
    assert "this model has none" in notes["quantize_int8_dynamic_converted_nothing"]
    facts = inspect_representation(model, count_parameters(model)[0], reference_flops, images[:1])
    assert facts["speedup_expected"] is False and facts["fast_flops_share"] == 0


@needs_torchao
def test_torchao_on_a_conv_net_converts_only_its_head_and_says_it_is_too_little(images):
    """A conv net whose convolutions do most of the work: the head is converted, a small share of FLOPs: not expected to be faster."""
    model, reference = deeper_cnn(), deeper_cnn()
    torchao_methods.quantize_with_torchao(model, "int8_dynamic", {})
    facts = inspect_representation(model, 0, layer_flops(reference, images[:1]), images[:1])
    assert facts["speedup_expected"] is False and 0 < facts["fast_flops_share"] < 0.5
    assert "too little to be measurably faster" in facts["speedup_reason"] and "torchao" in facts["speedup_reason"]


@needs_torchao
def test_pt2e_static_quantizes_every_conv_and_linear_and_loads_in_a_fresh_process(images, tmp_path):
    """PT2E with X86InductorQuantizer: all Linear/Conv FLOPs in int8, about 8 bits per weight, outputs near the float model's, saved as export bytes."""
    model = small_cnn()
    graph = torchao_methods.pt2e_static(model, [images[:32]], images)
    reference_flops = layer_flops(small_cnn(), images[:1])
    assert graph.benchharness_layer_flops["float"] == 0
    assert graph.benchharness_layer_flops["int8"] == pytest.approx(sum(reference_flops.values()))
    assert 8.0 < graph.storage["bits_per_weight"] < 9.0
    wrapped = compiled.compile_module(graph, compiled.CompileConfig(backend="eager"))
    facts = inspect_representation(wrapped, 0, reference_flops, images[:1])
    assert facts["fast_flops_share"] == pytest.approx(1.0) and "100% in int8 kernels" in facts["speedup_reason"]
    assert size_metrics(wrapped)["size_bytes"] == len(graph.program)
    save_model(wrapped, images, tmp_path / "pt2e.pt")
    loaded, _ = load_model(tmp_path / "pt2e.pt", "cpu")
    with torch.inference_mode():
        assert (loaded(images) - small_cnn()(images)).abs().max() < 0.1


@needs_ort
def test_onnxruntime_session_matches_eager_and_follows_the_thread_count(images, tmp_path):
    """The exported graph gives the eager outputs at any batch size; one session per torch thread count; it saves without its sessions."""
    model = small_cnn()
    payload = ort.export_onnx(model, images[:8])
    module = ort.OrtModule(model, payload, ort.OrtConfig(), "CPUExecutionProvider", {}, ort.onnx_storage(payload)[0])
    previous = torch.get_num_threads()
    try:
        for threads, batch in ((1, images[:1]), (2, images)):
            torch.set_num_threads(threads)
            assert torch.allclose(module(batch), model(batch).detach(), atol=1e-4)
            assert module.session_threads() == threads
        assert sorted(module.__dict__["_sessions"]) == [1, 2]
    finally:
        torch.set_num_threads(previous)
    assert size_metrics(module)["size_bytes"] == len(payload) and 31.9 < size_metrics(module)["bits_per_weight"] < 32.5
    facts = inspect_representation(module, 0, layer_flops(model, images[:1]), images[:1])
    assert facts["speedup_expected"] is True and "ONNX Runtime session (CPUExecutionProvider" in facts["speedup_reason"]
    save_model(module, images, tmp_path / "ort.pt")
    loaded, _ = load_model(tmp_path / "ort.pt", "cpu")
    assert loaded.__dict__["_sessions"] == {}
    assert torch.equal(loaded(images), module(images))


@needs_ort
@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_onnxruntime_int8_stores_int8_weights_and_counts_them(mode, images):
    """ORT's quantizers store every Conv/Gemm weight in int8: about 8 bits per weight, all layer FLOPs in int8, outputs near eager."""
    model = small_cnn()
    config = ort.OrtConfig(quantize=mode)
    payload = ort.quantize_onnx(ort.export_onnx(model, images[:8]), config, [images[:32]])
    storage, weights = ort.onnx_storage(payload)
    assert weights == {"0.weight", "4.weight"} and 8.0 < storage["bits_per_weight"] < 9.0
    kinds = ort._layer_kinds(model, images[:1], weights)
    assert kinds["float"] == 0 and kinds["int8"] == sum(layer_flops(model, images[:1]).values())
    module = ort.OrtModule(model, payload, config, "CPUExecutionProvider", kinds, storage)
    assert (module(images) - model(images).detach()).abs().max() < 0.5
    facts = inspect_representation(module, 0, layer_flops(model, images[:1]), images[:1])
    assert facts["fast_flops_share"] == pytest.approx(1.0) and "int8 kernels" in facts["speedup_reason"]


@needs_ort
def test_onnxruntime_without_its_cuda_provider_is_a_skip_reason(host):
    """The CPU-only onnxruntime package cannot run CUDA cells: the reason names onnxruntime-gpu."""
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    cuda = host.probes["cuda"]
    assert "install onnxruntime-gpu" in host.techniques["onnxruntime"].unsupported_reason(ort.OrtConfig(), cuda)


@needs_ort
@pytest.mark.slow
def test_export_failure_is_a_failed_cell_with_the_reason(run_cell):
    """A model ONNX cannot export (FX int8) fails its cell with the exporter's reason; the run goes on."""
    record = run_cell(["quantize", "onnxruntime"], {"quantize": {"method": "static", "calibration_batches": 2}})
    assert record["status"] == "failed", record.get("error_message")
    assert "torch.onnx.export could not export this model" in record["error_message"]


@pytest.mark.slow
def test_compile_failure_is_a_failed_cell_with_the_reason(run_cell, tmp_path):
    """fullgraph = true on a model with a graph break fails the cell with dynamo's reason instead of stopping the run."""
    plugin = tmp_path / "breaking_model.py"
    plugin.write_text(
        "import torch\n"
        "from benchharness import ModelFamily, hookimpl\n\n"
        "class Breaking(torch.nn.Module):\n"
        "    def __init__(self, inputs, classes):\n"
        "        super().__init__()\n"
        "        self.first, self.second = torch.nn.Linear(inputs, 32), torch.nn.Linear(32, classes)\n\n"
        "    def forward(self, x):\n"
        "        hidden = self.first(x.flatten(1))\n"
        "        return self.second(hidden * 0 if hidden.sum().item() > 1e9 else hidden)\n\n"
        "class BreakingFamily(ModelFamily):\n"
        "    NAME = 'breaking'\n"
        "    DESCRIPTION = 'a model with a graph break'\n\n"
        "    def build(self, num_classes, input_shape, variant=None):\n"
        "        return Breaking(int(torch.tensor(input_shape).prod()), num_classes)\n\n"
        "@hookimpl\n"
        "def register_models(register):\n"
        "    register(BreakingFamily())\n"
    )
    record = run_cell(["compile"], {"compile": {"fullgraph": True, "backend": "eager"}}, model="breaking", plugins=[str(plugin)])
    assert record["status"] == "failed", record
    message = record["error_message"].lower()
    assert "data-dependent" in message or "graph break" in message, record["error_message"]
    assert "breaking_model.py" in record["error_message"], "the reason points at the user's line"
