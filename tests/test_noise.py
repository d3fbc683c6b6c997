"""A real busy process beside a real run: the timings are flagged noisy, the console and the report say so."""

from __future__ import annotations

import json
import subprocess
import sys

import psutil
import pytest
from click.testing import CliRunner

from benchharness.cli import cli
from benchharness.store import RunDir
from tests.conftest import TEST_PLUGINS

SUITE = """
name = "noise"
models = ["mlp"]
[data]
name = "digits"
[[techniques]]
steps = ["baseline"]
[[techniques]]
steps = ["identity"]
[train]
epochs = 1
batch_size = 256
[measure]
batch_sizes = [8]
warmup = 2
min_iterations = 20
min_seconds = 0.3
min_rounds = 2
max_rounds = 3
disturbed_retries = 1
threads = 1
"""
BUSY = "import time\nend = time.time() + 600\nwhile time.time() < end: pass\n"
LAUNCH = "import subprocess, sys\nprint(subprocess.Popen([sys.executable, '-c', sys.argv[1]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).pid)\n"


def start_stranger() -> int:
    """A busy process that is not a child of this one (its launcher exits at once), as another user's job would be."""
    launcher = subprocess.run([sys.executable, "-c", LAUNCH, BUSY], capture_output=True, text=True, check=True)
    return int(launcher.stdout.strip())


@pytest.mark.slow
def test_a_busy_machine_is_noticed_and_named(tmp_path):
    """With another process spinning on the same CPUs, every timing is disturbed: cells are flagged with the reason."""
    suite = tmp_path / "noise.toml"
    suite.write_text(SUITE)
    busy = [psutil.Process(start_stranger()) for _ in range(2)]
    try:
        result = CliRunner().invoke(
            cli, ["run", str(suite), "--out", str(tmp_path / "runs"), "--plugin", str(TEST_PLUGINS / "faulty.py"), "--no-cache"]
        )
    finally:
        for process in busy:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(busy, timeout=10)
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "the machine is busy" in output and f"pid {busy[0].pid}" in output, "run warns before it starts and names the process"
    (run_path,) = (tmp_path / "runs").iterdir()
    records = {record["cell"]["id"]: record for record in RunDir(run_path).records()}
    for record in records.values():
        assert record["noisy"] is True
        assert "other processes used" in record["noise_reason"] and "rounds disturbed" in record["noise_reason"]
        assert max(record["latency"][0]["other_cores"]) > 0.2 and record["latency"][0]["threads"] == 1
    assert "cell(s) were measured on a disturbed machine" in output and "noisy mlp/identity/cpu/r0" in output
    report = (run_path / "report.html").read_text()
    assert "Noisy measurements" in report and "mlp/identity/cpu/r0" in report
    csv_rows = (run_path / "report.csv").read_text().splitlines()
    header = csv_rows[0].split(",")
    assert "noisy" in header and "noise_reason" in header
    assert json.loads((run_path / "run.json").read_text())["conditions"]["threads"] == 1
