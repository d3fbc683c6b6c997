"""Reports: the tidy frame of a recorded run, the Pareto frontier, the HTML, compare, and a real browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from benchharness import hookimpl
from benchharness.cli import cli
from benchharness.host import PluginHost, PluginOptions
from benchharness.report.compare import compare_frames
from benchharness.report.figures import pareto_indexes
from benchharness.report.frame import add_comparisons, load_run, tidy_frame
from benchharness.report.html import build_report, write_report
from tests.conftest import ROOT

FIXTURE = ROOT / "tests" / "fixtures" / "run-small"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def run_copy(tmp_path) -> Path:
    """A writable copy of the recorded fixture run."""
    target = tmp_path / "run"
    shutil.copytree(FIXTURE, target)
    return target


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """The fixture run's frame with comparisons to its reference."""
    run = load_run(FIXTURE)
    return add_comparisons(tidy_frame(run.records), run.reference)


def test_frame_shape(frame):
    """A row per ok cell and batch size, one row per cell that did not finish."""
    records = [json.loads(line) for line in (FIXTURE / "results.jsonl").read_text().splitlines()]
    ok = [r for r in records if r["status"] == "ok"]
    assert len(frame) == 2 * len(ok) + (len(records) - len(ok))
    assert set(frame["status"]) == {"ok", "skipped", "failed"}
    assert sorted(frame.loc[frame["status"] == "ok", "batch_size"].unique()) == [1, 16]
    assert frame.loc[frame["status"] == "failed", "error_type"].unique().tolist() == ["exception"]


def test_reference_compares_to_itself(frame):
    """The reference (first pipeline) has no accuracy change, speedup 1 and compression 1."""
    reference = frame[(frame["technique"] == "baseline") & (frame["status"] == "ok")]
    assert (reference["accuracy_delta"] == 0).all()
    assert np.allclose(reference["speedup_p50"], 1.0) and np.allclose(reference["compression_ratio"], 1.0)
    assert reference["speedup_ci95_low"].isna().all(), "the reference has no speedup CI: its A/A control shows the noise floor"
    assert (reference["aa_speedup_ci95_low"] <= reference["aa_speedup"]).all() and (reference["aa_speedup"] <= reference["aa_speedup_ci95_high"]).all()
    assert (reference["aa_speedup"].between(0.8, 1.25)).all()


def test_aggregates_of_compressed_cells(frame):
    """Channel pruning and int8 shrink the model; the speedup CI brackets the point estimate."""
    ok = frame[frame["status"] == "ok"]
    pruned = ok[ok["technique"] == "channels-50"]
    assert (pruned["compression_ratio"] > 1.5).all() and (pruned["flops_ratio"] > 2).all()
    int8 = ok[ok["technique"] == "int8-static"]
    assert (int8["compression_ratio"] > 2.5).all()
    compared = ok[ok["technique"] != "baseline"]
    assert compared["speedup_ci95_low"].notna().all()
    assert (compared["speedup_ci95_low"] <= compared["speedup_p50"] + 1e-9).all() and (compared["speedup_p50"] <= compared["speedup_ci95_high"] + 1e-9).all()
    per_model = ok[ok["batch_size"] == 1].groupby("model")["accuracy_top1"].max()
    assert (per_model > 0.8).all()


def test_pareto_front_on_hand_made_points():
    """Points dominated in both latency and accuracy are left out; ties on latency keep the most accurate."""
    points = [(1.0, 0.90), (2.0, 0.95), (1.5, 0.85), (3.0, 0.94), (0.5, 0.70), (2.0, 0.93), (4.0, 0.99)]
    assert pareto_indexes([x for x, _ in points], [y for _, y in points], smaller_x_better=True) == [4, 0, 1, 6]


def test_report_html_contents(run_copy):
    """The report names the suite and hardware, answers first, a results table per model/device, figures, failures and the suite text."""
    html = build_report(load_run(run_copy))
    assert "<h1>fixture</h1>" in html and "ISA" in html
    assert html.index("<section id='answers'>") < html.index("<section id='results'>") < html.index("<section id='speedup-accuracy'>")
    assert html.count("class='sortable results'") == 2
    assert html.count("class='figure-data'") >= 3
    assert "mlp/explode/cpu/r0" in html and "boom from the explode technique" in html
    assert "skipped" in html and "unsupported" in html
    assert "steps = [&quot;distill&quot;, &quot;prune&quot;]" in html
    assert "<script src='https://cdn.plot.ly" not in html and "id='plotly-gzip'" in html
    assert "name='viewport'" in html


