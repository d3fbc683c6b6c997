"""plotly figures of a run's tidy frame: every figure draws a technique in the one colour and symbol of ``technique_styles``.

Every figure gives each technique one legend entry (its traces share ``legendgroup=technique``), says in its title
how to read it, and labels its log axes with full numbers at 1-2-5 steps (``log_axis``).
"""

from __future__ import annotations

import html
import math
import textwrap
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from benchharness.report.tables import BYTE_UNITS, COUNT_UNITS, is_missing, scaled

# Paul Tol's "muted" scheme: told apart with the common colour-vision deficiencies, readable on white.
PALETTE = ["#332288", "#88CCEE", "#44AA99", "#117733", "#999933", "#DDCC77", "#CC6677", "#882255", "#AA4499"]
# 7 symbols against 9 colours: the lengths are coprime, so the first 63 techniques get 63 different pairs.
SYMBOLS = ["circle", "square", "diamond", "triangle-up", "triangle-down", "pentagon", "star"]
DASHES = ["solid", "dot", "dash", "dashdot", "longdash", "longdashdot"]
FALLBACK_STYLE = {"color": "#777777", "symbol": "circle"}
FRONTIER_NAME = "Pareto frontier"
FRONTIER_LINE = dict(color="#444444", width=1.5, dash="dash")
REFERENCE_LINE = dict(color="#555555", width=1, dash="dot")
BUDGET_FILL = "rgba(17, 119, 51, 0.09)"
MARKER_SIZE = 10
ROW_HEIGHT = 300
ROW_GAP = 70
LAYOUT = dict(
    template="plotly_white", autosize=True, margin=dict(l=60, r=20, t=40, b=50),
    legend=dict(title_text="technique", font=dict(size=11), groupclick="togglegroup"), hoverlabel=dict(align="left"),
)
NUMERIC_COLUMNS = [
    "batch_size", "latency_p50_ms", "latency_p50_ci95_low_ms", "latency_p50_ci95_high_ms", "throughput_sps", "speedup_p50", "speedup_ci95_low",
    "speedup_ci95_high", "accuracy_top1", "accuracy_delta", "accuracy_delta_ci95_low", "accuracy_delta_ci95_high", "accuracy_samples",
    "size_bytes", "compression_ratio", "size_ratio",
]
TICK_MANTISSAS = [(1,), (1, 2, 5), (1, 1.5, 2, 3, 5, 7), (1, 1.1, 1.2, 1.3, 1.5, 1.7, 2, 2.5, 3, 4, 5, 6, 7, 8, 9)]


def technique_styles(techniques: list[str]) -> dict[str, dict]:
    """One colour and one symbol per technique for the whole report, in the given (suite) order: ``{name: {"color", "symbol"}}``.

    Colours and symbols cycle independently over lists of coprime lengths, so dozens of techniques stay distinguishable.
    """
    names = list(dict.fromkeys(techniques))
    return {name: {"color": PALETTE[i % len(PALETTE)], "symbol": SYMBOLS[i % len(SYMBOLS)]} for i, name in enumerate(names)}


def log_axis(values: Iterable[float], label: Callable[[float], str] | None = None, ticks: Iterable[float] | None = None) -> dict:
    """Settings for a log axis showing ``values``: its range, and full-number tick labels (1-2-5 steps, or ``ticks``).

    plotly's own log ticks label the minor steps with bare digits ("2 3 ... 9 0.1"); these never do.
    """
    label = label or format_number
    finite = [float(value) for value in values if value is not None and np.isfinite(value) and value > 0]
    if not finite:
        return dict(type="log")
    low, high = math.log10(min(finite)), math.log10(max(finite))
    if high - low < 0.2:
        middle = (low + high) / 2
        low, high = middle - 0.1, middle + 0.1
    pad = 0.05 * (high - low) + 0.02
    low, high = low - pad, high + pad
    if ticks is not None:
        chosen = sorted({float(tick) for tick in ticks if tick > 0})
    else:
        for mantissas in TICK_MANTISSAS:
            chosen = [
                float(f"{mantissa}e{exponent}") for exponent in range(math.floor(low), math.ceil(high) + 1) for mantissa in mantissas
                if low <= math.log10(mantissa) + exponent <= high
            ]
            if len(chosen) >= 4:
                break
        if len(chosen) > 10:
            chosen = chosen[:: math.ceil(len(chosen) / 7)]
    return dict(type="log", range=[low, high], tickmode="array", tickvals=chosen, ticktext=[label(tick) for tick in chosen])


