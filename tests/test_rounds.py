"""Round scheduling: order, adaptive stopping, disturbed timings, failures, A/A control, contradictions.

These tests drive :class:`GroupRounds` with a timing function that returns
synthetic samples, so the scheduling logic is checked exactly; the real
processes are exercised in tests/test_runner.py.
"""

from __future__ import annotations

import math

import pytest

from benchharness.rounds import AA_SLOT, Contender, GroupRounds, contradiction, describe_spread
from benchharness.suite import MeasureSettings

CELLS = ["m/baseline/cpu/r0", "m/fast/cpu/r0", "m/same/cpu/r0", "m/slow/cpu/r0"]
TRUE_LATENCY = {"m/baseline/cpu/r0": 10.0, "m/fast/cpu/r0": 5.0, "m/same/cpu/r0": 10.0, "m/slow/cpu/r0": 20.0}


def make_settings(**values) -> MeasureSettings:
    defaults = dict(batch_sizes=[1, 4], min_rounds=3, max_rounds=8, target_ci=0.03, max_seconds=60, disturbed_retries=2, max_other_cpu=0.2)
    return MeasureSettings(**{**defaults, **values})


class FakeMachine:
    """Times contenders with a drifting machine, optional jitter, background load and failures; logs what it timed."""

    def __init__(self, drift: float = 0.05, jitter: list[float] | None = None, other_cores=None, fail: dict[tuple[str, int], str] | None = None):
        self.drift = drift
        self.jitter = jitter or []
        self.other_cores = other_cores or (lambda cell_id, call: 0.0)
        self.fail = fail or {}
        self.log: list[str] = []

    def __call__(self, contender: Contender) -> dict:
        call = len(self.log)
        self.log.append(contender.cell_id)
        if (contender.cell_id, self.log.count(contender.cell_id)) in self.fail:
            return {"status": "failed", "error_type": "crash", "error_message": self.fail[(contender.cell_id, self.log.count(contender.cell_id))]}
        factor = (1.0 + self.drift) ** call * (1.0 + (self.jitter[call % len(self.jitter)] if self.jitter else 0.0))
        latency = TRUE_LATENCY[contender.cell_id] * factor
        timings = [{"batch_size": size, "samples_ms": [latency * size] * 5, "other_cores": self.other_cores(contender.cell_id, call)} for size in (1, 4)]
        return {"status": "ok", "timings": timings}


def rounds_for(machine, settings=None, cells=CELLS, reference=CELLS[0]) -> GroupRounds:
    return GroupRounds([Contender(cell_id, f"/models/{cell_id}.pt") for cell_id in cells], reference, settings or make_settings(), machine)


def test_order_is_reference_first_others_rotated_then_aa():
    """Each round starts with the reference, rotates the others by one, and ends with the A/A control."""
    group = rounds_for(FakeMachine())
    assert group.order(0) == [CELLS[0], CELLS[1], CELLS[2], CELLS[3], AA_SLOT]
    assert group.order(1) == [CELLS[0], CELLS[2], CELLS[3], CELLS[1], AA_SLOT]
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
    assert not any(outcome.noisy for outcome in result.outcomes.values())


def test_drift_is_shared_by_neighbours_so_the_speedup_stays_close():
    """With 1% drift per timing the speedup estimate stays within the drift between neighbours."""
    result = rounds_for(FakeMachine(drift=0.01)).run()
    estimate = result.outcomes[CELLS[1]].latency[0]["speedup_p50"]
    assert estimate == pytest.approx(2.0, rel=0.05)


def test_disagreeing_rounds_go_on_to_max_rounds_and_are_flagged():
    """Rounds that jump by 30% never reach the target: rounds stop at max_rounds and the cells are flagged."""
    machine = FakeMachine(drift=0.0, jitter=[0.0, 0.3, -0.2, 0.1, 0.25, -0.1, 0.0])
    result = rounds_for(machine, make_settings(max_rounds=5)).run()
    assert result.stopped_by == "max_rounds" and result.rounds == 5
    flagged = [cell_id for cell_id, outcome in result.outcomes.items() if outcome.noisy]
    assert flagged, "disagreeing rounds must be flagged"
    assert any("rounds disagree by" in reason for outcome in result.outcomes.values() for reason in outcome.noise_reasons)


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


