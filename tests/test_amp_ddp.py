"""amp (bf16 on CPU) and ddp (2 gloo processes) on the digits data; NVML sampling with a stand-in NVML."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from click.testing import CliRunner

from benchharness.api import Probe
from benchharness.cli import cli
from benchharness.matrix import expand
from benchharness.plugins.cuda_probe import NvmlSampler
from benchharness.plugins.ddp import launcher_arguments, threads_per_process
from benchharness.store import RunDir
from benchharness.suite import load_suite_text
from benchharness.worker import CellRun, CellTask
from tests.test_probes import FakeNVMLError, fake_pynvml

SUITE = """
models = ["small_cnn"]
[data]
name = "digits"
[train]
epochs = 4
batch_size = 64
optimizer = "adam"
lr = 0.005
weight_decay = 0.0
[measure]
batch_sizes = [1]
warmup = 1
min_iterations = 3
min_seconds = 0
threads = 2
"""


class FakeDevice(Probe):
    """A probe standing in for a device type."""

    def __init__(self, device: str):
        self.DEVICE = device
        self.NAME = device


@pytest.fixture(scope="module")
def run(host, tmp_path_factory):
    """A prepared amp cell run on digits with its context."""
    suite = load_suite_text(SUITE + '[[techniques]]\nsteps = ["amp"]\namp = { dtype = "bf16" }\n', "amp.toml", host)
    cell_run = CellRun(CellTask(expand(suite)[0], suite, host.options, tmp_path_factory.mktemp("work"), None))
    return cell_run, cell_run.prepare()


def test_amp_bf16_trains_and_infers_under_autocast(host, run):
    """bf16 autocast on CPU: training and inference run in bfloat16 and the dtype used is recorded."""
    cell_run, context = run
    amp = host.techniques["amp"]
    config = amp.Config(dtype="bf16")
    seen = []
    model = cell_run.fresh_model("small_cnn")
    model[0].register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    context.model_trained = False
    wrapped = amp.apply(model, config, context)
    assert torch.bfloat16 in seen, "training did not run under bf16 autocast"
    trained_samples = context.trainer.samples_seen
    context.model_trained = True
    amp.apply(cell_run.fresh_model("small_cnn"), config, context)
    assert context.trainer.samples_seen == trained_samples, "amp trained a model handed to it trained"
    seen.clear()
    logits = wrapped(context.data.x_test[:4])
    assert seen == [torch.bfloat16] and logits.dtype == torch.float32
    assert context.notes["amp_dtype"] == "bfloat16" and context.notes["amp_grad_scaler"] is False
    assert context.trainer.autocast_dtype == torch.bfloat16
    assert context.trainer.samples_seen > 0
    from benchharness.train import evaluate_accuracy

    assert evaluate_accuracy(wrapped, context.data, 512, context.torch_device) > 0.9


def test_amp_dtype_support(host):
    """fp16 on CPU is skipped with the reason; bf16 on CPU runs."""
    amp = host.techniques["amp"]
    assert "bf16" in amp.unsupported_reason(amp.Config(dtype="fp16"), FakeDevice("cpu"))
    assert amp.unsupported_reason(amp.Config(dtype="bf16"), FakeDevice("cpu")) is None
    assert "not wired" in amp.unsupported_reason(amp.Config(dtype="bf16"), FakeDevice("xpu"))


def test_autocast_wrapper_declares_its_speedup(host, run):
    """The representation of an autocast model says a speedup depends on the device's kernels."""
    from benchharness.plugins.amp import autocast_module
    from benchharness.representation import inspect_representation

    facts = inspect_representation(autocast_module(torch.nn.Linear(4, 2), "cpu", torch.bfloat16), 10)
    assert facts["speedup_expected"] is True and "autocast bfloat16" in facts["speedup_reason"]


def test_ddp_launcher_arguments():
    """Single node uses --standalone; several nodes pass node rank and rendezvous to the launcher."""
    from benchharness.plugins.ddp import DdpConfig

    single = launcher_arguments(DdpConfig(world_size=2), 2, 1, "spec.json", "id")
    assert single[:2] == ["--nproc-per-node", "2"] and "--standalone" in single and single[-3:] == ["--module", "benchharness.plugins.ddp", "spec.json"]
    multi = launcher_arguments(DdpConfig(world_size=4, nnodes=2, node_rank=1, rdzv_endpoint="10.0.0.1:29400"), 4, 2, "spec.json", "abc")
    assert "--standalone" not in multi
    for flag, value in (("--nnodes", "2"), ("--node-rank", "1"), ("--rdzv-endpoint", "10.0.0.1:29400"), ("--rdzv-id", "abc"), ("--rdzv-backend", "c10d")):
        assert multi[multi.index(flag) + 1] == value
    assert threads_per_process(8, 2) == 4 and threads_per_process(2, 4) == 1


