"""Round scheduling: order, adaptive stopping, disturbed timings, failures, A/A control, contradictions.

These tests drive :class:`GroupRounds` with a timing function that returns
synthetic samples, so the scheduling logic is checked exactly; the real
processes are exercised in tests/test_runner.py.
"""

from __future__ import annotations

import math

import pytest

from benchharness.rounds import AA_SLOT, Contender, GroupRounds, contradiction, describe_spread, timing_points
from benchharness.suite import MeasureSettings

CELLS = ["m/baseline/cpu/r0", "m/fast/cpu/r0", "m/same/cpu/r0", "m/slow/cpu/r0"]
TRUE_LATENCY = {"m/baseline/cpu/r0": 10.0, "m/fast/cpu/r0": 5.0, "m/same/cpu/r0": 10.0, "m/slow/cpu/r0": 20.0}
THREAD_SCALING = {"m/baseline/cpu/r0": {2: 2.0}, "m/fast/cpu/r0": {2: 1.25}, "m/same/cpu/r0": {2: 2.0}, "m/slow/cpu/r0": {2: 1.0}}
"""How much faster each cell runs at a thread count than at one thread (1.0 where not listed)."""


def make_settings(**values) -> MeasureSettings:
    defaults = dict(batch_sizes=[1, 4], min_rounds=3, max_rounds=8, target_ci=0.03, max_seconds=60, disturbed_retries=2, max_other_cpu=0.2, threads=1)
    return MeasureSettings(**{**defaults, **values})


class FakeMachine:
    """Times rounds of (slot, contender) pairs on a drifting machine, with jitter, background load and crashes.

    Drift is per round and shared by the slots of a round (they are timed in turns in one
    process); jitter depends on the round and the slot's position, so it does not cancel.
    ``other_cores(call)`` is the load during the ``call``-th process; a cell in ``crash_from``
    kills the process it is timed in from its n-th timing on. ``log`` lists every cell id timed,
    ``calls`` the slots of every process. Entries come for every (threads, batch size) of
    ``points`` (set by :func:`rounds_for` from the settings), as the worker's do.
    """

    def __init__(self, drift: float = 0.05, jitter: list[float] | None = None, other_cores=None, crash_from: dict[str, int] | None = None):
        self.points = [(1, 1), (1, 4)]
        self.drift = drift
        self.jitter = jitter or []
        self.other_cores = other_cores or (lambda call: 0.0)
        self.crash_from = crash_from or {}
        self.log: list[str] = []
        self.calls: list[list[str]] = []

    def __call__(self, slots: list[tuple[str, Contender]]) -> dict:
        call = len(self.calls)
        self.calls.append([slot for slot, _ in slots])
        self.log.extend(contender.cell_id for _, contender in slots)
        for _, contender in slots:
            first = self.crash_from.get(contender.cell_id)
            if first is not None and self.log.count(contender.cell_id) >= first:
                return {"status": "failed", "error_type": "crash", "error_message": "worker killed by SIGSEGV"}
        other = self.other_cores(call)
        timings = {}
        for position, (slot, contender) in enumerate(slots):
            jitter = self.jitter[(call + position) % len(self.jitter)] if self.jitter else 0.0
            latency = TRUE_LATENCY[contender.cell_id] * (1.0 + self.drift) ** call * (1.0 + jitter)
            timings[slot] = [self.entry(contender.cell_id, threads, size, latency, other) for threads, size in self.points]
        return {"status": "ok", "timings": timings, "failures": {}, "other_cores": other}

    def entry(self, cell_id: str, threads: int, size: int, latency: float, other: float) -> dict:
        """One timing point's entry, as the worker gives it."""
        scaled = latency * size / THREAD_SCALING[cell_id].get(threads, 1.0)
        return {"batch_size": size, "threads": threads, "threads_oversubscribed": False, "samples_ms": [scaled] * 5, "other_cores": other}