def format_number(value: float) -> str:
    """A tick label: the full number, with k/M/G for thousands and up ("0.05", "2", "150k")."""
    return scaled(value, COUNT_UNITS, number=lambda number: f"{number:g}", space="")


def format_bytes(value: float) -> str:
    """A size label: "40 kB", "1.5 MB"."""
    return scaled(value, BYTE_UNITS, " B", number=lambda number: f"{number:.3g}") if abs(value) >= 1e3 else f"{value:.0f} B"


def format_times(value: float) -> str:
    """A ratio label: "0.5×", "2×"."""
    return f"{value:g}×"


def speedup_vs_accuracy(frame: pd.DataFrame, styles: dict[str, dict], reference: str | None, max_accuracy_drop_pp: float) -> go.Figure | None:
    """Speedup (log, with CIs) against accuracy difference in pp, a facet per batch size (columns) and model/device (rows).

    Each facet shades the accuracy budget, marks the reference at (0, 1×) and draws the Pareto frontier as a staircase;
    doubtful timings (noisy, or contradicting rounds) get open markers.
    """
    data = _ok(frame).dropna(subset=["speedup_p50", "accuracy_delta", "batch_size"])
    if data.empty:
        return None
    data = data.assign(
        accuracy_delta_pp=data["accuracy_delta"] * 100, group=_group_labels(data), batch=data["batch_size"].astype(int),
        hover=[_cell_hover(row, reference) for row in data.to_dict("records")],
    )
    groups, batches = list(dict.fromkeys(data["group"])), sorted(data["batch"].unique())
    x_low, x_high = _accuracy_range(data, max_accuracy_drop_pp)
    figure = _grid(len(groups), len(batches), [f"{group} · batch {batch}" for group in groups for batch in batches])
    for row, group in enumerate(groups, start=1):
        for col, batch in enumerate(batches, start=1):
            facet = data[(data["group"] == group) & (data["batch"] == batch)]
            figure.add_vrect(
                x0=-max_accuracy_drop_pp, x1=x_high, fillcolor=BUDGET_FILL, line_width=0, layer="below", row=row, col=col, exclude_empty_subplots=False,
            )
            figure.add_hline(y=1, line=REFERENCE_LINE, row=row, col=col, exclude_empty_subplots=False)
            for technique, points in _by_technique(facet, styles):
                figure.add_trace(_speedup_points(points, technique, _style(styles, technique), technique == reference), row=row, col=col)
            frontier = _frontier(facet, "accuracy_delta_pp", "speedup_p50", smaller_x_better=False)
            if frontier is not None:
                figure.add_trace(frontier, row=row, col=col)
    speedups = pd.concat([data["speedup_p50"], data["speedup_ci95_low"], data["speedup_ci95_high"], pd.Series([1.0])])
    figure.update_yaxes(**log_axis(speedups, format_times))
    figure.update_xaxes(range=[x_low, x_high])
    for col in range(1, len(batches) + 1):
        figure.update_xaxes(title_text=f"accuracy Δ vs {reference} (pp)", row=len(groups), col=col)
    for row in range(1, len(groups) + 1):
        figure.update_yaxes(title_text=f"speedup vs {reference}", row=row, col=1)
    return _finish(
        figure, styles, "Speedup against accuracy: up and right is better",
        f"one point per cell; whiskers: 95% CIs; shaded: accuracy within the budget (at most {max_accuracy_drop_pp:g} pp lost);"
        f" dashed staircase: Pareto frontier; open markers: doubtful timings (noisy or contradicting); outlined at (0, 1×): the reference ({reference})",
        _grid_height(len(groups)),
    )


