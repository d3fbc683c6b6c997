"""Latency statistics, the timing loop, size, parameter and FLOP counts, and example batches."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from torch import nn

from benchharness.measure import (
    count_flops,
    count_parameters,
    example_batch,
    serialized_size_bytes,
    size_metrics,
    time_inference,
    time_interleaved,
)
from benchharness.rounds import latency_entry
from benchharness.suite import MeasureSettings


def settings(**values) -> MeasureSettings:
    """Measure settings with tiny defaults for tests."""
    defaults = dict(warmup=0, min_iterations=1, min_seconds=0.0, max_iterations=1000)
    return MeasureSettings(**{**defaults, **values})


def test_latency_entry_pools_samples_and_averages_round_medians():
    """Percentiles, mean, std (ddof=1) and throughput over pooled samples match numpy; p50 is the rounds' geometric mean median."""
    rng = np.random.default_rng(2)
    rounds = [{"samples_ms": list(rng.lognormal(mean=1.0 + 0.1 * index, sigma=0.3, size=51)), "other_cores": 0.0} for index in range(3)]
    summary = latency_entry(rounds, batch_size=8)
    values = np.concatenate([timing["samples_ms"] for timing in rounds])
    round_p50s = [np.median(timing["samples_ms"]) for timing in rounds]
    assert summary["batch_size"] == 8 and summary["rounds"] == 3
    assert summary["round_p50_ms"] == pytest.approx(round_p50s)
    assert summary["latency_p50_ms"] == pytest.approx(float(np.exp(np.mean(np.log(round_p50s)))))
    assert summary["latency_p90_ms"] == pytest.approx(np.percentile(values, 90))
    assert summary["latency_p99_ms"] == pytest.approx(np.percentile(values, 99))
    assert summary["latency_mean_ms"] == pytest.approx(values.mean())
    assert summary["latency_std_ms"] == pytest.approx(values.std(ddof=1))
    assert summary["throughput_sps"] == pytest.approx(8 * values.size / (values.sum() / 1000.0))
    assert summary["iterations"] == values.size
    assert summary["samples_ms"] == pytest.approx(list(values))
    assert summary["latency_p50_ci95_low_ms"] < summary["latency_p50_ms"] < summary["latency_p50_ci95_high_ms"]


def test_latency_entry_of_one_round_has_no_interval():
    """One round of one sample: zero spread, batch / duration throughput, and no CI (it needs two rounds)."""
    summary = latency_entry([{"samples_ms": [4.0]}], batch_size=2)
    assert summary["latency_std_ms"] == 0.0
    assert summary["latency_p50_ms"] == pytest.approx(4.0)
    assert summary["throughput_sps"] == pytest.approx(2 / 0.004)
    assert math.isnan(summary["latency_p50_ci95_low_ms"])


class Recorder:
    """A small linear model whose forward calls (and their inference mode) are recorded by a hook."""

    def __init__(self, sleep_s: float = 0.0):
        self.model = nn.Linear(4, 2)
        self.events: list[str] = []
        self.inference_mode: list[bool] = []
        self.model.train()

        def hook(module, inputs, output):
            if sleep_s:
                time.sleep(sleep_s)
            self.events.append("forward")
            self.inference_mode.append(torch.is_inference_mode_enabled())

        self.model.register_forward_hook(hook)

    def synchronize(self) -> None:
        """Record a synchronisation."""
        self.events.append("sync")

    @property
    def forwards(self) -> int:
        """Forward calls so far."""
        return self.events.count("forward")


BATCH = torch.randn(3, 4)


def test_time_inference_runs_warmup_then_min_iterations():
    """Warmup calls are untimed; with no time minimum, exactly min_iterations samples are taken."""
    recorder = Recorder()
    samples = time_inference(recorder.model, BATCH, settings(warmup=3, min_iterations=5), recorder.synchronize)
    assert len(samples) == 5
    assert recorder.forwards == 3 + 5
    assert all(sample > 0 for sample in samples)
    assert not recorder.model.training
    assert all(recorder.inference_mode)


