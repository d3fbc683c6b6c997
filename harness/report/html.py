"""The self-contained HTML report of a run: header, summary tables, figures, failures, the suite."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import plotly.io as pio

from benchharness import __version__
from benchharness.report import figures
from benchharness.report.frame import Run, add_comparisons, describe_hardware, load_run, tidy_frame, write_csv

CDN = "https://cdn.plot.ly/plotly-{version}.min.js"
STYLE = """
body { font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; margin: 2rem auto; max-width: 1280px; color: #222; padding: 0 1rem; }
h1 { margin-bottom: .2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; padding-bottom: .3rem; }
.meta { color: #555; font-size: .92rem; line-height: 1.5; }
table { border-collapse: collapse; margin: .6rem 0 1.2rem; font-size: .86rem; }
th, td { border: 1px solid #ddd; padding: .3rem .55rem; text-align: right; vertical-align: top; white-space: nowrap; }
td.text { white-space: normal; } td.reason { white-space: normal; max-width: 26rem; }
th { background: #f4f4f4; } td.text, th.text { text-align: left; }
tr.reference td { background: #f7fbff; font-weight: 600; }
.good { color: #137333; } .bad { color: #b3261e; } .muted { color: #777; }
pre { background: #f7f7f7; padding: 1rem; overflow-x: auto; font-size: .85rem; }
.figure { margin: 1rem 0; }
.section-error { border: 2px solid #b3261e; background: #fdecea; color: #5f1411; padding: .8rem 1rem; margin: .6rem 0 1.2rem; white-space: pre-wrap; }
"""


def _number(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "<span class='muted'>-</span>"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _scaled(value: Any, units: tuple[tuple[str, float], ...], plain: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "<span class='muted'>-</span>"
    for unit, scale in units:
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{int(value)}{plain}"


def _bytes(value: Any) -> str:
    return _scaled(value, (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)), " B")


def _count(value: Any) -> str:
    return _scaled(value, (("G", 1e9), ("M", 1e6), ("k", 1e3)), "")


def _signed(value: Any, scale: float = 100.0, unit: str = " pp") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "<span class='muted'>-</span>"
    css = "good" if value > 0 else "bad" if value < 0 else ""
    return f"<span class='{css}'>{value * scale:+.2f}{unit}</span>"


def summary_table(frame: pd.DataFrame, reference: str | None) -> str:
    """One row per technique pipeline: accuracy, latency, speedup with its 95% CI, size, FLOPs, memory, energy, flag."""
    headers = [
        "technique", "steps", "top-1 %", "Δ top-1", "p50 ms", "p99 ms", "speedup (95% CI)", "size", "compression", "FLOPs/sample",
        "peak mem", "energy J/sample", "speedup expected?",
    ]
    rows = []
    for _, row in frame.iterrows():
        ci = speedup_text(row, reference)
        expected = row["speedup_expected"]
        flag = f"{'yes' if expected else 'no'} <span class='muted'>- {html.escape(str(row['speedup_reason']))}</span>" if expected is not None else "-"
        cells = [
            f"<td class='text'>{html.escape(row['technique'])}</td>",
            f"<td class='text'>{html.escape(row['steps'])}</td>",
            f"<td>{_number(row['accuracy_top1'] * 100, 2)}</td>",
            f"<td>{_signed(row['accuracy_delta'])}</td>",
            f"<td>{_number(row['latency_p50_ms'])}</td>",
            f"<td>{_number(row['latency_p99_ms'])}</td>",
            f"<td>{ci}</td>",
            f"<td>{_bytes(row['size_bytes'])}</td>",
            f"<td>{_number(row['compression_ratio'], 2)}x</td>",
            f"<td>{_count(row['flops'])}</td>",
            f"<td>{_bytes(row['peak_mem_bytes'])}</td>",
            f"<td>{_number(row['energy_j_per_sample'], 4)}</td>",
            f"<td class='reason'>{flag}</td>",
        ]
        css = " class='reference'" if row["technique"] == reference else ""
        rows.append(f"<tr{css}>{''.join(cells)}</tr>")
    head = "".join(f"<th class='text'>{h}</th>" if h in ("technique", "steps", "speedup expected?") else f"<th>{h}</th>" for h in headers)
    return f"<table class='summary'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _ratio(value: float, low: float, high: float) -> str:
    return f"{value:.3g}x ({low:.3g}-{high:.3g})" if not any(math.isnan(v) for v in (value, low, high)) else f"{value:.3g}x"


def speedup_text(row: Any, reference: str | None) -> str:
    """The speedup with its 95% CI from paired rounds (the reference shows its A/A control), and any flags."""
    if row["technique"] == reference:
        text = "reference" + (f"<br><span class='muted'>A/A {_ratio(row['aa_speedup'], row['aa_speedup_ci95_low'], row['aa_speedup_ci95_high'])}</span>" if not math.isnan(row["aa_speedup"]) else "")
    elif math.isnan(row["speedup_p50"]):
        text = "<span class='muted'>-</span>"
    else:
        text = _ratio(row["speedup_p50"], row["speedup_ci95_low"], row["speedup_ci95_high"])
    if row.get("noisy"):
        text += f"<br><span class='bad' title='{html.escape(str(row.get('noise_reason')), quote=True)}'>noisy</span>"
    if isinstance(row.get("speedup_contradiction"), str):
        text += f"<br><span class='bad' title='{html.escape(row['speedup_contradiction'], quote=True)}'>contradicts its representation</span>"
    return text


def noise_table(frame: pd.DataFrame) -> str:
    """The cells flagged noisy, with why; empty when none was."""
    flagged = frame[frame["noisy"] == True].drop_duplicates("cell_id")  # noqa: E712  (None means not measured)
    if flagged.empty:
        return ""
    rows = "".join(f"<tr><td class='text'>{html.escape(row['cell_id'])}</td><td class='text'>{html.escape(str(row['noise_reason']))}</td></tr>" for _, row in flagged.iterrows())
    return (
        "<h2>Noisy measurements</h2><p class='meta'>These cells were timed while other processes used the CPU, or their rounds disagree: "
        "treat their latency and speedup as unreliable and measure again on a quiet machine (<code>benchharness system</code> shows what disturbs it).</p>"
        f"<table class='problems'><thead><tr><th class='text'>cell</th><th class='text'>why</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def problems_table(frame: pd.DataFrame) -> str:
    """Skipped and failed cells with their reason and error type."""
    bad = frame[frame["status"] != "ok"].drop_duplicates("cell_id")
    if bad.empty:
        return "<p>Every cell finished.</p>"
    rows = "".join(
        f"<tr><td class='text'>{html.escape(row['cell_id'])}</td><td class='text'>{row['status']}</td><td class='text'>{row['error_type'] or ''}</td>"
        f"<td class='text'>{html.escape(str(row['error_message'] or ''))}</td></tr>"
        for _, row in bad.iterrows()
    )
    return f"<table class='problems'><thead><tr><th class='text'>cell</th><th class='text'>status</th><th class='text'>error type</th><th class='text'>reason</th></tr></thead><tbody>{rows}</tbody></table>"


def _figure_html(figure: Any, div_id: str) -> str:
    return f"<div class='figure'>{pio.to_html(figure, full_html=False, include_plotlyjs=False, div_id=div_id, config={'displaylogo': False})}</div>"


@dataclass
class Section:
    """A report section a plugin registered: its title, its ``render(frame)``, and the plugin's name.

    A section whose plugin failed to register it has no ``render`` but the ``error`` it raised.
    """

    title: str
    render: Callable[[pd.DataFrame], Any] | None
    plugin: str = "unknown plugin"
    error: str | None = None


def _error_box(message: str) -> str:
    return f"<div class='section-error'>{html.escape(message)}</div>"


def section_html(section: Section | tuple[str, Callable], frame: pd.DataFrame, div_id: str) -> str:
    """A plugin's section: its title and what its render returned, or an error box naming the plugin when it raised."""
    if not isinstance(section, Section):
        section = Section(*section)
    heading = f"<h2>{html.escape(section.title)}</h2>"
    if section.error is not None:
        return heading + _error_box(f"plugin '{section.plugin}' could not register its report sections: {section.error}")
    try:
        content = section.render(frame)
        return heading + (content if isinstance(content, str) else _figure_html(content, div_id))
    except Exception as error:  # one plugin's bug must not lose the rest of the report
        return heading + _error_box(f"section '{section.title}' of plugin '{section.plugin}' failed: {type(error).__name__}: {error}")


def build_report(run: Run, cdn: bool = False, sections: list[Section | tuple[str, Callable]] | None = None) -> str:
    """The report's HTML text; plotly.js is inlined unless ``cdn``.

    ``sections`` are plugins' sections (or ``(title, render)`` pairs); one that raises becomes an error box.
    """
    info = run.info
    reference = run.reference
    frame = add_comparisons(tidy_frame(run.records), reference)
    ok = frame[frame["status"] == "ok"]
    batch_sizes = sorted(ok["batch_size"].dropna().unique().astype(int)) if not ok.empty else []
    primary = int(ok["batch_size"].iloc[0]) if not ok.empty else None
    environment = info.get("environment", {})
    expected = len(info.get("cells", [])) or len(run.records)
    parts = [
        f"<h1>{html.escape(info['suite']['name'])}</h1>",
        f"<div class='meta'>{html.escape(str(info.get('created_at', '')))} - benchharness {html.escape(str(environment.get('benchharness') or __version__))}"
        f" (commit {html.escape(str(environment.get('benchharness_git_commit') or 'n/a')[:12])}), Python {environment.get('python')}, torch {environment.get('torch')}"
        f" (CUDA {environment.get('torch_cuda') or 'none'})<br>{'<br>'.join(html.escape(line) for line in describe_hardware(info))}<br>"
        f"{len(run.records)} of {expected} cells recorded"
        + (" <b>(the run has not finished: this report shows what has)</b>" if len(run.records) < expected else "")
        + f"; speedups and Δ are against the <b>{html.escape(str(reference))}</b> cell of the same model, device and batch size,"
        " timed in the same interleaved rounds; a speedup's 95% CI comes from the paired per-round ratios, and the reference's"
        " A/A control (the reference against itself) shows the noise floor.</div>",
    ]
    if ok.empty:
        parts.append("<h2>Results</h2><p>No cell has finished successfully yet.</p>")
    hosts = sorted(host for host in ok["host"].dropna().unique() if host)
    if len(hosts) > 1:
        parts.append(
            f"<p class='meta'><b>Cells were timed on {len(hosts)} machines</b> ({html.escape(', '.join(hosts))}); results are grouped by machine,"
            " and every speedup compares cells timed together, in one process on one machine.</p>"
        )
    by = ["model", "device", "host"] if len(hosts) > 1 else ["model", "device"]
    for key, by_model in ok.groupby(by, sort=False):
        model, device = key[0], key[1]
        where = f" ({html.escape(key[2])})" if len(hosts) > 1 else ""
        parts.append(f"<h2>{html.escape(model)} on {html.escape(device)}{where}</h2>")
        for batch_size, group in by_model.groupby("batch_size"):
            parts.append(f"<h3>batch {int(batch_size)}</h3>" + summary_table(group, reference))
    figure_number = 0
    if not ok.empty:
        parts.append("<h2>Accuracy, latency and size</h2>")
        for device, group in ok[ok["batch_size"] == primary].groupby("device"):
            figure_number += 1
            parts.append(_figure_html(figures.accuracy_latency(group, device, primary), f"figure-{figure_number}"))
        figure_number += 1
        parts.append(_figure_html(figures.accuracy_size(ok[ok["batch_size"] == primary]), f"figure-{figure_number}"))
        if len(batch_sizes) > 1:
            parts.append("<h2>Latency vs batch size</h2>")
            for model, group in ok.groupby("model"):
                figure_number += 1
                parts.append(_figure_html(figures.latency_batch_size(group, model), f"figure-{figure_number}"))
        steps_figure = figures.pipeline_steps(run.records)
        if steps_figure is not None:
            figure_number += 1
            parts.append("<h2>Pipelines, step by step</h2>" + _figure_html(steps_figure, f"figure-{figure_number}"))
    for section in sections or []:
        figure_number += 1
        parts.append(section_html(section, frame, f"figure-{figure_number}"))
    parts.append(noise_table(frame))
    parts.append("<h2>Skipped and failed cells</h2>" + problems_table(frame))
    overrides = info["suite"].get("overrides") or []
    parts.append(
        f"<h2>The suite, as run</h2><p class='meta'>{html.escape(info['suite']['source'])}, sha256 {info['suite']['sha256']}"
        + (f"; overrides: {html.escape(' '.join(overrides))}" if overrides else "")
        + f"</p><pre>{html.escape(info['suite']['text'])}</pre>"
    )
    if cdn:
        script = f"<script src='{CDN.format(version=_plotly_js_version())}'></script>"
    else:
        from plotly.offline import get_plotlyjs

        script = f"<script>{get_plotlyjs()}</script>"
    title = html.escape(f"{info['suite']['name']} - benchharness report")
    return f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{title}</title><style>{STYLE}</style>{script}</head><body>{''.join(parts)}</body></html>"


def _plotly_js_version() -> str:
    from plotly.offline import get_plotlyjs_version

    return get_plotlyjs_version()


def collect_sections(host: Any) -> list[Section]:
    """Report sections registered by plugins, each with its plugin's name; a plugin whose hook raises gives an error section."""
    sections: list[Section] = []
    if host is None:
        return sections
    for impl in reversed(host.pm.hook.register_report_sections.get_hookimpls()):  # the order pluggy calls them in
        plugin = impl.plugin_name

        def register(title: str, render: Callable, plugin: str = plugin) -> None:
            sections.append(Section(str(title), render, plugin))

        try:
            impl.function(**({"register": register} if "register" in impl.argnames else {}))
        except Exception as error:  # shown in the report, which is still written
            sections.append(Section(f"Sections of {plugin}", None, plugin, f"{type(error).__name__}: {error}"))
    return sections


def write_report(run_path: Path, output: Path | None = None, cdn: bool = False, host: Any = None) -> Path:
    """Write the run's HTML report (default ``RUN_DIR/report.html``) and its CSV beside it; return the HTML path."""
    run = load_run(run_path)
    output = Path(output) if output else run.path / "report.html"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(build_report(run, cdn=cdn, sections=collect_sections(host)), encoding="utf-8")
    write_csv(add_comparisons(tidy_frame(run.records), run.reference), output.with_suffix(".csv"))
    return output
