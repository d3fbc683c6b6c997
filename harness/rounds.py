"""Interleaved timing rounds for one group of cells (same model, device and repeat).

In every round one fresh process restores the saved model of every cell of the
group, plus the reference a second time as an A/A control, and times them in
turns of a few milliseconds (:func:`benchharness.measure.time_interleaved`),
so the machine's drift touches the reference and each cell alike. A round's
speedup is the ratio of the two medians within it, and a speedup's CI comes
from these per-round ratios across fresh processes. The slot order rotates
from round to round. Rounds go on until every CI is narrow enough, or the
round or time cap is reached; the summary says which. A round during which
other processes used more than ``max_other_cpu`` cores is repeated; one that
stays disturbed is recorded but left out of the estimates while at least two
quiet rounds remain, and rounds go on until there are ``min_rounds`` quiet
ones. A cell with fewer is flagged noisy, as is a cell whose per-round
speedups disagree. When a round's process dies, every slot is timed alone to
find the cell that killed it.

Every round times every (thread count, batch size) of :func:`timing_points`;
a cell is compared with the reference at the same point, and with itself at
the fewest threads (the multi-thread speedup). A point timed with more threads
than the process had CPUs is flagged.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from benchharness.stats import RatioEstimate, log_mean_ci, paired_ratio, spread
from benchharness.suite import MeasureSettings
from benchharness.system import describe_other_cores

AA_SLOT = "A/A control"
TOLERANCE_FLOOR = 0.03
PROBE_FLAGS = ("gpu_throttled",)


@dataclass
class Contender:
    """A cell whose saved model takes part in the rounds."""

    cell_id: str
    artifact: str


@dataclass
class Outcome:
    """What the rounds produced for one cell: latency entries and noise flags, or why timing failed."""

    latency: list[dict[str, Any]] = field(default_factory=list)
    noise_reasons: list[str] = field(default_factory=list)
    failure: dict[str, Any] | None = None

    @property
    def noisy(self) -> bool:
        """Whether the cell's measurement was disturbed or its rounds disagree."""
        return bool(self.noise_reasons)