def test_disturbed_timing_is_repeated_and_not_flagged_when_the_repeat_is_quiet():
    """A timing while another process used a core is done again; the quiet repeat is kept."""
    disturbed_once = {(CELLS[1], 1)}
    seen: dict[str, int] = {}

    def other_cores(cell_id, call):
        seen[cell_id] = seen.get(cell_id, 0) + 1
        return 0.9 if (cell_id, seen[cell_id]) in disturbed_once else 0.0

    machine = FakeMachine(drift=0.0, other_cores=other_cores)
    result = rounds_for(machine).run()
    assert machine.log.count(CELLS[1]) == result.rounds + 1
    assert not result.outcomes[CELLS[1]].noisy
    assert result.outcomes[CELLS[1]].latency[0]["other_cores"] == [0.0] * result.rounds


def test_a_timing_that_stays_disturbed_flags_its_cell():
    """When every repeat is disturbed, the least disturbed is kept and the cell says how busy the machine was."""
    machine = FakeMachine(drift=0.0, other_cores=lambda cell_id, call: 0.85 if cell_id == CELLS[2] else 0.0)
    result = rounds_for(machine, make_settings(disturbed_retries=1)).run()
    outcome = result.outcomes[CELLS[2]]
    assert outcome.noisy and outcome.noise_reasons[0] == f"other processes used 85% of a core while it was timed ({result.rounds} of {result.rounds} rounds disturbed)"
    assert machine.log.count(CELLS[2]) == 2 * result.rounds, "repeated in every round: the quiet timings between show the machine is not busy for good"
    assert not result.outcomes[CELLS[1]].noisy


def test_a_machine_busy_for_good_is_not_timed_three_times_over():
    """After one timing stayed disturbed through its repeats, later timings in the group are not repeated."""
    machine = FakeMachine(drift=0.0, other_cores=lambda cell_id, call: 1.0)
    result = rounds_for(machine, make_settings(disturbed_retries=2, max_rounds=3)).run()
    slots_per_round = len(CELLS) + 1
    assert len(machine.log) == result.rounds * slots_per_round + 2
    assert all(outcome.noise_reasons[0] == "other processes used 1.0 cores while it was timed (3 of 3 rounds disturbed)" for outcome in result.outcomes.values())
    assert describe_spread(0.12) == "12%" and describe_spread(349.0) == "350-fold"


def test_a_round_that_stays_disturbed_is_left_out_when_enough_quiet_rounds_remain():
    """A 100x slower timing during a burst of load is kept in the record but not in the speedup; the cell is not flagged."""

    class BurstyMachine(FakeMachine):
        def __call__(self, contender):
            result = super().__call__(contender)
            if len(self.log) <= 7:  # round 1: the reference three times, then (busy for good) the 4 other slots once
                for timing in result["timings"]:
                    timing["samples_ms"] = [value * 100 for value in timing["samples_ms"]]
                    timing["other_cores"] = 1.0
            return result

    machine = BurstyMachine(drift=0.0)
    result = rounds_for(machine, make_settings(min_rounds=3)).run()
    assert result.rounds == 4 and result.stopped_by == "target_ci"
    fast = result.outcomes[CELLS[1]]
    assert fast.latency[0]["speedup_p50"] == pytest.approx(2.0) and fast.latency[0]["speedup_rounds"] == 3
    assert fast.latency[0]["rounds_timed"] == 4 and fast.latency[0]["latency_p50_ms"] == pytest.approx(5.0)
    assert not any(outcome.noisy for outcome in result.outcomes.values())


def test_a_failed_timing_fails_only_its_cell():
    """A crash while timing one cell removes it from later rounds; the others go on."""
    machine = FakeMachine(drift=0.0, fail={(CELLS[3], 2): "worker killed by SIGSEGV"})
    result = rounds_for(machine).run()
    assert result.outcomes[CELLS[3]].failure["error_message"] == "worker killed by SIGSEGV"
    assert machine.log.count(CELLS[3]) == 2
    assert result.outcomes[CELLS[1]].latency[0]["speedup_p50"] == pytest.approx(2.0)


def test_without_a_reference_cells_get_latency_but_no_speedup():
    """A group whose reference is excluded or failed still measures latency in rounds, with no speedups."""
    machine = FakeMachine(drift=0.0)
    result = rounds_for(machine, reference=None).run()
    assert AA_SLOT not in machine.log
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