def test_time_inference_synchronizes_around_every_sample():
    """synchronize runs after warmup (before the first sample) and after each timed call."""
    recorder = Recorder()
    time_inference(recorder.model, BATCH, settings(warmup=2, min_iterations=4), recorder.synchronize)
    assert recorder.events == ["forward"] * 2 + ["sync"] + ["forward", "sync"] * 4


def test_time_inference_goes_on_until_min_seconds():
    """When min_iterations is reached first, timing continues until min_seconds of samples, then stops."""
    recorder = Recorder(sleep_s=0.005)
    samples = time_inference(recorder.model, BATCH, settings(min_iterations=2, min_seconds=0.05), recorder.synchronize)
    assert len(samples) > 2
    assert sum(samples) / 1000.0 >= 0.05
    assert sum(samples[:-1]) / 1000.0 < 0.05
    assert all(sample >= 5.0 for sample in samples)


def test_time_inference_goes_on_until_min_iterations():
    """When min_seconds is reached first, timing continues until min_iterations samples."""
    recorder = Recorder(sleep_s=0.002)
    samples = time_inference(recorder.model, BATCH, settings(min_iterations=12, min_seconds=0.001), recorder.synchronize)
    assert len(samples) == 12


@pytest.mark.parametrize("min_iterations", [1, 7])
def test_time_inference_respects_max_iterations(min_iterations):
    """max_iterations caps the samples while min_seconds is still unmet (settings keep min <= max iterations)."""
    recorder = Recorder()
    samples = time_inference(
        recorder.model, BATCH, settings(min_iterations=min_iterations, min_seconds=60.0, max_iterations=7), recorder.synchronize
    )
    assert len(samples) == 7
    assert recorder.forwards == 7


class TurnLog:
    """Models that log their name on every forward call into one shared list, each sleeping its own time."""

    def __init__(self, **sleep_s: float):
        self.calls: list[str] = []
        self.models = {}
        for name, seconds in sleep_s.items():
            model = nn.Linear(4, 2)
            model.register_forward_hook(lambda module, inputs, output, name=name, seconds=seconds: (time.sleep(seconds), self.calls.append(name)))
            self.models[name] = model

    def turns(self) -> list[tuple[str, int]]:
        """The timed calls grouped into turns: (model, iterations in a row)."""
        found: list[tuple[str, int]] = []
        for name in self.calls:
            if found and found[-1][0] == name:
                found[-1] = (name, found[-1][1] + 1)
            else:
                found.append((name, 1))
        return found


def test_time_interleaved_cycles_through_every_model_in_varying_order():
    """With one-call turns, every cycle times each model once; the order, and so each model's neighbours, varies."""
    log = TurnLog(a=0.0, b=0.0, c=0.0)
    batches = {name: BATCH for name in log.models}
    samples = time_interleaved(log.models, batches, settings(warmup=1, min_iterations=30, interleave_ms=1e-6), lambda: None)
    assert log.calls[:3] == ["a", "b", "c"], "warm-up: each model once, in order"
    timed = log.calls[3:]
    cycles = [timed[index : index + 3] for index in range(0, len(timed), 3)]
    assert len(cycles) == 30 and all(sorted(cycle) == ["a", "b", "c"] for cycle in cycles)
    assert len({tuple(cycle) for cycle in cycles}) > 3 and len({cycle[0] for cycle in cycles}) == 3
    assert all(len(values) == 30 for values in samples.values())


