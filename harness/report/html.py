"""The self-contained HTML report of a run: a header, then every registered section in order."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Callable

from benchharness import __version__
from benchharness.report import figures
from benchharness.report.assets import SCRIPT, STYLE, plotly_script
from benchharness.report.frame import Run, add_comparisons, load_run, tidy_frame, write_csv
from benchharness.report.sections import Report, Section, arrange, collect_sections, section_html

VIEWPORT = "<meta name='viewport' content='width=device-width, initial-scale=1'>"


def technique_order(run: Run, frame) -> list[str]:
    """Technique labels in the suite's order (the reference first), then any others the records name."""
    return run.techniques + sorted(set(frame["technique"].dropna()) - set(run.techniques))


def make_report(run: Run) -> Report:
    """What every section renders from: the frame with its comparisons (computed once), styles and the budget."""
    frame = add_comparisons(tidy_frame(run.records), run.reference)
    techniques = technique_order(run, frame)
    budget = float((run.suite.get("report") or {}).get("max_accuracy_drop", 1.0))
    return Report(run, frame, run.reference, techniques, figures.technique_styles(techniques), budget)


def header_html(report: Report, csv_name: str | None) -> str:
    """Title, date, versions, hardware summary, progress of the run, and the link to the CSV."""
    from benchharness.report.frame import describe_hardware

    run = report.run
    info = run.info
    environment = info.get("environment", {})
    expected = len(info.get("cells", [])) or len(run.records)
    hosts = report.hosts
    lines = [
        f"{html.escape(str(info.get('created_at', '')))} · benchharness {html.escape(str(environment.get('benchharness') or __version__))}"
        f" · torch {html.escape(str(environment.get('torch')))} · {' · '.join(html.escape(line) for line in describe_hardware(info) if 'unavailable' not in line)}",
        f"{len(run.records)} of {expected} cells recorded" + (" <b>(the run has not finished: this report shows what has)</b>" if len(run.records) < expected else "")
        + f"; every comparison is against the <b>{html.escape(str(report.reference))}</b> cell of the same model, device and batch size, timed in the same interleaved rounds.",
    ]
    if len(hosts) > 1:
        lines.append(f"<b>Cells were timed on {len(hosts)} machines</b> ({html.escape(', '.join(hosts))}); results are grouped by machine, and every speedup compares cells timed together, in one process on one machine.")
    if csv_name:
        lines.append(f"Every number is in <a href='{html.escape(csv_name, quote=True)}' download>{html.escape(csv_name)}</a> (one row per cell and batch size).")
    description = (report.suite.get("description") or "").strip()
    return (
        f"<header><h1>{html.escape(info['suite']['name'])}</h1>" + (f"<p>{html.escape(description)}</p>" if description else "")
        + "".join(f"<div class='meta'>{line}</div>" for line in lines) + "</header>"
    )


def toc_html(rendered: list[tuple[Section, str]]) -> str:
    """Links to the sections that have content."""
    links = "".join(f"<a href='#{html.escape(section.name, quote=True)}'>{html.escape(section.title)}</a>" for section, text in rendered if text)
    return f"<nav class='toc'>{links}</nav>"


def page_html(title: str, body: str, cdn: bool = False, plotly: bool = True) -> str:
    """A whole page in the report's style, with plotly.js (inline and compressed unless ``cdn``; none without ``plotly``) and the report's script."""
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>{VIEWPORT}<title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style>{plotly_script(cdn) if plotly else ''}</head><body>{body}<script>{SCRIPT}</script></body></html>"
    )


def build_report(
    run: Run, cdn: bool = False, sections: list[Section | tuple[str, Callable]] | None = None, host: Any = None, csv_name: str | None = None,
) -> str:
    """The report's HTML text; plotly.js is inlined (gzip-compressed) unless ``cdn``.

    The sections are the built-in ones and those of ``host``'s plugins, plus ``sections``
    (:class:`Section` objects or ``(title, render)`` pairs); one that raises becomes an error box.
    """
    return render_report(make_report(run), cdn, sections, host, csv_name)


def render_report(report: Report, cdn: bool = False, sections: list[Section | tuple[str, Callable]] | None = None, host: Any = None, csv_name: str | None = None) -> str:
    """The HTML text of an already computed :class:`Report` (see :func:`build_report`)."""
    run = report.run
    extra = [section if isinstance(section, Section) else Section(*section) for section in sections or []]
    ordered = arrange(collect_sections(host) + extra)
    rendered = [(section, section_html(section, report)) for section in ordered]
    body = header_html(report, csv_name) + toc_html(rendered) + "".join(text for _, text in rendered)
    return page_html(f"{run.info['suite']['name']} - benchharness report", body, cdn)


def write_report(run_path: Path, output: Path | None = None, cdn: bool = False, host: Any = None) -> Path:
    """Write the run's HTML report (default ``RUN_DIR/report.html``) and its CSV beside it; return the HTML path."""
    run = load_run(run_path)
    output = Path(output) if output else run.path / "report.html"
    output.parent.mkdir(parents=True, exist_ok=True)
    csv_path = output.with_suffix(".csv")
    report = make_report(run)
    output.write_text(render_report(report, cdn=cdn, host=host, csv_name=csv_path.name), encoding="utf-8")
    write_csv(report.frame, csv_path)
    return output
