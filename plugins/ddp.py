"""Data-parallel training: DistributedDataParallel processes started by torch.distributed's elastic launcher.

The cell's worker writes a launch spec, then starts ``world_size`` processes per
node through ``torch.distributed.run`` (the machinery behind ``torchrun``),
each running :func:`train_rank` from this module: gloo on CPU, nccl on CUDA, a
DistributedSampler, and the suite's batch size split across processes so the
effective batch size equals the single-process baseline's. On one node the
same launcher also runs one process, so the record holds the scaling
efficiency measured in the same run.

Across nodes (``nnodes > 1``) every node runs the same cell, whatever the executor: each
node's cell worker starts its launcher, and the launchers meet at ``rdzv_endpoint``
(torchrun's ``--nnodes``, ``--rdzv-backend``, ``--rdzv-endpoint``, ``--rdzv-id``; see
:func:`launcher_arguments`). With the default ``c10d`` backend the node whose host name
or address is the endpoint's hosts the rendezvous and ranks are assigned on joining;
the ``static`` backend uses ``node_rank`` instead. The first process of every node saves
the trained model (identical on all nodes), so each node records the cell.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Literal

from pydantic import Field

from benchharness import StrictConfig, Technique, hookimpl
from benchharness.processes import die_with_parent

PRELOAD = ("torch.distributed", "torch.distributed.run", "torch.nn.parallel")


class DdpConfig(StrictConfig):
    """Parameters of the ddp technique."""

    world_size: int = Field(2, ge=1, le=4096, description="Processes per node.")
    nnodes: int = Field(1, ge=1, le=4096, description="Machines taking part; more than 1 needs rdzv_endpoint.")
    node_rank: int = Field(0, ge=0, description="This machine's rank among the nodes (0 on the node that hosts the rendezvous).")
    rdzv_endpoint: str | None = Field(None, description="host:port of the rendezvous for multi-node runs (the node_rank 0 machine).")
    rdzv_backend: Literal["c10d", "static"] = Field("c10d", description="Rendezvous backend across nodes: c10d (ranks assigned on joining) or static (ranks from node_rank).")
    rdzv_id: str | None = Field(None, description="Rendezvous id shared by the nodes; default: derived from the cell and the launch, the same on every node.")
    backend: Literal["auto", "gloo", "nccl"] = Field("auto", description="Process-group backend; auto: nccl on CUDA, gloo on CPU.")
    compare_single_process: bool = Field(True, description="Also train with one process (same launcher, same threads per process) for the scaling efficiency.")


def threads_per_process(total_threads: int, world_size: int) -> int:
    """CPU threads each process gets when ``world_size`` processes share ``total_threads``."""
    return max(1, total_threads // world_size)


def rendezvous_id(config: DdpConfig, cell_id: str, nproc: int, nnodes: int) -> str:
    """The launch's rendezvous id: ``rdzv_id``, or one derived from what every node of the launch shares.

    Neither ``node_rank`` nor the suite's ``--set`` overrides enter it, since they may differ between nodes.
    """
    if config.rdzv_id:
        return config.rdzv_id
    shared = f"{cell_id}:{nproc}x{nnodes}:{config.rdzv_backend}:{config.rdzv_endpoint}"
    return hashlib.sha256(shared.encode()).hexdigest()[:16]


def launcher_arguments(config: DdpConfig, nproc: int, nnodes: int, spec_path: Path | str, run_id: str) -> list[str]:
    """The ``torch.distributed.run`` (``torchrun``) command line for one launch of ``nproc`` processes on each of ``nnodes`` nodes."""
    arguments = ["--nproc-per-node", str(nproc), "--nnodes", str(nnodes), "--max-restarts", "0"]
    if nnodes == 1:
        arguments += ["--standalone"]
    else:
        arguments += [
            "--node-rank", str(config.node_rank), "--rdzv-backend", config.rdzv_backend,
            "--rdzv-endpoint", config.rdzv_endpoint, "--rdzv-id", run_id,
        ]
    return arguments + ["--module", "benchharness.plugins.ddp", str(spec_path)]


def resolve_backend(backend: str, device_type: str) -> str:
    """The process-group backend: ``backend`` unless it is ``auto``, then nccl on CUDA and gloo elsewhere."""
    if backend != "auto":
        return backend
    return "nccl" if device_type == "cuda" else "gloo"


def nccl_problem(processes: int, who_needs: str) -> str | None:
    """Why ``processes`` NCCL processes, one GPU each, cannot run here (``who_needs`` starts the sentence), or None."""
    import torch
    import torch.distributed as dist

    if not dist.is_nccl_available():
        return "this torch build has no NCCL"
    if torch.cuda.device_count() < processes:
        return f"{who_needs} as many GPUs; {torch.cuda.device_count()} visible"
    return None


class Ddp(Technique):
    """Trains with DistributedDataParallel across processes (and nodes); an execution mode."""

    NAME = "ddp"
    DESCRIPTION = "DistributedDataParallel training via torch.distributed's elastic launcher (gloo on CPU, nccl on CUDA)"
    TRAINS = True
    Config = DdpConfig

    def check_suite(self, config, suite):
        if config.nnodes > 1 and not config.rdzv_endpoint:
            return "nnodes > 1 needs rdzv_endpoint = \"host:port\" (the node_rank 0 machine)"
        if config.node_rank >= config.nnodes:
            return f"node_rank {config.node_rank} must be below nnodes {config.nnodes}"
        if suite.train.batch_size < config.world_size * config.nnodes:
            return f"train.batch_size {suite.train.batch_size} is smaller than the {config.world_size * config.nnodes} processes"
        return None

    def unsupported_reason(self, config, device):
        import torch.distributed as dist

        if not dist.is_available():
            return "this torch build has no torch.distributed"
        if resolve_backend(config.backend, device.DEVICE) == "nccl":
            return nccl_problem(config.world_size, f"world_size {config.world_size} needs")
        return None

    def cacheable(self, config):
        return True

    def apply(self, model, config, context):
        import torch
        from torch.distributed.run import get_args_parser, run

        from benchharness.artifact import save_model

        workdir = Path(context.workdir or ".") / "ddp" / context.cell.id.replace("/", "__").replace(":", "-")
        workdir.mkdir(parents=True, exist_ok=True)
        save_model(model, context.data.x_train[:1], workdir / "initial.pt")
        threads = threads_per_process(context.suite.spec.measure.thread_count(), config.world_size)
        launches = [(config.world_size, config.nnodes)]
        if config.compare_single_process and config.nnodes == 1 and config.world_size > 1:
            launches.insert(0, (1, 1))
        results = {}
        for nproc, nnodes in launches:
            spec = {
                "suite_text": context.suite.text,
                "suite_source": context.suite.source,
                "overrides": context.suite.overrides,
                "plugins": list(context.plugin_options.extra),
                "entry_points": context.plugin_options.entry_points,
                "cell": context.cell.as_dict(),
                "budget": context.trainer.budget.model_dump(mode="json"),
                "backend": resolve_backend(config.backend, context.torch_device.type),
                "device_type": context.torch_device.type,
                "threads": threads,
                "initial": str(workdir / "initial.pt"),
                "output": str(workdir / f"trained-{nproc}x{nnodes}.pt"),
                "stats": str(workdir / f"stats-{nproc}x{nnodes}.json"),
                "launcher_pid": os.getpid(),
            }
            spec_path = workdir / f"spec-{nproc}x{nnodes}.json"
            spec_path.write_text(json.dumps(spec))
            run_id = rendezvous_id(config, context.cell.id, nproc, nnodes)
            run(get_args_parser().parse_args(launcher_arguments(config, nproc, nnodes, spec_path, run_id)))
            results[(nproc, nnodes)] = json.loads(Path(spec["stats"]).read_text())
        final = results[(config.world_size, config.nnodes)]
        model.load_state_dict(torch.load(workdir / f"trained-{config.world_size}x{config.nnodes}.pt", weights_only=True, map_location=context.torch_device))
        context.trainer.add_training(sum(result["wall_s"] for result in results.values()), sum(result["samples"] for result in results.values()))
        for (nproc, nnodes), result in results.items():
            label = "ddp" if (nproc, nnodes) == (config.world_size, config.nnodes) else "ddp single process"
            context.trainer.add_curve(label, result.get("curve", []))
        notes = {
            "ddp_backend": final["backend"],
            "ddp_world_size": final["world_size"],
            "ddp_nnodes": config.nnodes,
            "ddp_threads_per_process": threads,
            "ddp_samples_per_s": final["samples"] / final["wall_s"],
            "ddp_batch_size_per_process": final["batch_size_per_process"],
        }
        single = results.get((1, 1))
        if single:
            single_sps = single["samples"] / single["wall_s"]
            notes["ddp_single_process_samples_per_s"] = single_sps
            notes["ddp_speedup"] = notes["ddp_samples_per_s"] / single_sps
            notes["ddp_scaling_efficiency"] = notes["ddp_speedup"] / final["world_size"]
        context.notes.update(notes)
        return model


def train_rank(spec: dict) -> None:
    """One DDP process: join the group, train its shard with the shared trainer, each node's first process saves the result.

    It dies with its launcher (the cell's worker), which never outlives its cell.
    """
    die_with_parent(signal.SIGKILL, spec["launcher_pid"])
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DistributedSampler

    from benchharness.api import rebuild_config
    from benchharness.artifact import load_model
    from benchharness.host import PluginHost, PluginOptions
    from benchharness.suite import TrainBudget, load_suite_text
    from benchharness.train import Trainer

    dist.init_process_group(spec["backend"])
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.set_num_threads(spec["threads"])
    host = PluginHost(PluginOptions(extra=tuple(spec["plugins"]), entry_points=spec["entry_points"]))
    suite = load_suite_text(spec["suite_text"], spec["suite_source"], host, overrides=spec["overrides"])
    if spec["device_type"] == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        synchronize = torch.cuda.synchronize
    else:
        device = torch.device("cpu")
        synchronize = lambda: None  # noqa: E731
    dataset = host.datasets[suite.spec.data.name]
    data = dataset.load(rebuild_config(dataset.Config, suite.data_config)).to(device)
    model, _ = load_model(Path(spec["initial"]), "cpu")
    model.to(device)
    parallel = DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None)
    seed = spec["cell"]["seed"]
    sampler = DistributedSampler(range(data.x_train.shape[0]), num_replicas=world, rank=rank, shuffle=True, seed=seed)
    budget = rebuild_config(TrainBudget, spec["budget"])
    batch_size = max(1, budget.batch_size // world)
    trainer = Trainer(budget, device, seed, synchronize)
    dist.barrier()
    started = time.perf_counter()
    trainer.fit(parallel, data, sampler=sampler, batch_size=batch_size)
    dist.barrier()
    wall = time.perf_counter() - started
    if local_rank == 0:
        torch.save(model.state_dict(), spec["output"])
        stats = {
            "wall_s": wall,
            "samples": budget.epochs * len(sampler) * world,
            "world_size": world,
            "backend": spec["backend"],
            "batch_size_per_process": batch_size,
            "curve": trainer.curves[-1]["epochs"] if trainer.curves else [],
        }
        Path(spec["stats"]).write_text(json.dumps(stats))
    dist.destroy_process_group()


@hookimpl
def register_techniques(register):
    """Register the ddp technique."""
    register(Ddp())


if __name__ == "__main__":
    train_rank(json.loads(Path(sys.argv[1]).read_text()))
