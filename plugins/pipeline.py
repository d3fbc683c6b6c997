"""Model parallelism: the model split into pipeline stages, one process each, trained with torch.distributed.pipelining.

The cell's worker splits an ``nn.Sequential`` model at top-level children so that
the stages' FLOPs are balanced, writes a launch spec, and starts one process per
stage through ``torch.distributed.run`` (as ddp does: gloo on CPU, nccl on CUDA),
each running :func:`train_stage` with a GPipe or 1F1B schedule over
``microbatches`` micro-batches of the cell's batch size. Each process saves its
stage's weights, which the worker puts back into the unsplit model, so inference
is measured on the whole model like every cell. With ``compare_unsplit`` the same
launcher also trains the model unsplit in one process with the same threads, so
the record holds the pipeline's throughput against it, the stage balance, and the
bubble fraction (the share of time a stage waits).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Literal

from pydantic import Field

from benchharness import StrictConfig, Technique, hookimpl
from benchharness.plugins.ddp import nccl_problem, resolve_backend
from benchharness.processes import die_with_parent

PRELOAD = ("torch.distributed", "torch.distributed.run", "torch.distributed.pipelining")


class PipelineConfig(StrictConfig):
    """Parameters of the pipeline technique."""

    stages: int = Field(2, ge=2, le=64, description="Pipeline stages, one process (or GPU) each.")
    microbatches: int = Field(4, ge=1, le=4096, description="Micro-batches each training batch is split into.")
    schedule: Literal["gpipe", "1f1b"] = Field("gpipe", description="gpipe: all forwards, then all backwards; 1f1b: one forward, one backward (less activation memory).")
    backend: Literal["auto", "gloo", "nccl"] = Field("auto", description="Process-group backend; auto: nccl on CUDA, gloo on CPU.")
    compare_unsplit: bool = Field(True, description="Also train the unsplit model in one process (same launcher, same threads per process) for the throughput ratio.")


def balanced_split(costs: list[float], stages: int) -> list[tuple[int, int]]:
    """Contiguous [start, end) ranges of ``costs`` for ``stages`` stages, minimising the largest stage's total (each stage non-empty)."""
    count = len(costs)
    if stages > count:
        raise ValueError(f"{stages} stages need at least {stages} top-level layers; the model has {count}")
    prefix = [0.0]
    for cost in costs:
        prefix.append(prefix[-1] + cost)
    best = {(0, 0): (0.0, [])}
    for stage in range(1, stages + 1):
        for end in range(stage, count - (stages - stage) + 1):
            candidates = []
            for start in range(stage - 1, end):
                if (start, stage - 1) in best:
                    worst, ranges = best[(start, stage - 1)]
                    candidates.append((max(worst, prefix[end] - prefix[start]), ranges + [(start, end)]))
            best[(end, stage)] = min(candidates, key=lambda item: item[0])
    return best[(count, stages)][1]