def accuracy_vs_size(frame: pd.DataFrame, styles: dict[str, dict]) -> go.Figure | None:
    """Top-1 accuracy against serialized size (log), a facet per model, with the Pareto frontier (smaller and more accurate) per facet."""
    data = _ok(frame).dropna(subset=["accuracy_top1", "size_bytes"]).drop_duplicates("cell_id")
    if data.empty:
        return None
    data = data.assign(accuracy_pct=data["accuracy_top1"] * 100, hover=[_size_hover(row) for row in data.to_dict("records")])
    models = list(dict.fromkeys(data["model"]))
    techniques = _technique_order(data, styles)
    wrap = min(len(models), 4)
    rows = math.ceil(len(models) / wrap)
    figure = px.scatter(
        data, x="size_bytes", y="accuracy_pct", color="technique", symbol="technique", facet_col="model", facet_col_wrap=wrap,
        facet_col_spacing=0.04, facet_row_spacing=min(0.3, 70 / _grid_height(rows)) if rows > 1 else 0.03,
        category_orders={"technique": techniques, "model": models},
        color_discrete_map={name: _style(styles, name)["color"] for name in techniques},
        symbol_map={name: _style(styles, name)["symbol"] for name in techniques},
        custom_data=["hover", "model"], labels={"size_bytes": "serialized size", "accuracy_pct": "top-1 accuracy (%)", "model": "model"},
    )
    figure.update_traces(hovertemplate="%{customdata[0]}<extra></extra>", marker=dict(size=MARKER_SIZE, line=dict(width=1, color="#333333")))
    for model in models:
        frontier = _frontier(data[data["model"] == model], "size_bytes", "accuracy_pct", smaller_x_better=True)
        if frontier is not None:
            facet = next(trace for trace in figure.data if trace.customdata is not None and trace.customdata[0][1] == model)
            frontier.update(xaxis=facet.xaxis, yaxis=facet.yaxis)
            figure.add_trace(frontier)
    _plain_facet_titles(figure)
    figure.update_xaxes(**log_axis(data["size_bytes"], format_bytes))
    figure.update_yaxes(range=_span(data["accuracy_pct"], 0.5))
    return _finish(
        figure, styles, "Accuracy against model size: up and left is better",
        "one point per cell (size does not depend on the batch size); dashed staircase: Pareto frontier (smaller and more accurate)",
        _grid_height(rows),
    )


def latency_vs_batch_size(frame: pd.DataFrame, styles: dict[str, dict]) -> go.Figure | None:
    """p50 latency per sample (top) and throughput (bottom) against batch size, log-log, a column per model.

    A line per cell, coloured by technique, dashed by device. None with fewer than three batch sizes.
    """
    data = _ok(frame).dropna(subset=["batch_size", "latency_p50_ms"])
    batch_sizes = sorted(data["batch_size"].unique())
    if len(batch_sizes) < 3:
        return None
    data = data.assign(latency_per_sample_ms=data["latency_p50_ms"] / data["batch_size"], hover=[_latency_hover(row) for row in data.to_dict("records")])
    models = list(dict.fromkeys(data["model"]))
    devices = list(dict.fromkeys(data["device"]))
    dashes = {device: DASHES[i % len(DASHES)] for i, device in enumerate(devices)}
    figure = _grid(2, len(models), models + [""] * len(models), shared_y="rows")
    for col, model in enumerate(models, start=1):
        for technique, points in _by_technique(data[data["model"] == model], styles):
            style = _style(styles, technique)
            for _, line in points.groupby("cell_id", sort=False):
                line = line.sort_values("batch_size")
                for row, column in ((1, "latency_per_sample_ms"), (2, "throughput_sps")):
                    figure.add_trace(
                        go.Scatter(
                            x=line["batch_size"], y=line[column], mode="lines+markers", name=technique, legendgroup=technique,
                            line=dict(color=style["color"], dash=dashes[line["device"].iloc[0]], width=2),
                            marker=dict(color=style["color"], symbol=style["symbol"], size=8),
                            customdata=line["hover"], hovertemplate="%{customdata}<extra></extra>",
                        ),
                        row=row, col=col,
                    )
    figure.update_xaxes(**log_axis(batch_sizes, ticks=batch_sizes))
    figure.update_yaxes(**log_axis(data["latency_per_sample_ms"]), row=1)
    figure.update_yaxes(**log_axis(data["throughput_sps"]), row=2)
    for col in range(1, len(models) + 1):
        figure.update_xaxes(title_text="batch size", row=2, col=col)
    figure.update_yaxes(title_text="p50 latency per sample (ms)", row=1, col=1)
    figure.update_yaxes(title_text="throughput (samples/s)", row=2, col=1)
    dash_note = ", ".join(f"{dash} {device}" for device, dash in dashes.items())
    return _finish(
        figure, styles, "Latency and throughput against batch size: lower (top) and higher (bottom) is better",
        f"top: p50 latency per sample; bottom: samples per second; a line per cell; line dash: device ({dash_note})", _grid_height(2), lines=True,
    )


