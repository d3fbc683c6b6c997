"""The typed cell record: built from a task's result in one place, written in one place."""

from __future__ import annotations

import json
import platform

import pytest

from benchharness.record import CellRecord
from benchharness.store import RunDir, record_problem

CELL = {"id": "mlp/baseline/cpu/r0", "model": "mlp", "technique": "baseline", "device": "cpu", "repeat": 0, "steps": []}


def test_a_build_result_becomes_a_record_with_its_extra_fields_kept():
    """Known keys become fields, a plugin's or executor's extra keys are written beside them, hand-over keys are not."""
    result = {"status": "ok", "metrics": {"accuracy_top1": 0.9}, "worker_wall_s": 1.5, "artifact": "/x.pt", "attempts": 2}
    record = CellRecord.from_build(CELL, result, {"p": "1.0"}, "2026-11-23T00:00:00+00:00", 2.0)
    assert record.worker_overhead_s == pytest.approx(0.5)
    assert record.artifact == "/x.pt" and record.extra == {"attempts": 2}
    written = record.to_json()
    assert written["attempts"] == 2 and written["metrics"] == {"accuracy_top1": 0.9}
    assert "artifact" not in written and "in_process_rounds" not in written and "extra" not in written
    assert json.loads(json.dumps(written)) == written


def test_a_record_has_a_known_status():
    """A status outside ok, failed, timeout and skipped is a programming error, caught where the record is made."""
    with pytest.raises(ValueError, match="status"):
        CellRecord(cell=CELL, status="done")


def test_failing_a_record_keeps_the_reason():
    """fail() sets the status and why, as the timing of a group does when a slot fails."""
    record = CellRecord.from_build(CELL, {"status": "ok", "metrics": {}}, {}, "t", 1.0)
    record.fail("failed", "crash", "timing failed: worker killed by SIGKILL", "tail")
    assert (record.status, record.error_type, record.traceback) == ("failed", "crash", "tail")


def test_written_records_read_back_as_usable_records(tmp_path):
    """What to_json gives is what the run directory accepts as a cell record (skip and ok alike)."""
    run = RunDir(tmp_path)
    skipped = CellRecord.from_build(CELL, {"status": "skipped", "error_type": "unsupported", "error_message": "no GPU"}, {}, "t", 0.0)
    ok = CellRecord.from_build(CELL, {"status": "ok", "metrics": {}, "node": {"hostname": platform.node()}}, {}, "t", 0.0)
    ok.latency = []
    for record in (skipped, ok):
        assert record_problem(record.to_json()) is None
        run.append(record.to_json())
    assert [record["status"] for record in run.records()] == ["skipped", "ok"]
    assert run.records()[1]["node"] == {"hostname": platform.node()}