def rounds_for(machine, settings=None, cells=CELLS, reference=CELLS[0]) -> GroupRounds:
    settings = settings or make_settings()
    machine.points = timing_points(settings)
    return GroupRounds([Contender(cell_id, f"/models/{cell_id}.pt") for cell_id in cells], reference, settings, machine)


def test_order_rotates_every_slot_from_round_to_round():
    """Round 0 is reference, cells, A/A control; each later round rotates the whole order by one place."""
    group = rounds_for(FakeMachine())
    assert group.order(0) == [CELLS[0], CELLS[1], CELLS[2], CELLS[3], AA_SLOT]
    assert group.order(1) == [CELLS[1], CELLS[2], CELLS[3], AA_SLOT, CELLS[0]]
    assert group.order(5) == group.order(0)
    no_aa = rounds_for(FakeMachine(), make_settings(aa_control=False))
    assert AA_SLOT not in no_aa.order(0)


def test_steady_drift_stops_at_min_rounds_on_target():
    """A machine that slows 5% per timing still gives tight, correct speedups: interleaving cancels most drift."""
    machine = FakeMachine(drift=0.0)
    result = rounds_for(machine).run()
    assert result.stopped_by == "target_ci" and result.rounds == 3
    fast = result.outcomes[CELLS[1]].latency
    assert [entry["speedup_p50"] for entry in fast] == pytest.approx([2.0, 2.0])
    assert result.outcomes[CELLS[3]].latency[0]["speedup_p50"] == pytest.approx(0.5)
    aa = result.outcomes[CELLS[0]].latency[0]
    assert aa["aa_speedup"] == pytest.approx(1.0) and "speedup_p50" not in aa
    assert machine.log.count(CELLS[0]) == 6, "reference and its A/A copy are timed in every round"
    assert machine.calls[0] == [CELLS[0], CELLS[1], CELLS[2], CELLS[3], AA_SLOT], "one process per round times every slot"
    assert not any(outcome.noisy for outcome in result.outcomes.values())


def test_drift_between_rounds_cancels_in_the_paired_speedup():
    """A machine 10% slower every round still gives the exact speedup: each round's ratio is taken within the round."""
    result = rounds_for(FakeMachine(drift=0.10)).run()
    estimate = result.outcomes[CELLS[1]].latency[0]["speedup_p50"]
    assert estimate == pytest.approx(2.0) and result.stopped_by == "target_ci"


def test_disagreeing_rounds_go_on_to_max_rounds_and_are_flagged():
    """Rounds that jump by 30% never reach the target: rounds stop at max_rounds and the cells are flagged."""
    machine = FakeMachine(drift=0.0, jitter=[0.0, 0.3, -0.2, 0.1, 0.25, -0.1, 0.0])
    result = rounds_for(machine, make_settings(max_rounds=5)).run()
    assert result.stopped_by == "max_rounds" and result.rounds == 5
    flagged = [cell_id for cell_id, outcome in result.outcomes.items() if outcome.noisy]
    assert flagged, "disagreeing rounds must be flagged"
    assert any(reason.startswith("rounds disagree (typically by") for outcome in result.outcomes.values() for reason in outcome.noise_reasons)


def test_time_cap_stops_rounds(monkeypatch):
    """When measuring the group took longer than max_seconds, the rounds stop after min_rounds and say so."""
    machine = FakeMachine(drift=0.0, jitter=[0.0, 0.3, -0.2, 0.1])
    clock = iter([0.0, 50.0, 150.0])  # the start, then the checks after rounds 3 and 4
    monkeypatch.setattr("benchharness.rounds.time.monotonic", lambda: next(clock, 1000.0))
    result = rounds_for(machine, make_settings(max_seconds=100)).run()
    assert result.stopped_by == "max_seconds" and result.rounds == 4


def test_stop_request_ends_after_min_rounds():
    """Ctrl-C (a stop request) still completes min_rounds, then stops."""
    machine = FakeMachine(drift=0.0, jitter=[0.0, 0.3, -0.2, 0.1])
    result = rounds_for(machine).run(stop_requested=lambda: True)
    assert result.stopped_by == "interrupted" and result.rounds == 3