def pipeline_steps(records: list[dict], styles: dict[str, dict], reference: str | None) -> go.Figure | None:
    """Accuracy against size (log) after every step of each multi-step pipeline, from the trained reference model, with arrows.

    ``records`` are the whole run's: the start point is the reference cell of the same model and device.
    None when no multi-step pipeline finished.
    """
    pipelines = [record for record in records if record["status"] == "ok" and len(record["cell"]["steps"]) > 1 and record.get("steps")]
    if not pipelines:
        return None
    models = list(dict.fromkeys(record["cell"]["model"] for record in pipelines))
    figure = _grid(1, len(models), models, shared_y=False)
    sizes: list[float] = []
    accuracies: list[float] = []
    for record in pipelines:
        cell = record["cell"]
        technique, col = cell["technique"], models.index(cell["model"]) + 1
        style = _style(styles, technique)
        points = [(step["step"], step["metrics"]) for step in record["steps"]]
        start = _reference_record(records, cell, reference)
        if start is not None:
            points.insert(0, (f"start ({reference})", start["metrics"]))
        x = [metrics["size_bytes"] for _, metrics in points]
        y = [metrics["accuracy_top1"] * 100 for _, metrics in points]
        sizes += x
        accuracies += y
        hover = [_step_hover(cell["id"], name, metrics) for name, metrics in points]
        figure.add_trace(
            go.Scatter(
                x=x, y=y, mode="markers+text", text=[name for name, _ in points], textposition="top center", textfont=dict(size=10),
                name=technique, legendgroup=technique, marker=dict(color=style["color"], symbol=style["symbol"], size=MARKER_SIZE),
                hovertext=hover, hoverinfo="text",
            ),
            row=1, col=col,
        )
        axis = "" if col == 1 else str(col)
        for i in range(1, len(points)):
            # annotations on a log axis take log10 positions (shapes and traces take data values)
            figure.add_annotation(
                x=math.log10(x[i]), y=y[i], ax=math.log10(x[i - 1]), ay=y[i - 1], xref=f"x{axis}", yref=f"y{axis}", axref=f"x{axis}", ayref=f"y{axis}",
                text="", showarrow=True, arrowhead=2, arrowsize=1.2, arrowwidth=1.5, arrowcolor=style["color"], standoff=6, startstandoff=6,
            )
    figure.update_xaxes(**log_axis(sizes, format_bytes), title_text="serialized size")
    figure.update_yaxes(range=_span(accuracies, 0.5, top=0.15))
    figure.update_yaxes(title_text="top-1 accuracy (%)", row=1, col=1)
    return _finish(
        figure, styles, "Pipelines step by step: follow the arrows; up and left is better",
        f"each arrow is one step, from the trained {reference} model to the pipeline's result", _grid_height(1),
    )


