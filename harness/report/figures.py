"""plotly figures of a run's tidy frame."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from benchharness.report.frame import pareto_front

SYMBOLS = ["circle", "square", "diamond", "triangle-up", "x", "cross", "star", "hexagon"]
LAYOUT = dict(template="plotly_white", height=460, margin=dict(l=60, r=20, t=50, b=50), legend=dict(font=dict(size=11)))


def _markers(frame: pd.DataFrame) -> tuple[dict[str, str], dict[str, str]]:
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]
    colours = {name: palette[i % len(palette)] for i, name in enumerate(sorted(frame["technique"].unique()))}
    symbols = {name: SYMBOLS[i % len(SYMBOLS)] for i, name in enumerate(sorted(frame["model"].unique()))}
    return colours, symbols


def _scatter(frame: pd.DataFrame, x: str, title: str, x_title: str, log_x: bool, frontier: bool) -> go.Figure:
    colours, symbols = _markers(frame)
    figure = go.Figure()
    for (technique, model), group in frame.groupby(["technique", "model"]):
        figure.add_trace(
            go.Scatter(
                x=group[x], y=group["accuracy_top1"] * 100, mode="markers", name=f"{technique} / {model}",
                marker=dict(color=colours[technique], symbol=symbols[model], size=11, line=dict(width=1, color="#333")),
                text=group["cell_id"], hovertemplate="%{text}<br>" + x_title + " %{x:.4g}<br>top-1 %{y:.2f}%<extra></extra>",
            )
        )
    if frontier and len(frame) > 1:
        points = list(zip(frame[x], frame["accuracy_top1"]))
        front = frame.iloc[pareto_front(points)]
        figure.add_trace(go.Scatter(x=front[x], y=front["accuracy_top1"] * 100, mode="lines", name="Pareto frontier", line=dict(color="#555", dash="dash"), hoverinfo="skip"))
    figure.update_layout(title=title, xaxis_title=x_title, yaxis_title="top-1 accuracy (%)", **LAYOUT)
    if log_x:
        figure.update_xaxes(type="log")
    return figure


def accuracy_latency(frame: pd.DataFrame, device: str, batch_size: int) -> go.Figure:
    """Accuracy vs median latency on one device at one batch size, with the Pareto frontier."""
    return _scatter(frame, "latency_p50_ms", f"Accuracy vs latency on {device} (batch {batch_size}); up and left is better", "p50 latency (ms)", True, True)


def accuracy_size(frame: pd.DataFrame) -> go.Figure:
    """Accuracy vs serialized size."""
    return _scatter(frame.assign(size_mb=frame["size_bytes"] / 1e6), "size_mb", "Accuracy vs model size", "serialized size (MB)", True, True)


def latency_batch_size(frame: pd.DataFrame, model: str) -> go.Figure:
    """p50 latency per sample against batch size, one line per technique and device."""
    colours, _ = _markers(frame)
    figure = go.Figure()
    for (technique, device), group in frame.groupby(["technique", "device"]):
        group = group.sort_values("batch_size")
        figure.add_trace(
            go.Scatter(
                x=group["batch_size"], y=group["latency_p50_ms"] / group["batch_size"], mode="lines+markers", name=f"{technique} ({device})",
                line=dict(color=colours[technique], dash="solid" if device == sorted(frame["device"].unique())[0] else "dot"),
            )
        )
    figure.update_layout(title=f"{model}: latency per sample vs batch size", xaxis_title="batch size", yaxis_title="p50 latency per sample (ms)", **LAYOUT)
    figure.update_xaxes(type="log")
    figure.update_yaxes(type="log")
    return figure


def pipeline_steps(records: list[dict]) -> go.Figure | None:
    """Accuracy and size after every step of multi-step pipelines, or None when there are none."""
    pipelines = [record for record in records if record["status"] == "ok" and len(record["cell"]["steps"]) > 1]
    if not pipelines:
        return None
    figure = go.Figure()
    for record in pipelines:
        steps = record["steps"]
        labels = [step["step"] for step in steps]
        hover = [
            f"{label}<br>top-1 {step['metrics']['accuracy_top1'] * 100:.2f}%<br>size {step['metrics']['size_bytes'] / 1e6:.3f} MB"
            for label, step in zip(labels, steps)
        ]
        figure.add_trace(
            go.Scatter(
                x=[step["metrics"]["size_bytes"] / 1e6 for step in steps], y=[step["metrics"]["accuracy_top1"] * 100 for step in steps],
                mode="lines+markers+text", text=labels, textposition="top center", hovertext=hover, hoverinfo="text", name=record["cell"]["id"],
            )
        )
    figure.update_layout(title="Pipelines: accuracy and size after every step (read along each line)", xaxis_title="serialized size (MB)", yaxis_title="top-1 accuracy (%)", **LAYOUT)
    figure.update_xaxes(type="log")
    return figure
