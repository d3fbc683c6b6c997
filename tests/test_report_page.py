"""The report page: answers within the accuracy budget, sections that plugins add, replace and reorder, tables, and views across runs."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from benchharness import hookimpl
from benchharness.cli import cli
from benchharness.host import PluginHost, PluginOptions
from benchharness.report.answers import answers
from benchharness.report.frame import load_run
from benchharness.report.html import build_report, make_report, write_report
from benchharness.report.sections import Section, arrange
from benchharness.report.tables import Column, html_table, significant, visible_columns
from tests.conftest import ROOT

FIXTURE = ROOT / "tests" / "fixtures" / "run-small"


@pytest.fixture
def run_copy(tmp_path) -> Path:
    """A writable copy of the recorded fixture run."""
    target = tmp_path / "run"
    shutil.copytree(FIXTURE, target)
    return target


def group_rows(*rows: tuple) -> pd.DataFrame:
    """One model/device/batch group: (technique, speedup, ci low, accuracy delta, size, noisy) per row."""
    return pd.DataFrame([
        {"cell_id": f"m/{technique}/cpu/r0", "model": "m", "device": "cpu", "host": "", "batch_size": 8, "technique": technique, "status": "ok",
         "speedup_p50": speedup, "speedup_ci95_low": low, "speedup_ci95_high": None if speedup is None else speedup * 1.05,
         "accuracy_delta": delta, "accuracy_delta_ci95_low": delta - 0.004, "accuracy_delta_ci95_high": delta + 0.004,
         "size_bytes": size, "size_ratio": size / 1000, "noisy": noisy, "noise_reason": "rounds disagree" if noisy else None, "speedup_contradiction": None}
        for technique, speedup, low, delta, size, noisy in rows
    ])


def test_the_answer_is_the_fastest_technique_within_the_budget():
    """A faster technique that loses too much accuracy is passed over for the fastest one within the budget."""
    rows = group_rows(
        ("baseline", 1.0, None, 0.0, 1000, False), ("int8", 2.0, 1.9, -0.008, 300, False),
        ("pruned", 3.0, 2.8, -0.05, 500, False), ("tiny-gain", 1.1, 1.05, 0.0, 900, True),
    )
    (answer,) = answers(rows, "baseline", 1.0, ["model", "device"])
    assert answer.verdict == "ship" and answer.choice["technique"] == "int8" and answer.within_budget == 2
    assert answer.smallest["technique"] == "int8"
    (strict,) = answers(rows, "baseline", 0.5, ["model", "device"])
    assert strict.choice["technique"] == "tiny-gain" and [label for label, _ in strict.flags] == ["noisy"]


def test_no_measurable_speedup_keeps_the_reference_and_nothing_within_budget_says_so():
    """A best speedup whose CI reaches 1 keeps the reference; no technique within the budget gives 'none'."""
    keep = group_rows(("baseline", 1.0, None, 0.0, 1000, False), ("same", 1.02, 0.97, 0.0, 1000, False))
    (answer,) = answers(keep, "baseline", 1.0, ["model", "device"])
    assert answer.verdict == "keep" and answer.choice["technique"] == "same"
    none = group_rows(("baseline", 1.0, None, 0.0, 1000, False), ("broken", 4.0, 3.0, -0.3, 100, False))
    (answer,) = answers(none, "baseline", 1.0, ["model", "device"])
    assert answer.verdict == "none" and answer.choice is None


def test_an_accuracy_ci_beyond_the_budget_is_flagged():
    """A point estimate inside the budget whose CI reaches beyond it is shipped with a doubt."""
    rows = group_rows(("baseline", 1.0, None, 0.0, 1000, False), ("edge", 2.0, 1.8, -0.009, 400, False))
    (answer,) = answers(rows, "baseline", 1.0, ["model", "device"])
    assert answer.verdict == "ship" and [label for label, _ in answer.flags] == ["budget not assured"]


def test_the_budget_comes_from_the_suite(run_copy):
    """[report] max_accuracy_drop in the suite's text sets the budget the answers use and state."""
    info = json.loads((run_copy / "run.json").read_text())
    info["suite"]["text"] += "\n[report]\nmax_accuracy_drop = 7.5\n"
    (run_copy / "run.json").write_text(json.dumps(info))
    report = make_report(load_run(run_copy))
    assert report.max_accuracy_drop == 7.5
    assert "<b>7.5 pp</b>" in build_report(load_run(run_copy))


def test_significant_figures():
    """Three significant figures, no exponents; integers keep their digits."""
    assert [significant(value) for value in (0.066429, 1.23456, 123.456, 98765.4, 0.0, None)] == ["0.0664", "1.23", "123", "98,765", "0", "-"]


def test_tables_carry_sort_keys_and_hide_empty_columns():
    """Cells hold their raw value for sorting; a column empty in every row is left out."""
    frame = pd.DataFrame({"name": ["b", "a"], "value": [2.5, 10.0], "energy": [None, None]})
    columns = visible_columns([Column("name", "name", text=True, sticky=True), Column("value", "value"), Column("energy", "energy")], frame)
    assert [column.header for column in columns] == ["name", "value"]
    table = html_table(frame, columns)
    assert "data-sort='10.0'" in table and "data-sort='a'" in table and "energy" not in table
    assert "class='text sticky'" in table and "class='table-scroll'" in table