def test_disturbed_round_is_repeated_and_not_flagged_when_the_repeat_is_quiet():
    """A round while another process used a core is done again; the quiet repeat is kept."""
    machine = FakeMachine(drift=0.0, other_cores=lambda call: 0.9 if call == 1 else 0.0)
    result = rounds_for(machine).run()
    assert len(machine.calls) == result.rounds + 1 and machine.calls[1] == machine.calls[2]
    assert not any(outcome.noisy for outcome in result.outcomes.values())
    assert result.outcomes[CELLS[1]].latency[0]["other_cores"] == [0.0] * result.rounds


def test_a_machine_busy_for_good_is_not_timed_three_times_over():
    """After a round stayed disturbed through its repeats, later rounds are not repeated, and every cell says how busy it was."""
    machine = FakeMachine(drift=0.0, other_cores=lambda call: 1.0)
    result = rounds_for(machine, make_settings(disturbed_retries=2, max_rounds=3)).run()
    assert len(machine.calls) == 3 + (result.rounds - 1)
    assert all(outcome.noise_reasons[0] == "other processes used 1.0 cores while it was timed (3 of 3 rounds disturbed)" for outcome in result.outcomes.values())
    assert describe_spread(0.12) == "12%" and describe_spread(349.0) == "350-fold"


def test_a_round_that_stays_disturbed_is_left_out_when_enough_quiet_rounds_remain():
    """A 100x slower round during a burst of load is kept in the record but not in the speedup; no cell is flagged."""

    class BurstyMachine(FakeMachine):
        def __call__(self, slots):
            result = super().__call__(slots)
            if len(self.calls) <= 3:  # round 1 and its two repeats
                for timings in result["timings"].values():
                    for timing in timings:
                        timing["samples_ms"] = [value * 100 for value in timing["samples_ms"]]
                result["other_cores"] = 1.0
            return result

    machine = BurstyMachine(drift=0.0)
    result = rounds_for(machine, make_settings(min_rounds=3)).run()
    assert result.rounds == 4 and result.stopped_by == "target_ci"
    fast = result.outcomes[CELLS[1]]
    assert fast.latency[0]["speedup_p50"] == pytest.approx(2.0) and fast.latency[0]["speedup_rounds"] == 3
    assert fast.latency[0]["rounds_timed"] == 4 and fast.latency[0]["latency_p50_ms"] == pytest.approx(5.0)
    assert not any(outcome.noisy for outcome in result.outcomes.values())


def test_a_crashed_round_is_retimed_slot_by_slot_and_fails_only_the_culprit():
    """When a round's process dies, each slot is timed alone: the cell that kills it fails, the others keep the round."""
    machine = FakeMachine(drift=0.0, crash_from={CELLS[3]: 2})
    result = rounds_for(machine).run()
    assert result.outcomes[CELLS[3]].failure["error_message"] == "worker killed by SIGSEGV"
    assert [len(slots) for slots in machine.calls[:7]] == [5, 5, 1, 1, 1, 1, 1], "round 2 crashed, then each slot alone"
    assert all(CELLS[3] not in slots for slots in machine.calls[7:])
    fast = result.outcomes[CELLS[1]].latency[0]
    assert fast["speedup_p50"] == pytest.approx(2.0) and fast["rounds_timed"] == result.rounds


def test_a_model_that_cannot_be_restored_fails_only_its_cell():
    """A slot the timing process reports as failed (e.g. its file cannot be loaded) fails its cell; the round stands."""

    class UnloadableMachine(FakeMachine):
        def __call__(self, slots):
            result = super().__call__(slots)
            result["timings"].pop(CELLS[2], None)
            if any(slot == CELLS[2] for slot, _ in slots):
                result["failures"] = {CELLS[2]: {"status": "failed", "error_type": "exception", "error_message": "UnpicklingError: bad"}}
            return result

    machine = UnloadableMachine(drift=0.0)
    result = rounds_for(machine).run()
    assert result.outcomes[CELLS[2]].failure["error_message"] == "UnpicklingError: bad"
    assert len(machine.calls) == result.rounds and all(CELLS[2] not in slots for slots in machine.calls[1:])
    assert result.outcomes[CELLS[3]].latency[0]["speedup_p50"] == pytest.approx(0.5)