def speedup_across_runs(trend: pd.DataFrame, styles: dict[str, dict]) -> go.Figure | None:
    """Speedup (log, with CIs) of every cell across several runs of a suite, in run order; facets per model/device and batch size.

    ``trend`` is a tidy frame with ``run``, ``run_created_at`` and ``run_commit`` columns. None with fewer than two runs.
    """
    data = _ok(trend).dropna(subset=["speedup_p50", "batch_size"])
    runs = data[["run", "run_created_at", "run_commit"]].drop_duplicates("run")
    if len(runs) < 2:
        return None
    runs = runs.sort_values("run_created_at", kind="stable", na_position="last")
    labels = {row.run: f"{row.run}<br>{str(row.run_commit)[:8] if _present(row.run_commit) else 'no commit'}" for row in runs.itertuples()}
    data = data.assign(
        run_label=data["run"].map(labels), group=_group_labels(data), batch="batch " + data["batch_size"].astype(int).astype(str),
        error_plus=data["speedup_ci95_high"] - data["speedup_p50"], error_minus=data["speedup_p50"] - data["speedup_ci95_low"],
        hover=[_trend_hover(row) for row in data.to_dict("records")], run_order=data["run"].map({run: i for i, run in enumerate(runs["run"])}),
    ).sort_values("run_order", kind="stable")
    groups = list(dict.fromkeys(data["group"]))
    batches = [f"batch {size}" for size in sorted(data["batch_size"].astype(int).unique())]
    techniques = _technique_order(data, styles)
    height = _grid_height(len(groups))
    figure = px.line(
        data, x="run_label", y="speedup_p50", color="technique", symbol="technique", line_group="cell_id", markers=True,
        facet_row="group", facet_col="batch", error_y="error_plus", error_y_minus="error_minus",
        facet_row_spacing=min(0.3, ROW_GAP / height) if len(groups) > 1 else 0.03, facet_col_spacing=0.04,
        category_orders={"run_label": [labels[run] for run in runs["run"]], "technique": techniques, "group": groups, "batch": batches},
        color_discrete_map={name: _style(styles, name)["color"] for name in techniques},
        symbol_map={name: _style(styles, name)["symbol"] for name in techniques},
        custom_data=["hover"], labels={"run_label": "run", "speedup_p50": "speedup"},
    )
    figure.update_traces(hovertemplate="%{customdata[0]}<extra></extra>", marker=dict(size=8))
    figure.for_each_trace(lambda trace: trace.update(marker_color=trace.line.color))
    figure.add_hline(y=1, line=REFERENCE_LINE)
    _plain_facet_titles(figure)
    figure.update_xaxes(type="category", range=[-0.5, len(runs) - 0.5], title_text="")
    speedups = pd.concat([data["speedup_p50"], data["speedup_ci95_low"], data["speedup_ci95_high"], pd.Series([1.0])])
    figure.update_yaxes(**log_axis(speedups, format_times))
    return _finish(
        figure, styles, "Speedup across runs: a line that drops is a regression; up is better",
        "runs in the order they were made (name and commit); whiskers: 95% CIs; dotted: the reference (1×)", height, lines=True,
    )


