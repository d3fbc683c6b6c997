"""Deployment paths on the CIFAR ResNet-18 at batch 32: the harness's records against a plain script, in one run.

On CPU: FX static int8, PT2E static int8 under torch.compile, torch.compile alone, torchao
int8 dynamic (compiled) and ONNX Runtime fp32 and int8, each against eager fp32. On CUDA
(when a GPU is visible): torch.compile, fp16 and bf16 casts, and torchao int8 dynamic,
int8 weight-only and float8, compiled. The harness's figures come from real runs of the
runner; the plain figures from a minimal script that builds the same transformations by
hand and times them interleaved with the same thread count. Needs the extras
``benchharness[torchao,onnx]``.

    .venv/bin/python benchmarks/deploy.py [--threads N] [--device cpu|cuda|all]
"""

from __future__ import annotations

import argparse
import copy
import warnings

import psutil
import torch
from techniques import plain_latencies_ms, run_suite

from benchharness.plugins import ort, torchao_methods
from benchharness.plugins.cpu_probe import CpuProbe
from benchharness.plugins.datasets import Synthetic
from benchharness.plugins.models import ResNet18Cifar

SUITE = """
name = "bench-deploy-{device}"
models = ["resnet18_cifar"]
devices = ["{device}"]
[data]
name = "synthetic"
shape = [3, 32, 32]
train_samples = 256
test_samples = 64
[[techniques]]
steps = ["baseline"]
{techniques}
[train]
epochs = 0
batch_size = 32
[measure]
batch_sizes = [32]
warmup = 5
min_iterations = 20
min_seconds = 1.0
min_rounds = 3
max_rounds = 6
threads = {threads}
"""

CPU_TECHNIQUES = {
    "fx-static-int8": ('["quantize"]', 'quantize = { method = "static", calibration_batches = 4 }'),
    "pt2e-static-int8": ('["quantize"]', 'quantize = { method = "pt2e_static", calibration_batches = 4 }'),
    "compile": ('["compile"]', ""),
    "ao-int8-dynamic-compiled": ('["quantize", "compile"]', 'quantize = { method = "int8_dynamic" }'),
    "ort-fp32": ('["onnxruntime"]', ""),
    "ort-int8": ('["onnxruntime"]', 'onnxruntime = { quantize = "static", calibration_batches = 4 }'),
}
CUDA_TECHNIQUES = {
    "compile": ('["compile"]', ""),
    "fp16": ('["quantize"]', 'quantize = { method = "fp16" }'),
    "bf16": ('["quantize"]', 'quantize = { method = "bf16" }'),
    "ao-int8-dynamic-compiled": ('["quantize", "compile"]', 'quantize = { method = "int8_dynamic" }'),
    "ao-int8-weight-only-compiled": ('["quantize", "compile"]', 'quantize = { method = "int8_weight_only" }'),
    "ao-float8-compiled": ('["quantize", "compile"]', 'quantize = { method = "float8" }'),
}


def suite_text(device: str, techniques: dict[str, tuple[str, str]], threads: int) -> str:
    """The benchmark suite for one device."""
    tables = "".join(f'[[techniques]]\nname = "{name}"\nsteps = {steps}\n{options}\n' for name, (steps, options) in techniques.items())
    return SUITE.format(device=device, techniques=tables, threads=threads)


def fresh_model_and_data():
    """A fresh CIFAR ResNet-18 (seeded) and the benchmark's synthetic data."""
    data = Synthetic().load(Synthetic.Config(shape=[3, 32, 32], train_samples=256, test_samples=64))
    torch.manual_seed(0)
    return ResNet18Cifar().build(10, (3, 32, 32)).eval(), data