def test_without_a_reference_cells_get_latency_but_no_speedup():
    """A group whose reference is excluded or failed still measures latency in rounds, with no speedups."""
    machine = FakeMachine(drift=0.0)
    result = rounds_for(machine, reference=None).run()
    assert all(AA_SLOT not in slots for slots in machine.calls)
    entry = result.outcomes[CELLS[1]].latency[0]
    assert "speedup_p50" not in entry and entry["latency_p50_ms"] == pytest.approx(5.0)


def test_contradiction_needs_the_whole_ci_above_the_bound():
    """A speedup is suspect only when its CI lies above what the representation allows, beyond the noise floor."""
    entry = {"batch_size": 32, "speedup_p50": 1.39, "speedup_ci95_low": 1.37, "speedup_ci95_high": 1.41}
    assert "above the 1x its representation allows" in contradiction(entry, 1.0, 0.01)
    assert contradiction(entry, 2.0, 0.01) is None
    assert contradiction({**entry, "speedup_ci95_low": 1.02}, 1.0, 0.01) is None
    assert contradiction(entry, 1.0, 0.5) is None, "a noise floor wider than the excess forgives it"
    assert contradiction(entry, math.inf, 0.01) is None


SINGLE_COUNT_KEYS = {
    "batch_size", "threads", "latency_p50_ms", "latency_p50_ci95_low_ms", "latency_p50_ci95_high_ms", "latency_p90_ms", "latency_p99_ms",
    "latency_mean_ms", "latency_std_ms", "throughput_sps", "iterations", "rounds", "round_p50_ms", "other_cores", "samples_ms", "rounds_timed",
}
SPEEDUP_KEYS = {"speedup_p50", "speedup_ci95_low", "speedup_ci95_high", "speedup_rounds", "speedup_round_spread", "speedup_round_sd"}
AA_KEYS = {"aa_speedup", "aa_speedup_ci95_low", "aa_speedup_ci95_high", "aa_speedup_rounds", "aa_speedup_round_spread", "aa_speedup_round_sd"}


def test_every_thread_count_is_timed_at_every_batch_size_and_compared_at_the_same_count():
    """threads = [1, 2]: an entry per (threads, batch size); speedups pair the reference and the cell at the same count, per round.

    The baseline doubles its speed at 2 threads and the fast cell gains only 1.25x, so the fast
    cell is 2x the baseline at 1 thread and 1.25x at 2; pairing by batch size alone would mix them.
    """
    machine = FakeMachine(drift=0.10)
    result = rounds_for(machine, make_settings(threads=[1, 2])).run()
    assert result.stopped_by == "target_ci" and len(machine.calls) == result.rounds, "one process per round times every thread count"
    fast = result.outcomes[CELLS[1]].latency
    assert [(entry["threads"], entry["batch_size"]) for entry in fast] == [(1, 1), (1, 4), (2, 1), (2, 4)]
    assert [entry["speedup_p50"] for entry in fast] == pytest.approx([2.0, 2.0, 1.25, 1.25])
    assert fast[2]["latency_p50_ms"] == pytest.approx(fast[0]["latency_p50_ms"] / 1.25)
    assert [entry.get("thread_speedup_p50") for entry in fast] == pytest.approx([None, None, 1.25, 1.25])
    assert fast[3]["parallel_efficiency"] == pytest.approx(0.625) and fast[3]["thread_speedup_base_threads"] == 1
    assert fast[3]["thread_speedup_ci95_low"] == pytest.approx(1.25), "drift shared within a round cancels in the thread speedup too"
    baseline = result.outcomes[CELLS[0]].latency
    assert [entry["aa_speedup"] for entry in baseline] == pytest.approx([1.0] * 4) and baseline[2]["thread_speedup_p50"] == pytest.approx(2.0)
    assert baseline[2]["parallel_efficiency"] == pytest.approx(1.0)
    assert result.aa["aa_speedup"] == pytest.approx([1.0] * 4)
    assert not any(outcome.noisy for outcome in result.outcomes.values())