def _ok(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows to plot, numeric columns made numeric (a frame built from records may hold None in object columns)."""
    data = frame[frame["status"] == "ok"].copy()
    for column in NUMERIC_COLUMNS:
        if column in data:
            data[column] = pd.to_numeric(data[column], errors="coerce")
    return data


def _present(value: Any) -> bool:
    """Whether a frame value holds something (not None, NaN or an empty string)."""
    return not is_missing(value) and value != ""


def _style(styles: dict[str, dict], technique: str) -> dict:
    return styles.get(technique, FALLBACK_STYLE)


def _technique_order(data: pd.DataFrame, styles: dict[str, dict]) -> list[str]:
    """The frame's techniques in the styles' (suite) order, then any the styles do not name."""
    present = set(data["technique"])
    return [name for name in styles if name in present] + sorted(present - set(styles))


def _by_technique(data: pd.DataFrame, styles: dict[str, dict]) -> list[tuple[str, pd.DataFrame]]:
    return [(technique, data[data["technique"] == technique]) for technique in _technique_order(data, styles)]


def _group_labels(data: pd.DataFrame) -> pd.Series:
    """'mlp on cpu', with the host appended when cells were timed on several machines."""
    hosts = {host for host in data["host"].dropna() if host} if "host" in data else set()
    labels = data["model"].astype(str) + " on " + data["device"].astype(str)
    if len(hosts) > 1:
        labels = labels + " (" + data["host"].fillna("?").astype(str) + ")"
    return labels


def _grid_height(rows: int) -> int:
    return 110 + rows * ROW_HEIGHT + (rows - 1) * ROW_GAP


def _grid(rows: int, cols: int, titles: list[str], shared_y: bool | str = "all") -> go.Figure:
    return make_subplots(
        rows=rows, cols=cols, subplot_titles=titles, shared_xaxes="all" if shared_y == "all" else "columns", shared_yaxes=shared_y,
        horizontal_spacing=0.05 if shared_y else 0.08, vertical_spacing=ROW_GAP / _grid_height(rows) if rows > 1 else 0.1,
    )


def _plain_facet_titles(figure: go.Figure) -> None:
    """plotly express titles facets "model=mlp"; a reader wants "mlp"."""
    figure.for_each_annotation(lambda annotation: annotation.update(text=annotation.text.split("=", 1)[-1]))


def _span(values: Iterable[float], minimum_pad: float, top: float = 0.0) -> list[float]:
    """A linear axis range around ``values``: 8% of their span (at least ``minimum_pad``) each side, ``top`` more above."""
    finite = [float(value) for value in values if value is not None and np.isfinite(value)]
    low, high = (min(finite), max(finite)) if finite else (0.0, 1.0)
    pad = max(0.08 * (high - low), minimum_pad)
    return [low - pad, high + pad + top * (high - low + pad)]


def _finish(figure: go.Figure, styles: dict[str, dict], title: str, subtitle: str, height: int, lines: bool = False) -> go.Figure:
    """Common layout, and one legend entry per technique.

    The entries are markers drawn from ``styles`` rather than the first trace of each technique, whose marker may be
    a doubtful point's open one. Every axis of a figure gets an explicit range: with matched facet axes, plotly.js
    autoranges one axis wrongly when the other's range is set.
    """
    subtitle = _wrap(subtitle, 120)
    subtitle_lines = subtitle.count("<br>") + 1
    figure.update_layout(
        **{**LAYOUT, "margin": {**LAYOUT["margin"], "t": 84 + 16 * subtitle_lines}}, height=height + 16 * subtitle_lines,
        title=dict(text=title, subtitle=dict(text=subtitle), x=0.01, xanchor="left", y=1, yref="container", yanchor="top", pad=dict(t=12)),
    )
    figure.update_annotations(font_size=13)
    groups = list(dict.fromkeys(trace.legendgroup for trace in figure.data if trace.legendgroup))
    figure.update_traces(showlegend=False)
    for technique in [name for name in styles if name in groups] + [name for name in groups if name not in styles]:
        style = _style(styles, technique)
        figure.add_trace(
            go.Scatter(
                x=[None], y=[None], mode="lines+markers" if lines else "markers", name=technique, legendgroup=technique, showlegend=True,
                marker=dict(color=style["color"], symbol=style["symbol"], size=MARKER_SIZE), line=dict(color=style["color"]), hoverinfo="skip",
            )
        )
    return figure


def _accuracy_range(data: pd.DataFrame, max_accuracy_drop_pp: float) -> tuple[float, float]:
    values = [0.0, -max_accuracy_drop_pp, *data["accuracy_delta_pp"]]
    for column in ("accuracy_delta_ci95_low", "accuracy_delta_ci95_high"):
        if column in data:
            values += list(data[column].dropna() * 100)
    low, high = min(values), max(values)
    pad = max(0.08 * (high - low), 0.25)
    return low - pad, high + pad


def _doubtful(row: dict) -> bool:
    return (_present(row.get("noisy")) and bool(row["noisy"])) or _present(row.get("speedup_contradiction"))


def _speedup_points(points: pd.DataFrame, technique: str, style: dict, is_reference: bool) -> go.Scatter:
    """One facet's points of one technique: doubtful timings open, the reference large and outlined."""
    rows = points.to_dict("records")
    symbols = [style["symbol"] + ("-open" if _doubtful(row) else "") for row in rows]
    error_x = None
    if "accuracy_delta_ci95_low" in points and "accuracy_delta_ci95_high" in points:
        error_x = dict(
            type="data", symmetric=False, array=points["accuracy_delta_ci95_high"] * 100 - points["accuracy_delta_pp"],
            arrayminus=points["accuracy_delta_pp"] - points["accuracy_delta_ci95_low"] * 100, color=style["color"], thickness=1.2, width=3,
        )
    return go.Scatter(
        x=points["accuracy_delta_pp"], y=points["speedup_p50"], mode="markers+text" if is_reference else "markers",
        text=["reference"] * len(rows) if is_reference else None, textposition="bottom right", textfont=dict(size=10, color="#333333"),
        name=technique, legendgroup=technique,
        marker=dict(
            color=style["color"], symbol=symbols, size=MARKER_SIZE + 5 if is_reference else MARKER_SIZE,
            line=dict(width=2.5 if is_reference else 1, color="#111111" if is_reference else style["color"]),
        ),
        error_y=dict(
            type="data", symmetric=False, array=points["speedup_ci95_high"] - points["speedup_p50"],
            arrayminus=points["speedup_p50"] - points["speedup_ci95_low"], color=style["color"], thickness=1.2, width=3,
        ),
        error_x=error_x, customdata=points["hover"], hovertemplate="%{customdata}<extra></extra>",
    )


def pareto_indexes(x: list[float], y: list[float], smaller_x_better: bool) -> list[int]:
    """Indexes of the points no other point beats on both axes (y: higher is better; x: as told), ordered by x."""
    sign = 1 if smaller_x_better else -1
    order = sorted(range(len(x)), key=lambda i: (sign * x[i], -y[i]))
    front, best = [], -math.inf
    for index in order:
        if y[index] > best:
            front.append(index)
            best = y[index]
    return sorted(front, key=lambda i: x[i])


def _frontier(data: pd.DataFrame, x: str, y: str, smaller_x_better: bool) -> go.Scatter | None:
    """The facet's Pareto frontier as a staircase through its non-dominated points, or None with fewer than two."""
    points = data[[x, y]].dropna()
    front = points.iloc[pareto_indexes(list(points[x]), list(points[y]), smaller_x_better)]
    if len(front) < 2:
        return None
    # between two frontier points the dominated region's edge steps down then across (or across then up)
    shape = "hv" if smaller_x_better else "vh"
    return go.Scatter(x=front[x], y=front[y], mode="lines", name=FRONTIER_NAME, line=dict(shape=shape, **FRONTIER_LINE), hoverinfo="skip", showlegend=False)


def _reference_record(records: list[dict], cell: dict, reference: str | None) -> dict | None:
    """The reference cell of the same model and device (the same repeat when there is one)."""
    candidates = [
        record for record in records
        if record["status"] == "ok" and record["cell"]["technique"] == reference and record["cell"]["model"] == cell["model"]
        and record["cell"]["device"] == cell["device"] and record.get("metrics")
    ]
    same_repeat = [record for record in candidates if record["cell"].get("repeat") == cell.get("repeat")]
    return (same_repeat or candidates or [None])[0]


def _wrap(text: str, width: int = 70) -> str:
    return "<br>".join(textwrap.wrap(text, width)) or text


def _escape(value: Any) -> str:
    return html.escape(str(value))


def _ci(low: Any, high: Any, fmt: str, unit: str = "") -> str:
    if _present(low) and _present(high) and np.isfinite(low) and np.isfinite(high):
        return f" (95% CI {low:{fmt}} to {high:{fmt}}{unit})"
    return ""


def _speedup_line(row: dict) -> str:
    return f"speedup {row['speedup_p50']:.3g}×" + _ci(row.get("speedup_ci95_low"), row.get("speedup_ci95_high"), ".3g", "×")


def _accuracy_line(row: dict) -> str:
    text = f"top-1 {row['accuracy_top1'] * 100:.2f}%"
    if _present(row.get("accuracy_delta")):
        low, high = row.get("accuracy_delta_ci95_low"), row.get("accuracy_delta_ci95_high")
        text += f", Δ {row['accuracy_delta'] * 100:+.2f} pp" + _ci(low * 100 if _present(low) else None, high * 100 if _present(high) else None, "+.2f", " pp")
    if _present(row.get("accuracy_samples")):
        text += f", n={int(row['accuracy_samples'])}"
    return text


def _size_line(row: dict) -> str:
    text = f"size {format_bytes(row['size_bytes'])}" if _present(row.get("size_bytes")) else "size unknown"
    ratio = row.get("size_ratio")
    compression = row.get("compression_ratio")
    if not _present(ratio) and _present(compression) and compression:
        ratio = 1 / compression
    if _present(ratio):
        text += f", {ratio:.3g}× the reference's"
    if _present(compression):
        text += f" (compression {compression:.3g}×)"
    return text


def _flag_lines(row: dict) -> list[str]:
    lines = []
    if _present(row.get("noisy")) and bool(row["noisy"]):
        lines.append("noisy timing: " + _escape(row.get("noise_reason") or "no reason recorded"))
    if _present(row.get("speedup_contradiction")):
        lines.append("contradiction: " + _escape(row["speedup_contradiction"]))
    if row.get("speedup_expected") is False or row.get("speedup_expected") is np.False_:
        lines.append("no speedup expected: " + _escape(row.get("speedup_reason") or "no reason recorded"))
    return [_wrap(line) for line in lines]


def _cell_hover(row: dict, reference: str | None) -> str:
    speedup = f"speedup 1× (the reference, {_escape(reference)})" if row["technique"] == reference else _speedup_line(row)
    lines = [f"<b>{_escape(row['technique'])}</b>", _escape(row["cell_id"]), f"batch {int(row['batch_size'])}", speedup, _accuracy_line(row), _size_line(row)]
    return "<br>".join(lines + _flag_lines(row))


def _size_hover(row: dict) -> str:
    return "<br>".join([f"<b>{_escape(row['technique'])}</b>", _escape(row["cell_id"]), _size_line(row), _accuracy_line(row)])


def _latency_hover(row: dict) -> str:
    latency = f"p50 latency {row['latency_p50_ms']:.4g} ms" + _ci(row.get("latency_p50_ci95_low_ms"), row.get("latency_p50_ci95_high_ms"), ".4g", " ms")
    lines = [
        f"<b>{_escape(row['technique'])}</b>", _escape(row["cell_id"]), f"batch {int(row['batch_size'])}", latency,
        f"per sample {row['latency_p50_ms'] / row['batch_size']:.4g} ms",
    ]
    if _present(row.get("throughput_sps")):
        lines.append(f"throughput {format_number(round(row['throughput_sps'], 1))} samples/s")
    return "<br>".join(lines + _flag_lines(row))


def _step_hover(cell_id: str, step: str, metrics: dict) -> str:
    accuracy = f"top-1 {metrics['accuracy_top1'] * 100:.2f}%" + (f", n={int(metrics['accuracy_samples'])}" if metrics.get("accuracy_samples") else "")
    return "<br>".join([f"<b>{_escape(step)}</b>", _escape(cell_id), accuracy, f"size {format_bytes(metrics['size_bytes'])}"])


def _trend_hover(row: dict) -> str:
    commit = str(row["run_commit"])[:12] if _present(row.get("run_commit")) else "no commit"
    created = row.get("run_created_at")
    run = f"run {_escape(row['run'])} ({commit}, {_escape(created) if _present(created) else 'date unknown'})"
    lines = [f"<b>{_escape(row['technique'])}</b>", _escape(row["cell_id"]), run, _speedup_line(row)]
    return "<br>".join(lines + _flag_lines(row))
