"""Model parallelism: balanced splits, a two-stage GPipe and 1F1B run through the runner, and clear refusals."""

from __future__ import annotations

import pytest
import torch

from benchharness.errors import SuiteError
from benchharness.plugins.pipeline import balanced_split, layer_costs, theoretical_bubble
from benchharness.suite import load_suite_text

BUDGET = {"train": {"epochs": 2, "batch_size": 64, "optimizer": "adam", "lr": 0.005, "weight_decay": 0.0}}


def test_split_minimises_the_largest_stage():
    """The split is contiguous, covers every layer, and its largest stage is as small as any split's."""
    costs = [1.0, 8.0, 1.0, 4.0, 4.0, 1.0]
    split = balanced_split(costs, 2)
    assert split == [(0, 2), (2, 6)]
    three = balanced_split(costs, 3)
    assert max(sum(costs[start:end]) for start, end in three) == 9.0 and three[0][0] == 0 and three[-1][1] == 6
    assert all(left[1] == right[0] for left, right in zip(three, three[1:]))
    assert [start for start, _ in balanced_split(costs, 6)] == list(range(6))
    with pytest.raises(ValueError, match="7 stages need at least 7"):
        balanced_split(costs, 7)


def test_layer_costs_count_the_flops_of_each_layer(host):
    """An MLP's Linear layers carry its FLOPs; activation layers count as (almost) nothing."""
    model = host.models["mlp"].build(10, (1, 8, 8))
    costs = layer_costs(model, torch.zeros(1, 1, 8, 8))
    assert costs[1] == 2 * 64 * 256 and costs[3] == 2 * 256 * 128 and costs[2] == 1.0
    assert theoretical_bubble(2, 4) == pytest.approx(0.2)


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
def test_two_stages_train_the_whole_model(run_cell, schedule):
    """Two processes train the split MLP; the unsplit model gets their weights back and learns digits; the notes hold balance, bubble and throughput."""
    record = run_cell("pipeline", {"pipeline": {"stages": 2, "microbatches": 4, "schedule": schedule}}, suite=BUDGET, cache=False)
    assert record["status"] == "ok", record.get("error_message")
    notes = record["notes"]
    assert notes["pipeline_split"] == [[0, 3], [3, 6]] and notes["pipeline_backend"] == "gloo"
    assert sum(notes["pipeline_stage_flops_share"]) == pytest.approx(1.0)
    assert 0 < notes["pipeline_bubble_fraction"] < 1 and notes["pipeline_bubble_fraction_theoretical"] == pytest.approx(0.2)
    assert 0 < notes["pipeline_balance"] <= 1
    assert notes["pipeline_samples_per_s"] > 0 and notes["pipeline_unsplit_samples_per_s"] > 0
    assert notes["pipeline_speedup"] == pytest.approx(notes["pipeline_samples_per_s"] / notes["pipeline_unsplit_samples_per_s"])
    assert record["metrics"]["accuracy_top1"] > 0.85
    (curve,) = [curve for curve in record["curves"] if curve["label"] == "pipeline"]
    losses = [point["train_loss"] for point in curve["epochs"]]
    assert len(losses) == 2 and losses[1] < losses[0]


def test_a_model_that_is_not_sequential_is_skipped_with_the_reason(run_cell):
    """The CIFAR ResNet-18 is not an nn.Sequential: the cell is skipped and says why."""
    record = run_cell("pipeline", model="resnet18_cifar", suite={**BUDGET, "data": {"name": "synthetic", "train_samples": 64, "test_samples": 16}}, cache=False)
    assert record["status"] == "skipped" and "nn.Sequential" in record["error_message"]


def test_more_microbatches_than_the_batch_is_a_suite_error(host):
    """microbatches above the batch size is refused when the suite loads, naming both."""
    text = 'models = ["mlp"]\n[data]\nname = "digits"\n[train]\nbatch_size = 4\n[[techniques]]\nsteps = ["pipeline"]\npipeline = { microbatches = 8 }\n'
    with pytest.raises(SuiteError, match="batch_size 4 is smaller than microbatches 8"):
        load_suite_text(text, "suite.toml", host)


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_two_stages_on_two_gpus_with_nccl(run_cell):
    """On two GPUs the stages talk over nccl."""
    record = run_cell("pipeline", {"pipeline": {"stages": 2}}, device="cuda", suite=BUDGET, cache=False)
    assert record["status"] == "ok" and record["notes"]["pipeline_backend"] == "nccl"