def layer_costs(model, sample) -> list[float]:
    """FLOPs of each top-level child of a Sequential for one sample (1 for a child without FLOPs, so that no stage is empty of work by accident)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    costs = []
    value = sample
    with torch.no_grad():
        for child in model:
            counter = FlopCounterMode(display=False)
            with counter:
                value = child(value)
            costs.append(float(counter.get_total_flops()) or 1.0)
    return costs


def theoretical_bubble(stages: int, microbatches: int) -> float:
    """The idle share of a GPipe or 1F1B schedule with equal stages: (p - 1) / (m + p - 1)."""
    return (stages - 1) / (microbatches + stages - 1)


class Pipeline(Technique):
    """Trains with the model split into pipeline stages across processes; an execution mode."""

    NAME = "pipeline"
    DESCRIPTION = "model parallelism: nn.Sequential models split into balanced stages, GPipe or 1F1B via torch.distributed.pipelining"
    TRAINS = True
    Config = PipelineConfig

    def check_suite(self, config, suite):
        if suite.train.batch_size < config.microbatches:
            return f"train.batch_size {suite.train.batch_size} is smaller than microbatches {config.microbatches}"
        return None

    def unsupported_reason(self, config, device):
        import torch.distributed as dist

        if not dist.is_available():
            return "this torch build has no torch.distributed"
        if device.DEVICE not in ("cpu", "cuda"):
            return f"pipeline stages run on cpu (gloo) or cuda (nccl), not {device.DEVICE}"
        if resolve_backend(config.backend, device.DEVICE) == "nccl":
            return nccl_problem(config.stages, f"{config.stages} stages need")
        return None

    def cacheable(self, config):
        return True

    def apply(self, model, config, context):
        import torch
        from torch import nn
        from torch.distributed.run import get_args_parser, run

        from benchharness.artifact import save_model
        from benchharness.errors import Unsupported
        from benchharness.plugins.ddp import DdpConfig, launcher_arguments, rendezvous_id, threads_per_process

        if not isinstance(model, nn.Sequential):
            raise Unsupported(f"pipeline splits nn.Sequential models at their top-level layers; {context.cell.model} is a {type(model).__name__}")
        sample = context.data.x_train[:1]
        costs = layer_costs(model, sample)
        split = balanced_split(costs, config.stages)
        workdir = Path(context.workdir or ".") / "pipeline" / context.cell.id.replace("/", "__").replace(":", "-")
        workdir.mkdir(parents=True, exist_ok=True)
        save_model(model, sample, workdir / "initial.pt")
        threads = threads_per_process(context.suite.spec.measure.thread_count(), config.stages)
        launches = [("pipeline", config.stages)] + ([("unsplit", 1)] if config.compare_unsplit else [])
        results = {}
        for mode, nproc in launches:
            spec = {
                "mode": mode, "split": split, "config": config.model_dump(mode="json"),
                "suite_text": context.suite.text, "suite_source": context.suite.source, "overrides": context.suite.overrides,
                "plugins": list(context.plugin_options.extra), "entry_points": context.plugin_options.entry_points,
                "budget": context.trainer.budget.model_dump(mode="json"), "seed": context.cell.seed,
                "backend": resolve_backend(config.backend, context.torch_device.type), "device_type": context.torch_device.type,
                "threads": threads, "initial": str(workdir / "initial.pt"), "workdir": str(workdir), "launcher_pid": os.getpid(),
            }
            spec_path = workdir / f"spec-{mode}.json"
            spec_path.write_text(json.dumps(spec))
            arguments = launcher_arguments(DdpConfig(), nproc, 1, spec_path, rendezvous_id(DdpConfig(), context.cell.id, nproc, 1))
            arguments[arguments.index("benchharness.plugins.ddp")] = "benchharness.plugins.pipeline"
            run(get_args_parser().parse_args(arguments))
            results[mode] = json.loads((workdir / f"stats-{mode}.json").read_text())
        state = {}
        for stage in range(config.stages):
            state.update(torch.load(workdir / f"stage-{stage}.pt", weights_only=True, map_location=context.torch_device))
        model.load_state_dict(state)
        piped = results["pipeline"]
        context.trainer.add_training(sum(result["wall_s"] for result in results.values()), sum(result["samples"] for result in results.values()))
        context.trainer.add_curve("pipeline", [{"epoch": index + 1, "train_loss": loss, "test_accuracy": None} for index, loss in enumerate(piped["epoch_losses"])])
        context.notes.update(self._notes(config, split, costs, threads, piped, results.get("unsplit")))
        return model

    @staticmethod
    def _notes(config, split, costs, threads, piped, unsplit) -> dict:
        total = sum(costs)
        busy = piped["stage_busy_s"]
        notes = {
            "pipeline_stages": config.stages, "pipeline_schedule": config.schedule, "pipeline_microbatches": config.microbatches,
            "pipeline_backend": piped["backend"], "pipeline_threads_per_process": threads,
            "pipeline_split": [[start, end] for start, end in split],
            "pipeline_stage_flops_share": [sum(costs[start:end]) / total for start, end in split],
            "pipeline_stage_busy_s": busy,
            "pipeline_balance": min(busy) / max(busy) if max(busy) > 0 else None,
            "pipeline_bubble_fraction_theoretical": theoretical_bubble(config.stages, config.microbatches),
            "pipeline_bubble_fraction": 1.0 - sum(busy) / (len(busy) * piped["wall_s"]),
            "pipeline_samples_per_s": piped["samples"] / piped["wall_s"],
            "pipeline_dropped_samples_per_epoch": piped["dropped_per_epoch"],
        }
        if unsplit:
            notes["pipeline_unsplit_samples_per_s"] = unsplit["samples"] / unsplit["wall_s"]
            notes["pipeline_speedup"] = notes["pipeline_samples_per_s"] / notes["pipeline_unsplit_samples_per_s"]
        return notes


def _load(spec: dict):
    """The suite's data on the rank's device, the model, the budget, the device and its synchronize."""
    import torch

    from benchharness.api import rebuild_config
    from benchharness.artifact import load_model
    from benchharness.host import PluginHost, PluginOptions
    from benchharness.suite import TrainBudget, load_suite_text

    torch.set_num_threads(spec["threads"])
    host = PluginHost(PluginOptions(extra=tuple(spec["plugins"]), entry_points=spec["entry_points"]))
    suite = load_suite_text(spec["suite_text"], spec["suite_source"], host, overrides=spec["overrides"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if spec["device_type"] == "cuda":
        torch.cuda.set_device(local_rank)
        device, synchronize = torch.device("cuda", local_rank), torch.cuda.synchronize
    else:
        device, synchronize = torch.device("cpu"), (lambda: None)
    dataset = host.datasets[suite.spec.data.name]
    data = dataset.load(rebuild_config(dataset.Config, suite.data_config)).to(device)
    model, _ = load_model(Path(spec["initial"]), "cpu")
    return data, model.to(device), rebuild_config(TrainBudget, spec["budget"]), device, synchronize


def train_unsplit(spec: dict) -> None:
    """The comparison: the whole model trained in one process with the shared trainer; saves its throughput."""
    from benchharness.train import Trainer

    data, model, budget, device, synchronize = _load(spec)
    trainer = Trainer(budget.model_copy(update={"learning_curve": False}), device, spec["seed"], synchronize)
    started = time.perf_counter()
    trainer.fit(model, data)
    wall = time.perf_counter() - started
    stats = {"wall_s": wall, "samples": trainer.samples_seen}
    Path(spec["workdir"], "stats-unsplit.json").write_text(json.dumps(stats))


def _stage_busy_seconds(stage_module, example, target, last: bool, loss_fn, repeats: int = 5) -> float:
    """Seconds one forward and backward pass of this stage takes on one micro-batch, alone (median of ``repeats``)."""
    import statistics

    times = []
    for _ in range(repeats):
        inputs = example.detach().requires_grad_(example.is_floating_point())
        started = time.perf_counter()
        output = stage_module(inputs)
        (loss_fn(output, target) if last else output.sum()).backward()
        times.append(time.perf_counter() - started)
    stage_module.zero_grad(set_to_none=True)
    return statistics.median(times)


def train_stage(spec: dict) -> None:
    """One pipeline stage: join the group, train the stage's layers with the schedule, save them and this stage's figures."""
    die_with_parent(signal.SIGKILL, spec["launcher_pid"])
    if spec["mode"] == "unsplit":
        train_unsplit(spec)
        return
    from collections import OrderedDict

    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

    from benchharness.train import LrSchedule, make_optimizer

    dist.init_process_group(spec["backend"])
    rank, world = dist.get_rank(), dist.get_world_size()
    data, model, budget, device, synchronize = _load(spec)
    config = spec["config"]
    start, end = spec["split"][rank]
    children = list(model)
    stage_module = nn.Sequential(OrderedDict((str(index), children[index]) for index in range(start, end))).to(device).train()
    criterion = nn.CrossEntropyLoss(label_smoothing=budget.label_smoothing)
    stage = PipelineStage(stage_module, rank, world, device)
    schedule_type = ScheduleGPipe if config["schedule"] == "gpipe" else Schedule1F1B
    schedule = schedule_type(stage, config["microbatches"], loss_fn=criterion)
    optimizer = make_optimizer(stage_module, budget)
    count = data.x_train.shape[0]
    batches = count // budget.batch_size
    lr_schedule = LrSchedule(optimizer, budget, batches, budget.epochs)
    generator = torch.Generator().manual_seed(spec["seed"])
    last = rank == world - 1
    epoch_losses = []
    dist.barrier()
    started = time.perf_counter()
    for _ in range(budget.epochs):
        order = torch.randperm(count, generator=generator).to(device)
        losses: list = []
        for batch in range(batches):
            index = order[batch * budget.batch_size : (batch + 1) * budget.batch_size]
            optimizer.zero_grad(set_to_none=True)
            if rank == 0:
                schedule.step(data.x_train[index])
            elif last:
                schedule.step(target=data.y_train[index], losses=losses)
            else:
                schedule.step()
            optimizer.step()
            lr_schedule.after_batch()
        mean = float(torch.stack(losses).mean()) if losses else 0.0
        lr_schedule.after_epoch(mean)
        epoch_losses.append(mean)
    synchronize()
    dist.barrier()
    wall = time.perf_counter() - started
    torch.save(stage_module.state_dict(), Path(spec["workdir"], f"stage-{rank}.pt"))
    micro = max(1, budget.batch_size // config["microbatches"])
    example = data.x_train[:micro]
    with torch.no_grad():
        for child in children[:start]:
            example = child.to(device)(example)
    busy_per_micro = _stage_busy_seconds(stage_module, example, data.y_train[:micro], last, criterion)
    busy = busy_per_micro * config["microbatches"] * batches * budget.epochs
    gathered = [None] * world
    dist.all_gather_object(gathered, {"busy": busy, "losses": epoch_losses})
    if last:
        stats = {
            "wall_s": wall, "samples": batches * budget.batch_size * budget.epochs, "backend": spec["backend"],
            "stage_busy_s": [item["busy"] for item in gathered], "epoch_losses": epoch_losses,
            "dropped_per_epoch": count - batches * budget.batch_size,
        }
        Path(spec["workdir"], "stats-pipeline.json").write_text(json.dumps(stats))
    dist.destroy_process_group()


@hookimpl
def register_techniques(register):
    """Register the pipeline technique."""
    register(Pipeline())


if __name__ == "__main__":
    train_stage(json.loads(Path(sys.argv[1]).read_text()))