@dataclass
class GroupResult:
    """The rounds of one group: an outcome per cell and how the rounds ended."""

    outcomes: dict[str, Outcome]
    rounds: int
    stopped_by: str
    seconds: float
    reference: str | None
    aa: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The part of every record that describes the rounds."""
        return {"rounds": self.rounds, "stopped_by": self.stopped_by, "seconds": self.seconds, "reference_cell": self.reference}


TimeRound = Callable[[list[tuple[str, Contender]]], dict[str, Any]]
"""Times the given (slot, contender) pairs in one fresh process: ``{"status": "ok", "timings": {slot: [entry per timing point]},
"failures": {slot: failure}, "other_cores": float}``, or a failure record when the process itself failed.
The entries come in the order of :func:`timing_points`."""


def timing_points(settings: MeasureSettings) -> list[tuple[int, int]]:
    """The (threads, batch size) combinations every round times, in the order of its entries: thread counts outer, batch sizes inner."""
    return [(threads, size) for threads in settings.thread_counts() for size in settings.batch_sizes]


def describe_point(threads: int | None, batch_size: int, several_thread_counts: bool) -> str:
    """'batch 32', or 'batch 32 at 2 threads' when latency is timed at several thread counts."""
    return f"batch {batch_size} at {threads} threads" if several_thread_counts else f"batch {batch_size}"


class GroupRounds:
    """Runs the interleaved rounds of one group and summarises them."""

    def __init__(self, contenders: list[Contender], reference: str | None, settings: MeasureSettings, time_round: TimeRound):
        self.settings = settings
        self.time_round = time_round
        self.contenders = {contender.cell_id: contender for contender in contenders}
        self.reference = reference if reference in self.contenders else None
        self.timings: dict[str, list[list[dict[str, Any]]]] = {cell_id: [] for cell_id in self.contenders}
        self.timings[AA_SLOT] = []
        self.other_cores: dict[str, list[float]] = {cell_id: [] for cell_id in self.timings}
        self.failures: dict[str, dict[str, Any]] = {}
        self.rounds = 0
        self.persistently_disturbed = False
        self.points = timing_points(settings)
        self.several_thread_counts = len({threads for threads, _ in self.points}) > 1

    def order(self, round_index: int) -> list[str]:
        """The slots of one round: reference, the other cells, then the A/A control, rotated by ``round_index``.

        The slots are restored in this order and take their turns in it, so rotating them keeps
        a slot's place in memory and its neighbours from favouring one cell in every round.
        """
        others = [cell_id for cell_id in self.contenders if cell_id != self.reference and cell_id not in self.failures]
        if self.reference is None or self.reference in self.failures:
            slots = others
        else:
            slots = [self.reference, *others] + ([AA_SLOT] if self.settings.aa_control else [])
        shift = round_index % len(slots) if slots else 0
        return slots[shift:] + slots[:shift]

    def _contender(self, slot: str) -> Contender:
        return self.contenders[self.reference if slot == AA_SLOT else slot]

    def _time_slots(self, slots: list[str]) -> dict[str, Any]:
        """Time ``slots`` together, repeating a disturbed round up to ``disturbed_retries`` times; keeps the least disturbed.

        Once a round stayed disturbed through all its repeats the machine counts as busy, and
        rounds are not repeated until one is quiet again (repeats would only triple the time).
        """
        best: dict[str, Any] | None = None
        attempts = 1 if self.persistently_disturbed else self.settings.disturbed_retries + 1
        for _ in range(attempts):
            result = self.time_round([(slot, self._contender(slot)) for slot in slots])
            if result.get("status") != "ok":
                return result
            result["other_cores"] = result.get("other_cores") or 0.0
            if best is None or result["other_cores"] < best["other_cores"]:
                best = result
            if result["other_cores"] <= self.settings.max_other_cpu:
                self.persistently_disturbed = False
                break
        if best["other_cores"] > self.settings.max_other_cpu and attempts > 1:
            self.persistently_disturbed = True
        return best

    def _keep(self, slots: list[str], result: dict[str, Any]) -> None:
        """File a round's timings by slot; a slot that failed (or a failed process) fails its cell."""
        for slot in slots:
            cell_id = self.reference if slot == AA_SLOT else slot
            failure = result if result.get("status") != "ok" else result.get("failures", {}).get(slot)
            if failure is not None or slot not in result.get("timings", {}):
                self.failures.setdefault(cell_id, failure or {"status": "failed", "error_type": "crash", "error_message": "no timing came back"})
                continue
            self.timings[slot].append(result["timings"][slot])
            self.other_cores[slot].append(result["other_cores"])

    def run_round(self) -> None:
        """Time every slot once, together; if the round's process failed, time each slot alone to find the culprit."""
        slots = self.order(self.rounds)
        result = self._time_slots(slots)
        if result.get("status") == "ok" or len(slots) == 1:
            self._keep(slots, result)
        else:
            for slot in slots:
                self._keep([slot], self._time_slots([slot]))
        self.rounds += 1

    def _round_p50s(self, slot: str, point: int) -> list[float]:
        return [float(np.median(timing[point]["samples_ms"])) for timing in self.timings[slot]]

    def _quiet_rounds(self, *slots: str) -> list[int]:
        """The rounds in which every one of ``slots`` was timed while other processes stayed below ``max_other_cpu``."""
        count = min(len(self.timings[slot]) for slot in slots)
        limit = self.settings.max_other_cpu
        return [index for index in range(count) if all(self.other_cores[slot][index] <= limit for slot in slots)]

    def usable_rounds(self, *slots: str) -> list[int]:
        """The quiet rounds of ``slots`` when there are at least two (a CI needs two), else every round they share."""
        quiet = self._quiet_rounds(*slots)
        return quiet if len(quiet) >= 2 else list(range(min(len(self.timings[slot]) for slot in slots)))

    def _paired(self, numerator: str, denominator: str, point: int, denominator_point: int | None = None) -> RatioEstimate:
        """Per-round ratios of ``numerator``'s median at ``point`` over ``denominator``'s (at ``denominator_point``, default the same)."""
        rounds = self.usable_rounds(numerator, denominator)
        numerators = self._round_p50s(numerator, point)
        denominators = self._round_p50s(denominator, point if denominator_point is None else denominator_point)
        return paired_ratio([numerators[index] for index in rounds], [denominators[index] for index in rounds])

    def _estimates(self) -> list[RatioEstimate]:
        """Every CI the stopping rule watches: each cell's speedup (and the A/A) at each timing point."""
        found = []
        watched = [index for index in range(len(self.points)) if not self._oversubscribed(index)]
        for slot, timings in self.timings.items():
            if not timings or slot in self.failures:
                continue
            for index in watched:
                if self.reference is not None and self.reference not in self.failures and slot != self.reference:
                    found.append(self._paired(self.reference, slot, index))
                elif self.reference is None or self.reference in self.failures:
                    p50s = self._round_p50s(slot, index)
                    estimate, low, high = log_mean_ci(p50s)
                    found.append(RatioEstimate(estimate, low, high, len(p50s), spread(p50s)))
        return found

    def _oversubscribed(self, point: int) -> bool:
        """Whether ``point`` was timed with more threads than CPUs: its CIs say nothing, so the stopping rule does not wait for them."""
        return any(timing[point].get("threads_oversubscribed") for timings in self.timings.values() for timing in timings)

    def fewest_quiet_rounds(self) -> int:
        """The fewest undisturbed rounds any cell has (paired with the reference's where there is one)."""
        active = [slot for slot in self.timings if self.timings[slot] and slot not in self.failures]
        has_reference = self.reference is not None and self.reference not in self.failures
        counts = [len(self._quiet_rounds(self.reference, slot) if has_reference and slot != self.reference else self._quiet_rounds(slot)) for slot in active]
        return min(counts, default=0)

    def run(self, stop_requested: Callable[[], bool] = lambda: False, on_round: Callable[[int, float], None] | None = None) -> GroupResult:
        """Rounds until the CIs are narrow enough over ``min_rounds`` quiet rounds, ``max_rounds``, ``max_seconds`` or a stop request.

        After ``min_rounds``, no round starts that would take the group past ``max_seconds`` at the
        rounds' mean duration so far: a round that times several thread counts is that much longer.
        """
        settings = self.settings
        started = time.monotonic()
        stopped_by = "max_rounds"
        while self.rounds < settings.max_rounds and len(self.failures) < len(self.contenders):
            self.run_round()
            widest = max((estimate.half_width for estimate in self._estimates()), default=math.inf)
            if on_round:
                on_round(self.rounds, widest)
            if self.rounds < settings.min_rounds:
                continue
            if widest <= settings.target_ci and self.fewest_quiet_rounds() >= settings.min_rounds:
                stopped_by = "target_ci"
                break
            elapsed = time.monotonic() - started
            if elapsed + elapsed / self.rounds > settings.max_seconds:
                stopped_by = "max_seconds"
                break
            if stop_requested():
                stopped_by = "interrupted"
                break
        return self.summarise(stopped_by, time.monotonic() - started)

    def summarise(self, stopped_by: str, seconds: float) -> GroupResult:
        """An outcome per cell from the rounds timed so far."""
        aa_entries = [self._aa(index) for index in range(len(self.points))] if self._has_aa() else []
        outcomes = {}
        for cell_id in self.contenders:
            if cell_id in self.failures:
                outcomes[cell_id] = Outcome(failure=self.failures[cell_id])
                continue
            outcomes[cell_id] = self._outcome(cell_id, aa_entries)
        aa = {"aa_speedup": [entry.get("aa_speedup") for entry in aa_entries]} if aa_entries else {}
        return GroupResult(outcomes, self.rounds, stopped_by, seconds, self.reference, aa)

    def _thread_speedup(self, cell_id: str, fewest_point: int, point: int, fewest: int, threads: int) -> dict[str, Any]:
        """The cell's multi-thread speedup at ``point``: its median at ``fewest`` threads over its median at ``threads``, per round.

        ``parallel_efficiency`` is that speedup over the ideal ``threads / fewest``.
        """
        speedup = self._paired(cell_id, cell_id, fewest_point, point)
        fields = speedup.as_dict("thread_speedup")
        fields["thread_speedup_p50"] = fields.pop("thread_speedup")
        return {**fields, "thread_speedup_base_threads": fewest, "parallel_efficiency": speedup.estimate * fewest / threads}

    def _has_aa(self) -> bool:
        return bool(self.timings[AA_SLOT]) and self.reference is not None and self.reference not in self.failures

    def _aa(self, index: int) -> dict[str, Any]:
        return self._paired(self.reference, AA_SLOT, index).as_dict("aa_speedup")

    def _outcome(self, cell_id: str, aa_entries: list[dict[str, Any]]) -> Outcome:
        outcome = Outcome()
        compared = self.reference is not None and self.reference not in self.failures and cell_id != self.reference
        fewest = min(threads for threads, _ in self.points)
        for index, (threads, size) in enumerate(self.points):
            entry = latency_entry([self.timings[cell_id][round_index][index] for round_index in self.usable_rounds(cell_id)], size, threads)
            entry["rounds_timed"] = len(self.timings[cell_id])
            where = describe_point(entry["threads"], size, self.several_thread_counts)
            if compared:
                speedup = self._paired(self.reference, cell_id, index)
                entry.update(speedup.as_dict("speedup"))
                entry["speedup_p50"] = entry.pop("speedup")
                if speedup.sd > self.settings.max_round_sd:
                    outcome.noise_reasons.append(f"rounds disagree (typically by {speedup.sd:.0%}, at most {describe_spread(speedup.spread)}) at {where}")
            elif cell_id == self.reference and aa_entries:
                entry.update(aa_entries[index])
                aa = aa_entries[index]
                if aa["aa_speedup_round_sd"] > self.settings.max_round_sd:
                    outcome.noise_reasons.append(
                        f"rounds disagree (typically by {aa['aa_speedup_round_sd']:.0%}, at most {describe_spread(aa['aa_speedup_round_spread'])}) at {where} (A/A control)"
                    )
            if threads != fewest:
                entry.update(self._thread_speedup(cell_id, self.points.index((fewest, size)), index, fewest, threads))
            outcome.latency.append(entry)
        crowded = sorted({entry["threads"] for entry in outcome.latency if entry.get("threads_oversubscribed")})
        if crowded:
            counts = ", ".join(str(count) for count in crowded)
            outcome.noise_reasons.append(f"timed at {counts} threads, more than the CPUs it ran on (oversubscribed): threads waited for each other, so those latencies mean nothing")
        slots = (cell_id, AA_SLOT) if cell_id == self.reference and self.timings[AA_SLOT] else (cell_id,)
        if compared:
            slots = (self.reference, cell_id)
        quiet = len(self._quiet_rounds(*slots))
        if quiet < self.settings.min_rounds:
            worst = max(max(self.other_cores[slot], default=0.0) for slot in slots)
            timed = min(len(self.timings[slot]) for slot in slots)
            outcome.noise_reasons.insert(0, f"{describe_other_cores(worst)} while it was timed ({timed - quiet} of {timed} rounds disturbed)")
        return outcome