def test_disagreement_is_named_with_its_thread_count():
    """Rounds that disagree only at 2 threads flag the cell with the batch size and the thread count."""

    class JumpyAtTwoThreads(FakeMachine):
        def entry(self, cell_id, threads, size, latency, other):
            found = super().entry(cell_id, threads, size, latency, other)
            if threads == 2 and cell_id == CELLS[1]:
                found["samples_ms"] = [value * (1.0 + 0.4 * (len(self.calls) % 2)) for value in found["samples_ms"]]
            return found

    result = rounds_for(JumpyAtTwoThreads(drift=0.0), make_settings(threads=[1, 2], max_rounds=4)).run()
    reasons = result.outcomes[CELLS[1]].noise_reasons
    assert reasons and all("at 2 threads" in reason for reason in reasons), reasons
    assert "at batch 1 at 2 threads" in reasons[0]
    assert not result.outcomes[CELLS[2]].noisy


def test_a_single_thread_count_keeps_the_record_shape_plus_threads():
    """With one thread count, entries have exactly the statistics they always had, plus 'threads'; no thread speedup."""
    result = rounds_for(FakeMachine(drift=0.0)).run()
    fast = result.outcomes[CELLS[1]].latency
    assert [entry["batch_size"] for entry in fast] == [1, 4] and [entry["threads"] for entry in fast] == [1, 1]
    assert set(fast[0]) == SINGLE_COUNT_KEYS | SPEEDUP_KEYS
    assert set(result.outcomes[CELLS[0]].latency[0]) == SINGLE_COUNT_KEYS | AA_KEYS


def test_oversubscribed_thread_counts_are_flagged_and_do_not_hold_the_rounds_back():
    """A count above the CPUs is timed and marked; the cells are noisy with the reason; its wild rounds do not block target_ci."""

    class TwoCpus(FakeMachine):
        def entry(self, cell_id, threads, size, latency, other):
            found = super().entry(cell_id, threads, size, latency, other)
            if threads == 4:
                found["threads_oversubscribed"] = True
                found["samples_ms"] = [value * (1.0 + 3.0 * ((len(self.calls) + len(cell_id)) % 3)) for value in found["samples_ms"]]
            return found

    result = rounds_for(TwoCpus(drift=0.0), make_settings(threads=[1, 4])).run()
    assert result.stopped_by == "target_ci" and result.rounds == 3
    for outcome in result.outcomes.values():
        assert [entry.get("threads_oversubscribed") for entry in outcome.latency] == [None, None, True, True]
        assert outcome.noisy and any("timed at 4 threads, more than the CPUs it ran on (oversubscribed)" in reason for reason in outcome.noise_reasons)


def test_no_round_starts_that_would_end_past_max_seconds(monkeypatch):
    """Rounds that each take a third of max_seconds stop after min_rounds: a fourth would end past the cap."""
    clock = iter([0.0, 90.0])
    monkeypatch.setattr("benchharness.rounds.time.monotonic", lambda: next(clock, 1000.0))
    machine = FakeMachine(drift=0.0, jitter=[0.0, 0.3, -0.2, 0.1])
    result = rounds_for(machine, make_settings(max_seconds=100, threads=[1, 2])).run()
    assert result.stopped_by == "max_seconds" and result.rounds == 3


def test_a_contradiction_names_its_timing_point():
    """Where the latency is timed at several thread counts, a contradiction says at which."""
    entry = {"batch_size": 32, "threads": 2, "speedup_p50": 1.39, "speedup_ci95_low": 1.37, "speedup_ci95_high": 1.41}
    assert "at batch 32 at 2 threads, above" in contradiction(entry, 1.0, 0.01, "batch 32 at 2 threads")
    assert "at batch 32, above" in contradiction(entry, 1.0, 0.01)
