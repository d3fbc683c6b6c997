"""The report's training sections: learning curves per recipe, and the recipes compared with the reference recipe."""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from benchharness.report import figures
from benchharness.report.sections import Report
from benchharness.report.tables import MISSING, Column, html_table, is_missing, significant

FIRST_TRAININGS = ("train", "baseline")


def curve_of(record: dict[str, Any]) -> dict[str, Any] | None:
    """The cell's main learning curve: its model's training from scratch (``train`` or ``baseline``), else its first one with epochs."""
    curves = [curve for curve in record.get("curves") or [] if curve.get("epochs")]
    return next((curve for curve in curves if curve.get("label") in FIRST_TRAININGS), curves[0] if curves else None)


def curve_frame(records: list[dict[str, Any]], reference: str | None) -> pd.DataFrame:
    """A row per epoch of the reference pipeline's cells' main curves: model, recipe, device, epoch, train_loss, test_accuracy."""
    rows = []
    for record in records:
        cell = record.get("cell") or {}
        curve = curve_of(record) if record.get("status") == "ok" and cell.get("technique") == reference else None
        for point in (curve or {}).get("epochs", []):
            rows.append({"model": cell.get("model"), "recipe": cell.get("recipe") or curve["label"], "device": cell.get("device"), **point})
    return pd.DataFrame(rows, columns=["model", "recipe", "device", "epoch", "train_loss", "test_accuracy"])


def learning_curves(curves: pd.DataFrame) -> go.Figure | None:
    """Training loss (log) and test accuracy per epoch: a row per model (and device), a line per recipe; None with fewer than two epochs."""
    if curves.empty or curves["epoch"].max() < 2:
        return None
    curves = curves.assign(facet=curves["model"] + " on " + curves["device"])
    facets = list(dict.fromkeys(curves["facet"]))
    styles = figures.technique_styles(list(dict.fromkeys(curves["recipe"])))
    titles = [f"{facet}: {what}" for facet in facets for what in ("training loss", "test top-1 %")]
    figure = make_subplots(rows=len(facets), cols=2, subplot_titles=titles, horizontal_spacing=0.08, vertical_spacing=0.25 / max(len(facets), 1))
    for row, facet in enumerate(facets, start=1):
        for recipe, points in curves[curves["facet"] == facet].groupby("recipe", sort=False):
            style = styles[recipe]
            common = dict(mode="lines+markers", name=recipe, legendgroup=recipe, line=dict(color=style["color"]), marker=dict(color=style["color"], symbol=style["symbol"], size=6))
            figure.add_trace(go.Scatter(x=points["epoch"], y=points["train_loss"], hovertemplate=f"{recipe}<br>epoch %{{x}}<br>loss %{{y:.3g}}<extra></extra>", **common), row=row, col=1)
            accuracy = pd.to_numeric(points["test_accuracy"], errors="coerce") * 100
            if accuracy.notna().any():
                figure.add_trace(go.Scatter(x=points["epoch"], y=accuracy, hovertemplate=f"{recipe}<br>epoch %{{x}}<br>top-1 %{{y:.3g}}%<extra></extra>", **common), row=row, col=2)
    figure.update_yaxes(type="log", col=1)
    figure.update_xaxes(title_text="epoch")
    figure = figures._finish(figure, styles, "Learning curves: lower loss and higher accuracy sooner is better", "one line per training recipe, the reference pipeline's training from scratch", figures._grid_height(len(facets)), lines=True)
    figure.update_layout(legend_title_text="recipe")
    return figure


def render_learning_curves(frame: pd.DataFrame, report: Report) -> Any:
    """The learning-curves figure, when cells recorded curves of two or more epochs."""
    return learning_curves(curve_frame(report.run.records, report.reference))


def recipe_frame(report: Report) -> pd.DataFrame:
    """A row per model, device, pipeline and recipe: accuracy, its difference from the reference recipe, train_s, status and reason."""
    cells = report.frame.drop_duplicates("cell_id")
    cells = cells[cells["recipe"].notna()]
    rows = []
    reference_recipe = report.recipes[0] if report.recipes else None
    for (model, device, technique), group in cells.groupby(["model", "device", "technique"], sort=False):
        reference_rows = group[(group["recipe"] == reference_recipe) & (group["status"] == "ok")]
        reference_accuracy = reference_rows["accuracy_top1"].iloc[0] if not reference_rows.empty else None
        for _, cell in group.iterrows():
            accuracy = cell.get("accuracy_top1")
            delta = accuracy - reference_accuracy if cell["status"] == "ok" and not is_missing(accuracy) and reference_accuracy is not None else None
            rows.append({
                "model": model, "device": device, "technique": technique, "recipe": cell["recipe"], "status": cell["status"],
                "reason": cell.get("error_message") if cell["status"] != "ok" else None, "accuracy_top1": accuracy if cell["status"] == "ok" else None,
                "accuracy_vs_reference": delta, "train_s": cell.get("train_s"),
            })
    return pd.DataFrame(rows)


def render_recipes(frame: pd.DataFrame, report: Report) -> str | None:
    """Every recipe's accuracy and training time beside the reference recipe's; a diverged cell says why."""
    if not report.recipes:
        return None
    table = recipe_frame(report)
    if table.empty:
        return None
    percent = lambda value: MISSING if is_missing(value) else significant(value * 100)  # noqa: E731
    columns = [
        Column("model", "model", text=True, sticky=True), Column("device", "device", text=True), Column("pipeline", "technique", text=True),
        Column("recipe", "recipe", text=True),
        Column("top-1 %", "accuracy_top1", html=lambda row: percent(row.get("accuracy_top1"))),
        Column(f"Δ vs {report.recipes[0]} pp", "accuracy_vs_reference", html=lambda row: MISSING if is_missing(row.get("accuracy_vs_reference")) else f"{row['accuracy_vs_reference'] * 100:+.2f}",
               title="top-1 accuracy minus the reference recipe's (the first [[recipes]] entry), in percentage points"),
        Column("train s", "train_s", html=lambda row: significant(row.get("train_s"))),
        Column("status", "status", text=True, wrap=True, html=lambda row: row["status"] + (f": {row['reason']}" if not is_missing(row.get("reason")) else "")),
    ]
    note = f"<p class='note'>The reference recipe is <b>{report.recipes[0]}</b>, the suite's first; a recipe whose loss became NaN is <i>failed</i> with the epoch it diverged in.</p>"
    return note + html_table(table, columns, "recipes")