def describe_spread(spread: float) -> str:
    """'12%' for small disagreements, '350-fold' once the slowest round is many times the fastest."""
    return f"{spread:.0%}" if spread < 1.0 else f"{spread + 1.0:.3g}-fold"


def latency_entry(rounds: list[dict[str, Any]], batch_size: int, threads: int | None = None) -> dict[str, Any]:
    """Latency statistics of one cell at one batch size and thread count over its rounds.

    ``latency_p50_ms`` is the geometric mean of the per-round medians, with its 95% CI across
    rounds; p90, p99, mean and std are over all samples pooled. ``threads`` is the count the
    rounds applied (``threads`` where they do not say); ``threads_oversubscribed`` appears, true,
    when any round had more threads than CPUs.
    """
    applied = [timing["threads"] for timing in rounds if timing.get("threads") is not None]
    round_p50s = [float(np.median(timing["samples_ms"])) for timing in rounds]
    pooled = np.concatenate([np.asarray(timing["samples_ms"], dtype=float) for timing in rounds])
    p50, low, high = log_mean_ci(round_p50s)
    total_s = float(pooled.sum()) / 1000.0
    entry: dict[str, Any] = {
        "batch_size": batch_size,
        "threads": applied[0] if applied else threads,
        "latency_p50_ms": p50,
        "latency_p50_ci95_low_ms": low,
        "latency_p50_ci95_high_ms": high,
        "latency_p90_ms": float(np.percentile(pooled, 90)),
        "latency_p99_ms": float(np.percentile(pooled, 99)),
        "latency_mean_ms": float(pooled.mean()),
        "latency_std_ms": float(pooled.std(ddof=1)) if pooled.size > 1 else 0.0,
        "throughput_sps": batch_size * pooled.size / total_s if total_s > 0 else math.nan,
        "iterations": int(pooled.size),
        "rounds": len(rounds),
        "round_p50_ms": round_p50s,
        "other_cores": [timing.get("other_cores") for timing in rounds],
        "samples_ms": [float(value) for value in pooled],
    }
    if any(timing.get("threads_oversubscribed") for timing in rounds):
        entry["threads_oversubscribed"] = True
    entry.update(_probe_readings(rounds))
    return entry