class ReplacingPlugin:
    """Replaces the built-in answers, removes the suite text, and puts its own section first."""

    @hookimpl
    def register_report_sections(self, register):
        """Register three sections."""
        register("Our answers", lambda frame: "<p>plugin answers</p>", name="answers", order=100)
        register("The suite, as run", None, name="suite")
        register("Headline", lambda frame, report: f"<p>reference {report.reference}, {len(report.ok)} ok rows</p>", name="headline", order=10)


def test_a_plugin_replaces_removes_and_reorders_built_in_sections(run_copy, tmp_path):
    """Built-in sections come through the same hook: a plugin replaces one by name, removes one, and goes first."""
    host = PluginHost(PluginOptions(entry_points=False))
    host.register(ReplacingPlugin(), name="replacing-plugin")
    text = write_report(run_copy, tmp_path / "report.html", host=host).read_text()
    assert "<p>plugin answers</p>" in text and "The fastest technique whose top-1" not in text
    assert "<section id='suite'>" not in text
    assert re.search(r"<p>reference baseline, \d+ ok rows</p>", text)
    assert text.index("<section id='headline'>") < text.index("<section id='answers'>") < text.index("<section id='results'>")


def test_arrange_keeps_the_last_registration_of_a_name_in_the_first_ones_place():
    """Later registrations under a name win; without an order a section keeps the default place."""
    first, second, other = Section("A", str, name="a", order=300), Section("A2", repr, name="a", order=300), Section("B", str, name="b", order=200)
    assert arrange([first, other, second]) == [other, second]


def test_a_plugin_metric_and_note_reach_the_csv_and_a_plugin_section(run_copy, tmp_path):
    """A plugin's own metric and note, recorded in results.jsonl, reach report.csv and the frame a plugin section renders."""
    records = [json.loads(line) for line in (run_copy / "results.jsonl").read_text().splitlines()]
    for record in records:
        if record["status"] == "ok":
            record["metrics"]["binarized_packed_bytes"] = 1234
            record.setdefault("notes", {})["my_plugin_note"] = "hello"
    (run_copy / "results.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))

    class Reader:
        @hookimpl
        def register_report_sections(self, register):
            register("Packed", lambda frame: f"<p>packed {int(frame['binarized_packed_bytes'].max())} {frame['my_plugin_note'].dropna().iloc[0]}</p>")

    host = PluginHost(PluginOptions(entry_points=False))
    host.register(Reader(), name="reader")
    output = write_report(run_copy, tmp_path / "report.html", host=host)
    assert "<p>packed 1234 hello</p>" in output.read_text()
    table = pd.read_csv(output.with_suffix(".csv"))
    assert set(table["binarized_packed_bytes"].dropna()) == {1234} and "hello" in set(table["my_plugin_note"].dropna())


def test_report_links_its_csv_and_anchors_every_row(run_copy, tmp_path):
    """The report links report.csv beside it; every results row has an id the answers link to."""
    output = write_report(run_copy, tmp_path / "out" / "fixture.html")
    text = output.read_text()
    assert "href='fixture.csv'" in text and output.with_suffix(".csv").is_file()
    anchors = set(re.findall(r"<tr id='(cell-[^']+)'", text))
    links = set(re.findall(r"href='#(cell-[^']+)'", text))
    assert anchors and links and links <= anchors | set(re.findall(r"id='(cell-[^']+)'", text))


def test_the_report_shows_the_environment(run_copy):
    """The environment section lists hardware, libraries, threads and allocator, and defines the 'speedup expected' rule."""
    text = build_report(load_run(run_copy))
    environment = text[text.index("<section id='environment'>"):]
    assert "AMD EPYC" in environment or "cpu:" in environment
    assert "torch" in environment and "threads" in environment and "Speedup expected?" in environment


def test_several_runs_give_a_page_of_speedups_across_runs(run_copy, tmp_path):
    """`report RUN RUN` of one suite writes the speedups of each technique across the runs, oldest first."""
    later = tmp_path / "later"
    shutil.copytree(run_copy, later)
    info = json.loads((later / "run.json").read_text())
    info["created_at"] = "2099-01-01T00:00:00+00:00"
    (later / "run.json").write_text(json.dumps(info))
    output = tmp_path / "runs.html"
    result = CliRunner().invoke(cli, ["report", str(later), str(run_copy), "-o", str(output)])
    assert result.exit_code == 0, result.output
    text = output.read_text()
    assert "fixture: 2 runs" in text and text.index(">run<") < text.index(">later<")
    assert "class='figure-data'" in text


def test_runs_of_different_suites_are_refused(run_copy, tmp_path):
    """A trend of two different suites is exit 2, naming the odd run."""
    other = tmp_path / "other"
    shutil.copytree(run_copy, other)
    info = json.loads((other / "run.json").read_text())
    info["suite"]["name"] = "another"
    (other / "run.json").write_text(json.dumps(info))
    result = CliRunner().invoke(cli, ["report", str(run_copy), str(other), "-o", str(tmp_path / "x.html")])
    assert result.exit_code == 2 and "another" in result.output and "same suite" in result.output


def test_compare_writes_a_page_in_the_report_style(run_copy, tmp_path):
    """`compare -o` writes a sortable page with the report's stylesheet and no plotly.js."""
    output = tmp_path / "compare.html"
    result = CliRunner().invoke(cli, ["compare", str(run_copy), str(run_copy), "-o", str(output)])
    assert result.exit_code == 0, result.output
    text = output.read_text()
    assert "class='sortable compare'" in text and "0 regression(s)" in text and "id='plotly-gzip'" not in text