@pytest.mark.parametrize("backend, node_rank", [("c10d", 0), ("c10d", 1), ("static", 1)])
def test_ddp_two_node_launch_config(monkeypatch, backend, node_rank):
    """Two nodes: torch's own parser turns the arguments into a launch of 2 nodes meeting at the endpoint, with one id on both nodes."""
    from torch.distributed.run import config_from_args, get_args_parser

    from benchharness.plugins.ddp import DdpConfig, rendezvous_id

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    config = DdpConfig(world_size=4, nnodes=2, node_rank=node_rank, rdzv_endpoint="node-a.cluster:29400", rdzv_backend=backend)
    run_id = rendezvous_id(config, "resnet18/ddp/cuda/r0", 4, 2)
    assert run_id == rendezvous_id(config.model_copy(update={"node_rank": 1 - node_rank}), "resnet18/ddp/cuda/r0", 4, 2)
    assert run_id != rendezvous_id(config, "resnet18/ddp/cuda/r1", 4, 2)
    assert rendezvous_id(config.model_copy(update={"rdzv_id": "job-1234"}), "resnet18/ddp/cuda/r0", 4, 2) == "job-1234"
    arguments = launcher_arguments(config, 4, 2, "spec.json", run_id)
    assert arguments == [
        "--nproc-per-node", "4", "--nnodes", "2", "--max-restarts", "0", "--node-rank", str(node_rank), "--rdzv-backend", backend,
        "--rdzv-endpoint", "node-a.cluster:29400", "--rdzv-id", run_id, "--module", "benchharness.plugins.ddp", "spec.json",
    ]
    launch, entry, entry_arguments = config_from_args(get_args_parser().parse_args(arguments))
    assert (launch.min_nodes, launch.max_nodes, launch.nproc_per_node) == (2, 2, 4)
    assert (launch.rdzv_backend, launch.rdzv_endpoint, launch.run_id) == (backend, "node-a.cluster:29400", run_id)
    assert launch.rdzv_configs.get("rank") == (node_rank if backend == "static" else None)
    assert entry_arguments[-2:] == ["benchharness.plugins.ddp", "spec.json"]


@pytest.mark.parametrize(
    "table, words",
    [
        ("ddp = { world_size = 2, nnodes = 2 }", "rdzv_endpoint"),
        ("ddp = { world_size = 2, nnodes = 2, node_rank = 2, rdzv_endpoint = 'h:1' }", "node_rank 2 must be below nnodes 2"),
        ("ddp = { world_size = 0 }", "greater than or equal to 1"),
        ("ddp = { nnodes = 2, rdzv_endpoint = 'h:1', rdzv_backend = 'etcd' }", "'c10d' or 'static'"),
    ],
)
def test_bad_ddp_parameters(host, table, words):
    """Multi-node settings are checked at validate time."""
    from benchharness.errors import SuiteError

    with pytest.raises(SuiteError, match=words):
        load_suite_text(SUITE + '[[techniques]]\nsteps = ["ddp"]\n' + table + "\n", "ddp.toml", host)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """A real run with a baseline cell and a ddp cell of 2 gloo processes."""
    root = tmp_path_factory.mktemp("ddp")
    suite = root / "ddp.toml"
    suite.write_text(SUITE.replace('models = ["small_cnn"]', 'models = ["mlp"]') + '[[techniques]]\nsteps = ["baseline"]\n[[techniques]]\nsteps = ["ddp"]\nddp = { world_size = 2 }\n')
    result = CliRunner().invoke(cli, ["run", str(suite), "--out", str(root / "runs"), "--no-cache"])
    (run_path,) = (root / "runs").iterdir()
    return result, {record["cell"]["technique"]: record for record in RunDir(run_path).records()}, run_path