def _probe_readings(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The probe's readings over rounds: flags are true if any round's was, numbers are averaged."""
    readings: dict[str, Any] = {}
    skip = {"samples_ms", "other_cores", "batch_size", "threads", "threads_oversubscribed"}
    for key in {key for timing in rounds for key in timing} - skip:
        values = [timing[key] for timing in rounds if timing.get(key) is not None]
        if not values:
            continue
        if key in PROBE_FLAGS or isinstance(values[0], bool):
            readings[key] = any(values)
        elif all(isinstance(value, (int, float)) for value in values):
            readings[key] = float(np.mean(values))
    return readings


def contradiction(entry: dict[str, Any], speedup_bound: float | None, aa_half_width: float, where: str | None = None) -> str | None:
    """Why a measured speedup contradicts what the representation allows, or None.

    A speedup whose CI lies wholly above Amdahl's bound (the speedup if every faster FLOP were
    free), with a tolerance of the A/A noise floor, cannot come from the technique. ``where``
    names the timing point (default: 'batch <size>').
    """
    low = entry.get("speedup_ci95_low")
    if low is None or speedup_bound is None or not math.isfinite(speedup_bound) or math.isnan(low):
        return None
    tolerance = max(TOLERANCE_FLOOR, aa_half_width if math.isfinite(aa_half_width) else 0.0)
    if low > speedup_bound * (1.0 + tolerance):
        return (
            f"measured {entry['speedup_p50']:.3g}x (95% CI {low:.3g}-{entry['speedup_ci95_high']:.3g}) at {where or 'batch ' + str(entry['batch_size'])}, "
            f"above the {speedup_bound:.3g}x its representation allows: suspect the measurement, not the technique"
        )
    return None
