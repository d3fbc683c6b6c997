"""A cell's record: one typed definition, built in one place and written to ``results.jsonl`` in one place.

The runner makes a :class:`CellRecord` from a build task's result (:meth:`CellRecord.from_build`),
completes it with the group's interleaved timing, and appends :meth:`CellRecord.to_json`.
Readers (reports, ``--resume``, plugins' ``after_cell``) get that JSON object.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

STATUSES = ("ok", "failed", "timeout", "skipped")


@dataclass
class CellRecord:
    """Everything the harness knows about one cell's run.

    ``status`` is one of ``ok``, ``failed``, ``timeout`` and ``skipped``; a record that is not
    ``ok`` says why in ``error_type`` and ``error_message``. ``node`` says where the cell was
    built and timed. ``threads`` is the torch thread count the cell was built and trained
    with; each ``latency`` entry says the count it was timed at (``measure.threads`` may list
    several). Fields a plugin or an executor adds to a task's result are kept in ``extra``
    and written beside the others.
    """

    cell: dict[str, Any]
    status: str
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    plugins: dict[str, str | None] = field(default_factory=dict)
    started_at: str | None = None
    wall_s: float | None = None
    worker_wall_s: float | None = None
    worker_overhead_s: float | None = None
    node: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    steps: list[dict[str, Any]] | None = None
    cache_hits: list[str] | None = None
    notes: dict[str, Any] | None = None
    curves: list[dict[str, Any]] | None = None
    threads: int | None = None
    torch_device: str | None = None
    latency: list[dict[str, Any]] | None = None
    measurement: dict[str, Any] | None = None
    speedup_contradiction: str | None = None
    noisy: bool | None = None
    noise_reason: str | None = None
    artifact: str | None = None
    timed_in_build_process: str | None = None
    in_process_rounds: list[Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"a cell record's status is one of {', '.join(STATUSES)}, not {self.status!r}")

    @property
    def cell_id(self) -> str:
        """The cell's id, e.g. ``mlp/baseline/cpu/r0``."""
        return self.cell["id"]

    @classmethod
    def from_build(cls, cell: dict[str, Any], result: dict[str, Any], plugins: dict[str, str | None], started_at: str, wall_s: float) -> "CellRecord":
        """The record of a cell from its build task's result (or a failure or skip in its place)."""
        known = {item.name for item in fields(cls)} - {"extra", "cell", "plugins", "started_at", "wall_s"}
        values = {key: value for key, value in result.items() if key in known}
        extra = {key: value for key, value in result.items() if key not in known and key not in ("cell", "plugins", "started_at", "wall_s")}
        record = cls(cell=cell, plugins=plugins, started_at=started_at, wall_s=wall_s, extra=extra, **values)
        if record.worker_wall_s is not None:
            record.worker_overhead_s = wall_s - record.worker_wall_s
        return record

    def fail(self, status: str, error_type: str | None, message: str, traceback: str | None = None) -> None:
        """Mark the record as not ok, with why."""
        self.status, self.error_type, self.error_message, self.traceback = status, error_type, message, traceback

    def to_json(self) -> dict[str, Any]:
        """The JSON object written to ``results.jsonl``: every field but the build-time hand-over ones, ``extra`` inlined."""
        data = asdict(self)
        extra = data.pop("extra")
        for key in ("artifact", "timed_in_build_process", "in_process_rounds"):
            data.pop(key)
        if data["node"] is None:
            data.pop("node")
        return {**data, **{key: value for key, value in extra.items() if key not in data}}