def test_ddp_with_two_gloo_processes(ddp_run):
    """Two processes train the model; throughput, the one-process reference and the efficiency are recorded."""
    result, records, run_path = ddp_run
    assert result.exit_code == 0, result.output
    record = records["ddp"]
    assert record["status"] == "ok", record.get("traceback")
    notes = record["notes"]
    assert notes["ddp_backend"] == "gloo" and notes["ddp_world_size"] == 2
    assert notes["ddp_batch_size_per_process"] == 32
    assert notes["ddp_samples_per_s"] > 0 and notes["ddp_single_process_samples_per_s"] > 0
    assert notes["ddp_scaling_efficiency"] == pytest.approx(notes["ddp_speedup"] / 2)
    assert record["metrics"]["accuracy_top1"] > 0.85
    padded_by_the_sampler = 1438
    assert record["metrics"]["train_samples"] == 4 * 1437 + 4 * padded_by_the_sampler
    spec = json.loads(next(run_path.glob("ddp/*/spec-2x1.json")).read_text())
    assert spec["backend"] == "gloo" and spec["threads"] == 1


def test_ddp_processes_all_saw_different_shards(ddp_run):
    """The DDP model differs from the single-process baseline but is as good (same effective batch size)."""
    _, records, _ = ddp_run
    assert records["ddp"]["metrics"]["accuracy_top1"] == pytest.approx(records["baseline"]["metrics"]["accuracy_top1"], abs=0.05)


def test_nvml_sampler_uses_the_energy_counter(monkeypatch):
    """With a total-energy counter, energy is its difference; power, clocks and throttling are aggregated."""
    pynvml = sampling_nvml(energy=True, throttle=0x4)
    with NvmlSampler(pynvml, interval_s=0.001) as sampler:
        import time

        time.sleep(0.03)
    summary = sampler.summary()
    assert summary["energy_method"] == "nvml_total_energy_counter"
    assert summary["energy_j"] == pytest.approx((pynvml.energy_reads[-1] - pynvml.energy_reads[0]) / 1000)
    assert summary["gpu_power_mean_w"] == pytest.approx(250.0)
    assert summary["gpu_sm_clock_max_mhz"] == 1800
    assert summary["gpu_throttled"] is True and summary["gpu_throttle_reasons"] == ["sw_power_cap"]
    assert summary["gpu_samples"] >= 2


def test_nvml_sampler_integrates_power_without_a_counter():
    """Without an energy counter, energy integrates the power samples over time, and says so."""
    pynvml = sampling_nvml(energy=False, throttle=0)
    with NvmlSampler(pynvml, interval_s=0.001) as sampler:
        import time

        time.sleep(0.05)
    summary = sampler.summary()
    assert summary["energy_method"] == "integrated_power_samples"
    assert summary["energy_j"] == pytest.approx(250.0 * (summary["gpu_sampled_s"]), rel=0.25)
    assert summary["gpu_throttled"] is False


def test_cuda_probe_sample_without_nvml(host, monkeypatch):
    """Without NVML the probe's sampling yields why, instead of failing the measurement."""
    monkeypatch.setitem(sys.modules, "pynvml", None)
    with host.probes["cuda"].sample() as samples:
        pass
    assert "NVML unavailable" in samples["gpu_sampling"]


def sampling_nvml(energy: bool, throttle: int):
    """A stand-in NVML whose GPU draws 250 W at 1800 MHz."""
    module = fake_pynvml()
    module.energy_reads = []
    module.NVML_TEMPERATURE_GPU = 0

    def total_energy(handle):
        if not energy:
            raise FakeNVMLError("not supported")
        value = 1_000_000 + 250 * len(module.energy_reads) * 10
        module.energy_reads.append(value)
        return value

    module.nvmlDeviceGetTotalEnergyConsumption = total_energy
    module.nvmlDeviceGetPowerUsage = lambda handle: 250_000
    module.nvmlDeviceGetUtilizationRates = lambda handle: type("Rates", (), {"gpu": 97})()
    module.nvmlDeviceGetClockInfo = lambda handle, clock: 1800
    module.nvmlDeviceGetTemperature = lambda handle, sensor: 66
    module.nvmlDeviceGetCurrentClocksEventReasons = lambda handle: throttle
    return module


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_sampling_on_a_real_gpu(host):
    """On a GPU, sampling reads real power and energy."""
    with host.probes["cuda"].sample() as samples:
        torch.randn(4096, 4096, device="cuda") @ torch.randn(4096, 4096, device="cuda")
        torch.cuda.synchronize()
    assert samples["gpu_samples"] >= 1 and samples["energy_j"] >= 0