def test_the_self_contained_report_is_compressed(run_copy):
    """plotly.js is inlined gzip-compressed: the file is well under the 4.8 MB of plain plotly.js."""
    from plotly.offline import get_plotlyjs

    html = build_report(load_run(run_copy))
    assert len(html) < 0.5 * len(get_plotlyjs())


def test_report_with_cdn_is_small(run_copy):
    """--cdn links plotly.js instead of inlining it."""
    html = build_report(load_run(run_copy), cdn=True)
    assert "<script src='https://cdn.plot.ly/plotly-" in html and len(html) < 300_000


def test_cells_timed_on_two_machines_are_grouped_by_machine(run_copy):
    """Records from two hosts: the report says so and shows each model and device once per machine."""
    records = [json.loads(line) for line in (run_copy / "results.jsonl").read_text().splitlines()]
    for record in records:
        host = "node-a" if record["cell"]["model"] == "mlp" or record["cell"]["repeat"] % 2 else "node-b"
        record["node"] = {"hostname": host, "timed_on": [host]}
    (run_copy / "results.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    html = build_report(load_run(run_copy))
    assert "Cells were timed on 2 machines" in html and "(node-a, node-b)" in html
    assert "on cpu (node-a)</h3>" in html and "on cpu (node-b)</h3>" in html
    assert load_run(run_copy).records and tidy_frame(records)["host"].tolist().count("node-a") > 0


def test_one_machine_is_not_mentioned(run_copy):
    """Records without node facts (older runs) or from one host: no machine grouping."""
    html = build_report(load_run(run_copy))
    assert "Cells were timed on" not in html


def test_report_of_an_unfinished_run(run_copy):
    """A run cut short (a torn last line included) reports what finished and says it is unfinished."""
    lines = (run_copy / "results.jsonl").read_text().splitlines()
    (run_copy / "results.jsonl").write_text("\n".join(lines[:3]) + "\n" + lines[3][:40])
    html = build_report(load_run(run_copy))
    assert "3 of 14 cells recorded" in html and "has not finished" in html


def test_report_command_writes_html_and_csv(run_copy, tmp_path):
    """`benchharness report RUN_DIR -o FILE` writes the HTML and a CSV of the frame beside it."""
    output = tmp_path / "reports" / "fixture.html"
    result = CliRunner().invoke(cli, ["report", str(run_copy), "-o", str(output)])
    assert result.exit_code == 0, result.output
    assert output.is_file()
    table = pd.read_csv(output.with_suffix(".csv"))
    assert {
        "cell_id", "batch_size", "latency_p50_ms", "speedup_p50", "speedup_ci95_low", "speedup_ci95_high", "speedup_expected",
        "noisy", "noise_reason", "accuracy_delta", "aa_speedup", "fast_flops_share",
    } <= set(table.columns)
    records = [json.loads(line) for line in (run_copy / "results.jsonl").read_text().splitlines()]
    assert len(table) == sum(2 if record["status"] == "ok" else 1 for record in records)


def test_plugin_report_section(run_copy, tmp_path):
    """A plugin's register_report_sections adds its section to the report."""
    output = tmp_path / "with-section.html"
    result = CliRunner().invoke(cli, ["report", str(run_copy), "-o", str(output), "--plugin", str(ROOT / "tests" / "plugins" / "observer.py")])
    assert result.exit_code == 0, result.output
    text = output.read_text()
    assert "<h2>Observer</h2>" in text and re.search(r"<p>\d+ rows</p>", text)


class FaultySections:
    """A plugin with a section whose render raises (with markup in its message), one that works, and one whose hook raises."""

    @hookimpl
    def register_report_sections(self, register):
        """Register a failing and a working section."""
        register("Fragile <figures>", lambda frame: frame["no such column <b>"])
        register("Sturdy", lambda frame: "<p>sturdy section</p>")


class FaultyRegistration:
    """A plugin whose register_report_sections itself raises."""

    @hookimpl
    def register_report_sections(self, register):
        """Fail before registering anything."""
        raise RuntimeError("cannot register <anything>")


def test_a_failing_report_section_is_an_error_box_and_the_rest_is_written(run_copy, tmp_path):
    """A section whose render raises becomes a visible, escaped error box naming the plugin; the report is still written."""
    host = PluginHost(PluginOptions(entry_points=False))
    host.register(FaultySections(), name="fragile-plugin")
    host.register(FaultyRegistration(), name="unregistering-plugin")
    output = write_report(run_copy, tmp_path / "report.html", host=host)
    text = output.read_text()
    boxes = re.findall(r"<div class='section-error'>(.*?)</div>", text, re.S)
    (fragile,) = [box for box in boxes if "fragile-plugin" in box]
    assert "Fragile &lt;figures&gt;" in fragile and "KeyError" in fragile and "no such column &lt;b&gt;" in fragile and "<b>" not in fragile
    (unregistering,) = [box for box in boxes if "unregistering-plugin" in box]
    assert "cannot register &lt;anything&gt;" in unregistering
    assert "<p>sturdy section</p>" in text
    assert "mlp/explode/cpu/r0" in text and "The suite, as run" in text and text.endswith("</html>")
    assert output.with_suffix(".csv").is_file()


def frame_with_samples(technique_samples: dict[str, np.ndarray]) -> pd.DataFrame:
    """A minimal tidy frame whose cells carry the given latency samples."""
    rows = [
        {"model": "m", "technique": technique, "device": "cpu", "batch_size": 1, "status": "ok", "accuracy_top1": 0.9,
         "latency_p50_ms": float(np.median(samples)), "latency_p99_ms": float(np.percentile(samples, 99)), "throughput_sps": 1000 / float(np.mean(samples)),
         "size_bytes": 100, "peak_mem_bytes": 10, "energy_j_per_sample": None, "samples_ms": list(samples)}
        for technique, samples in technique_samples.items()
    ]
    return pd.DataFrame(rows)


def test_compare_finds_a_real_slowdown_and_ignores_noise():
    """Same distribution: not significant; 20% slower: a significant regression."""
    rng = np.random.default_rng(0)
    before = frame_with_samples({"same": rng.normal(10, 1, 200), "slower": rng.normal(10, 1, 200)})
    after = frame_with_samples({"same": rng.normal(10, 1, 200), "slower": rng.normal(12, 1, 200)})
    table = compare_frames(before, after, threshold=0.05).set_index("technique")
    assert table.loc["same", "latency_p_value"] > 0.05 and not table.loc["same", "regression"]
    assert table.loc["slower", "latency_p_value"] < 1e-6 and table.loc["slower", "regression"]
    assert table.loc["slower", "latency_p50_ms_ratio"] == pytest.approx(1.2, abs=0.05)


def test_compare_small_but_significant_change_is_under_threshold():
    """A significant 2% change stays below a 5% threshold."""
    rng = np.random.default_rng(1)
    before = frame_with_samples({"t": rng.normal(10, 0.05, 500)})
    after = frame_with_samples({"t": rng.normal(10.2, 0.05, 500)})
    row = compare_frames(before, after, threshold=0.05).iloc[0]
    assert row["latency_p_value"] < 1e-6 and not row["regression"]


def test_compare_command_exit_codes(run_copy, tmp_path):
    """compare exits 0 for a run against itself and 1 when latencies got significantly worse."""
    same = CliRunner().invoke(cli, ["compare", str(run_copy), str(run_copy), "-o", str(tmp_path / "cmp.html")])
    assert same.exit_code == 0, same.output
    assert (tmp_path / "cmp.html").read_text().count("<tr>") > 5
    slower = tmp_path / "slower"
    shutil.copytree(run_copy, slower)
    records = [json.loads(line) for line in (slower / "results.jsonl").read_text().splitlines()]
    for record in records:
        for entry in record.get("latency") or []:
            entry["samples_ms"] = [value * 1.5 for value in entry["samples_ms"]]
            entry["latency_p50_ms"] *= 1.5
            entry["latency_p99_ms"] *= 1.5
    (slower / "results.jsonl").write_text("\n".join(json.dumps(record) for record in records) + "\n")
    result = CliRunner().invoke(cli, ["compare", str(run_copy), str(slower)])
    assert result.exit_code == 1
    assert "significant regression" in result.output


def test_published_reports_are_self_contained():
    """Every report in reports/ inlines plotly.js (no network needed), links its CSV, and the CSV is there."""
    published = sorted((ROOT / "reports").glob("*.html"))
    assert published
    for page in published:
        text = page.read_text()
        assert "id='plotly-gzip'" in text and "<script src=" not in text
        assert f"href='{page.with_suffix('.csv').name}'" in text and page.with_suffix(".csv").is_file()
