"""The report's answer to "which technique should I ship here?": per model, device and batch size, within an accuracy budget."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from benchharness.report.tables import is_missing, is_true


@dataclass
class Answer:
    """The technique to ship in one group (model, device[, host], batch size), or why none is better than the reference.

    ``choice`` is the fastest technique within the budget (None when no technique stays within
    it); ``faster`` says whether its speedup's 95% CI lies above 1; ``flags`` are doubts a
    reader must see (noisy timing, a speedup its representation contradicts, a budget the
    accuracy CI does not assure).
    """

    group: tuple
    batch_size: int
    reference: Any
    choice: Any = None
    faster: bool = False
    within_budget: int = 0
    flags: list[tuple[str, str]] = field(default_factory=list)
    smallest: Any = None

    @property
    def verdict(self) -> str:
        """``ship``, ``keep`` (the reference: nothing within the budget is measurably faster) or ``none`` (nothing within the budget)."""
        if self.choice is None:
            return "none"
        return "ship" if self.faster else "keep"


def within_budget(rows: pd.DataFrame, max_accuracy_drop_pp: float) -> pd.DataFrame:
    """Rows whose top-1 accuracy is at most ``max_accuracy_drop_pp`` points below the reference's (a tiny tolerance for rounding)."""
    delta = pd.to_numeric(rows["accuracy_delta"], errors="coerce") * 100
    return rows[delta >= -max_accuracy_drop_pp - 1e-9]


def doubts(row: Any, max_accuracy_drop_pp: float) -> list[tuple[str, str]]:
    """What makes a row's numbers doubtful: (a short label, the reason in words) pairs."""
    flags = []
    if is_true(row.get("noisy")):
        flags.append(("noisy", f"timed on a disturbed machine: {row.get('noise_reason')}"))
    if isinstance(row.get("speedup_contradiction"), str):
        flags.append(("contradicts its representation", row["speedup_contradiction"]))
    low = row.get("accuracy_delta_ci95_low")
    if not is_missing(low) and low * 100 < -max_accuracy_drop_pp:
        flags.append(("budget not assured", f"the accuracy difference's 95% CI reaches {low * 100:+.2f} pp, beyond the {max_accuracy_drop_pp:g} pp budget"))
    return flags


def answer_group(rows: pd.DataFrame, reference: str | None, max_accuracy_drop_pp: float, group: tuple, batch_size: int) -> Answer | None:
    """The answer for one group's rows at one batch size; None when the group has no reference row to compare with."""
    reference_rows = rows[rows["technique"] == reference]
    if reference_rows.empty:
        return None
    answer = Answer(group, batch_size, reference_rows.iloc[0])
    candidates = within_budget(rows[(rows["technique"] != reference) & pd.to_numeric(rows["speedup_p50"], errors="coerce").notna()], max_accuracy_drop_pp)
    answer.within_budget = len(candidates)
    if candidates.empty:
        return answer
    choice = candidates.loc[pd.to_numeric(candidates["speedup_p50"]).idxmax()]
    answer.choice = choice
    low = choice.get("speedup_ci95_low")
    answer.faster = bool(choice["speedup_p50"] > 1 and (is_missing(low) or low > 1))
    answer.flags = doubts(choice, max_accuracy_drop_pp)
    sizes = pd.to_numeric(candidates["size_bytes"], errors="coerce")
    if sizes.notna().any():
        smallest = candidates.loc[sizes.idxmin()]
        if smallest["size_bytes"] < answer.reference["size_bytes"]:
            answer.smallest = smallest
    return answer


def answers(ok: pd.DataFrame, reference: str | None, max_accuracy_drop_pp: float, group_keys: list[str]) -> list[Answer]:
    """One answer per group and batch size, in the frame's order, at the thread count cells were built with (the largest timed)."""
    if "threads" in ok and ok["threads"].nunique() > 1:
        ok = ok[ok["threads"] == ok["threads"].max()]
    found = []
    for key, rows in ok.groupby(group_keys + ["batch_size"], sort=False, dropna=False):
        answer = answer_group(rows, reference, max_accuracy_drop_pp, tuple(key[:-1]), int(key[-1]))
        if answer is not None:
            found.append(answer)
    return found