def test_time_interleaved_turns_last_interleave_ms():
    """A turn ends with the first call that brings it to interleave_ms: runs of 1 ms and 3 ms calls make turns of several calls, never more than 4 ms of them.

    A run of one model's calls is one turn, or two when a shuffled cycle starts with the model
    that ended the last. Load only lengthens calls, so the bounds hold on a busy machine too:
    a turn of 1 ms calls has at most 4 of them, a turn of 3 ms calls at most 2.
    """
    log = TurnLog(a=0.001, b=0.003)
    samples = time_interleaved(log.models, {"a": BATCH, "b": BATCH}, settings(min_iterations=16, interleave_ms=4), lambda: None)
    runs = log.turns()[:6]  # the first three cycles, before either model is done
    most = {"a": 2 * 4, "b": 2 * 2}
    for name, count in runs:
        assert count <= most[name], f"{name} ran {count} calls in a row: a turn went on past interleave_ms"
    a_runs = [count for name, count in runs if name == "a"]
    assert sum(a_runs) / len(a_runs) >= 2, f"turns of 1 ms calls should hold several calls, not {a_runs}"
    assert len(samples["a"]) >= 16 and len(samples["b"]) >= 16


def test_time_interleaved_lets_a_model_at_max_iterations_drop_out():
    """A fast model that reaches max_iterations stops; the slow one goes on alone until its minimum."""
    log = TurnLog(fast=0.0, slow=0.004)
    samples = time_interleaved(log.models, {"fast": BATCH, "slow": BATCH}, settings(min_iterations=1, min_seconds=0.04, max_iterations=50, interleave_ms=2), lambda: None)
    assert len(samples["fast"]) == 50 and sum(samples["slow"]) >= 40.0
    assert log.calls[-1] == "slow" and log.calls.count("fast") == 50


def test_serialized_size_grows_with_parameters():
    """A model with more parameters serializes to more bytes (at least 4 per float32, plus some framing)."""
    small, large = nn.Linear(10, 10), nn.Linear(100, 100)
    small_size, large_size = serialized_size_bytes(small), serialized_size_bytes(large)
    assert small_size > 4 * 110
    assert large_size > 4 * 10100
    assert large_size - small_size == pytest.approx(4 * (10100 - 110), abs=512)
    assert size_metrics(large)["size_bytes"] == large_size


def test_compressed_size_shows_zeros():
    """Zeroed weights compress far better than random ones."""
    random_model, zero_model = nn.Linear(100, 100), nn.Linear(100, 100)
    with torch.no_grad():
        for parameter in zero_model.parameters():
            parameter.zero_()
    random_sizes, zero_sizes = size_metrics(random_model), size_metrics(zero_model)
    assert zero_sizes["size_bytes"] == random_sizes["size_bytes"]
    assert zero_sizes["size_compressed_bytes"] < random_sizes["size_compressed_bytes"] / 4


def test_count_parameters_counts_zeros():
    """Zeroing half of a weight leaves the total unchanged and removes those from the non-zero count."""
    model = nn.Linear(10, 20)
    assert count_parameters(model) == (220, 220)
    with torch.no_grad():
        model.bias.fill_(1.0)
        model.weight[:10] = 0.0
    assert count_parameters(model) == (220, 120)


def test_count_flops_of_linear():
    """A Linear(10, 20) forward on one sample is 2 * 10 * 20 FLOPs, whatever the batch given."""
    assert count_flops(nn.Linear(10, 20), torch.randn(1, 10)) == 2 * 10 * 20
    assert count_flops(nn.Linear(10, 20), torch.randn(5, 10)) == 2 * 10 * 20


def test_count_flops_returns_none_when_it_cannot_count():
    """A model whose forward fails gives None instead of raising."""
    assert count_flops(nn.Linear(10, 20), torch.randn(1, 3)) is None


def test_example_batch_repeats_samples():
    """Too few inputs are repeated in order to fill the batch; enough inputs are truncated."""
    inputs = torch.arange(3 * 2, dtype=torch.float32).view(3, 1, 2)
    batch = example_batch(inputs, 8)
    assert batch.shape == (8, 1, 2)
    assert batch.is_contiguous()
    for row in range(8):
        assert torch.equal(batch[row], inputs[row % 3])
    assert torch.equal(example_batch(inputs, 2), inputs[:2])
    assert torch.equal(example_batch(inputs, 3), inputs)