def plain_cpu_models(threads: int) -> dict[str, torch.nn.Module]:
    """Eager fp32 and every CPU path built by hand, as a user following each library's docs would."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.set_num_threads(threads)
    model, data = fresh_model_and_data()
    calibration = [data.x_train[start : start + 32] for start in range(0, 128, 32)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.backends.quantized.engine = "x86"
        prepared = prepare_fx(copy.deepcopy(model), get_default_qconfig_mapping("x86"), (data.x_train[:1],))
        with torch.inference_mode():
            for batch in calibration:
                prepared(batch)
        fx_int8 = convert_fx(prepared)
        pt2e = torch.compile(plain_pt2e(copy.deepcopy(model), calibration, data.x_test[:8]))
        ao = torchao_methods.quantize_with_torchao(copy.deepcopy(model), "int8_dynamic", {})
    onnx_bytes = ort.export_onnx(model, data.x_test[:8])
    int8_bytes = ort.quantize_onnx(onnx_bytes, ort.OrtConfig(quantize="static"), calibration)
    sessions = {"ort-fp32": PlainSession(onnx_bytes, threads), "ort-int8": PlainSession(int8_bytes, threads)}
    return {"fp32": model, "fx-static-int8": fx_int8, "pt2e-static-int8": pt2e, "compile": torch.compile(model), "ao-int8-dynamic-compiled": torch.compile(ao), **sessions}


def plain_pt2e(model: torch.nn.Module, calibration: list[torch.Tensor], example: torch.Tensor) -> torch.nn.Module:
    """PT2E static int8 as torchao's tutorial has it: export, prepare with X86InductorQuantizer, calibrate, convert.

    torchao 0.18's quantizer refuses torchvision's ResNet blocks (one nn.ReLU called twice); the
    harness's tolerant subclass is the only part of it used here.
    """
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as x86
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    exported = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=65536)},)).module()
    quantizer = torchao_methods._reused_module_tolerant(x86.X86InductorQuantizer)()
    quantizer.set_global(x86.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        for batch in calibration:
            prepared(batch)
    return convert_pt2e(prepared)


class PlainSession:
    """An ONNX Runtime session called on a CPU tensor, with the harness's session options (threads, no spinning)."""

    def __init__(self, payload: bytes, threads: int):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(payload, options, providers=["CPUExecutionProvider"])

    def __call__(self, batch: torch.Tensor):
        return self.session.run(None, {"input": batch.numpy()})[0]


def plain_cuda_models() -> dict[str, torch.nn.Module]:
    """Eager fp32 and every CUDA path built by hand."""
    model, _ = fresh_model_and_data()
    model = model.cuda()
    half = {name: _cast(copy.deepcopy(model), dtype) for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16))}
    ao = {
        f"ao-{label}-compiled": torch.compile(torchao_methods.quantize_with_torchao(copy.deepcopy(model), method, {}, "cuda"))
        for label, method in (("int8-dynamic", "int8_dynamic"), ("int8-weight-only", "int8_weight_only"), ("float8", "float8"))
    }
    return {"fp32": model, "compile": torch.compile(model), **half, **ao}


def _cast(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    from benchharness.plugins.quantize import CastInputs

    return CastInputs.wrap(model.to(dtype), dtype)


def compare(device: str, records: dict[str, dict], plain_ms: dict[str, float]) -> None:
    """Print each path's speedup over eager fp32 from the harness and from the plain script, and whether they agree within 10%."""

    def p50(name: str) -> float:
        return records[f"resnet18_cifar/{name}"]["latency"][0]["latency_p50_ms"]

    print(f"\n{device}: eager fp32 p50 harness {p50('baseline'):.2f} ms, plain {plain_ms['fp32']:.2f} ms")
    for name in [name for name in plain_ms if name != "fp32"]:
        record = records[f"resnet18_cifar/{name}"]
        harness, plain = p50("baseline") / p50(name), plain_ms["fp32"] / plain_ms[name]
        agree = abs(harness / plain - 1) <= 0.10
        metrics = record["metrics"]
        print(
            f"  {name:<30} harness {harness:6.3f}x   plain {plain:6.3f}x   within 10%: {'yes' if agree else 'NO '}   "
            f"top-1 {metrics['accuracy_top1']:.3f}  {metrics['size_bytes'] / 1e6:6.2f} MB  expected: {metrics['speedup_expected']}"
        )


def main() -> None:
    """Run the comparisons on each device asked for and print them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=psutil.cpu_count(logical=False) or 1)
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    args = parser.parse_args()
    cpu = CpuProbe().describe()
    print(f"CPU: {cpu['model']}, {cpu['physical_cores']} cores, ISA: {' '.join(cpu['isa'])}; threads {args.threads}; torch {torch.__version__}")
    if args.device in ("cpu", "all"):
        records, _ = run_suite(suite_text("cpu", CPU_TECHNIQUES, args.threads), None)
        compare("cpu", records, plain_latencies_ms(plain_cpu_models(args.threads), fresh_model_and_data()[1].x_test[:32].contiguous()))
        fx, pt2e = (records[f"resnet18_cifar/{name}"]["latency"][0]["latency_p50_ms"] for name in ("fx-static-int8", "pt2e-static-int8"))
        print(f"  PT2E static int8 (compiled) against FX static int8: {fx / pt2e:.3f}x")
    if args.device in ("cuda", "all"):
        if not torch.cuda.is_available():
            print("\ncuda: no GPU visible; skipped")
            return
        print(f"\nGPU: {torch.cuda.get_device_name()}")
        records, _ = run_suite(suite_text("cuda", CUDA_TECHNIQUES, args.threads), None)
        batch = fresh_model_and_data()[1].x_test[:32].contiguous().cuda()
        compare("cuda", records, plain_latencies_ms(plain_cuda_models(), batch, seconds=3.0, synchronize=torch.cuda.synchronize))


if __name__ == "__main__":
    main()