def test_latency_entry_says_its_thread_count_and_oversubscription():
    """An entry carries the threads its rounds applied; 'threads_oversubscribed' appears only when a round had too many."""
    rounds = [{"samples_ms": [2.0, 3.0], "threads": 2, "threads_oversubscribed": False}, {"samples_ms": [2.5], "threads": 2, "threads_oversubscribed": False}]
    entry = latency_entry(rounds, batch_size=4, threads=2)
    assert entry["threads"] == 2 and "threads_oversubscribed" not in entry
    assert list(entry)[:2] == ["batch_size", "threads"]
    crowded = latency_entry([{**rounds[0], "threads": 8, "threads_oversubscribed": True}, {**rounds[1], "threads": 8}], batch_size=4, threads=8)
    assert crowded["threads"] == 8 and crowded["threads_oversubscribed"] is True
    assert latency_entry([{"samples_ms": [1.0]}], batch_size=1, threads=3)["threads"] == 3, "rounds that do not say keep the requested count"


def test_time_batch_sizes_times_every_thread_count_at_every_batch_size_in_turns():
    """Each model is timed at every (threads, batch size), its forward passes running at that many torch threads; torch's count is restored."""
    from benchharness.api import Probe
    from benchharness.conditions import allowed_cpus
    from benchharness.testing import preserved_process_state
    from benchharness.worker import forward_at_largest_batch, time_batch_sizes

    crowded = len(allowed_cpus()) + 1
    measure = settings(batch_sizes=[1, 8], threads=[1, crowded], warmup=1, min_iterations=8, interleave_ms=1e-6)
    models = {"a": nn.Linear(4, 2), "b": nn.Linear(4, 2)}
    inputs = {name: torch.randn(3, 4) for name in models}
    seen: list[tuple[int, int]] = []
    models["a"].register_forward_hook(lambda module, args, output: seen.append((torch.get_num_threads(), args[0].shape[0])))
    with preserved_process_state():
        torch.set_num_threads(1)
        for name in models:
            forward_at_largest_batch(models[name], inputs[name], measure)
        assert seen == [(1, 8), (crowded, 8)] and torch.get_num_threads() == 1
        entries = time_batch_sizes(models, inputs, measure, Probe())
        assert torch.get_num_threads() == 1
    for name in models:
        assert [(entry["threads"], entry["batch_size"]) for entry in entries[name]] == [(1, 1), (1, 8), (crowded, 1), (crowded, 8)]
        assert [entry["threads_oversubscribed"] for entry in entries[name]] == [False, False, True, True]
        assert all(len(entry["samples_ms"]) >= 8 for entry in entries[name])
    timed = seen[2:]
    assert all(timed.count(point) >= 1 + 8 for point in [(1, 1), (1, 8), (crowded, 1), (crowded, 8)]), "warmup and samples at every point"
    at_batch_1 = [threads for threads, size in timed if size == 1][2:]
    switches = sum(1 for before, after in zip(at_batch_1, at_batch_1[1:]) if before != after)
    assert switches >= 4, f"thread counts take turns, not one after the other: {at_batch_1}"


def test_conditions_describe_the_timed_thread_counts():
    """run.json's conditions list the counts latency is timed at and those above the CPUs; the warning names the latter."""
    from benchharness.conditions import describe, oversubscribed, oversubscription_warning

    described = describe([0], 1, [1, 2])
    assert described["threads"] == 1 and described["timed_threads"] == [1, 2] and described["oversubscribed_threads"] == [2]
    assert describe([0], 1)["timed_threads"] == [1] and describe([0], 1)["oversubscribed_threads"] == []
    assert oversubscribed(2, [0]) and not oversubscribed(1, [0])
    assert oversubscription_warning([1, 2], [0]).startswith("latency will be timed at 2 threads on 1 CPUs")
    assert oversubscription_warning([1], [0]) is None
