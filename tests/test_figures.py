"""The report's figures: one style per technique everywhere, readable facets and log axes, honest Pareto frontiers."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchharness.report import figures
from benchharness.report.figures import (
    accuracy_vs_size, latency_vs_batch_size, log_axis, pipeline_steps, speedup_across_runs, speedup_vs_accuracy, technique_styles,
)

REAL_RUN = Path(__file__).resolve().parent / "fixtures" / "run-small"
TECHNIQUES = ["baseline", "prune", "quantize", "distill"]
# technique: (speedup at batch 1, accuracy difference, size ratio)
EFFECTS = {"baseline": (1.0, 0.0, 1.0), "prune": (1.9, -0.004, 0.5), "quantize": (2.5, -0.02, 0.25), "distill": (1.2, 0.01, 0.6)}


def make_frame(batch_sizes=(1, 32), models=("mlp", "cnn"), devices=("cpu",)) -> pd.DataFrame:
    """A tidy frame as add_comparisons builds it: distill dominates the baseline; distill at batch 32 is noisy, quantize contradicts."""
    rows = []
    for model in models:
        for device in devices:
            for technique in TECHNIQUES:
                speedup, delta, size_ratio = EFFECTS[technique]
                for batch_size in batch_sizes:
                    reference = technique == "baseline"
                    scaled = 1.0 if reference else speedup * (1 + 0.01 * batch_size)
                    latency = 2.0 * batch_size**0.5 / scaled
                    rows.append({
                        "cell_id": f"{model}/{technique}/{device}/r0", "model": model, "technique": technique, "device": device, "host": "box",
                        "repeat": 0, "status": "ok", "batch_size": float(batch_size), "latency_p50_ms": latency,
                        "latency_p50_ci95_low_ms": latency * 0.97, "latency_p50_ci95_high_ms": latency * 1.03, "throughput_sps": batch_size / latency * 1000,
                        "speedup_p50": scaled, "speedup_ci95_low": np.nan if reference else scaled * 0.95,
                        "speedup_ci95_high": np.nan if reference else scaled * 1.05, "accuracy_top1": 0.9 + delta, "accuracy_delta": delta,
                        "accuracy_delta_ci95_low": np.nan if reference else delta - 0.01, "accuracy_delta_ci95_high": np.nan if reference else delta + 0.01,
                        "accuracy_samples": 1000.0, "size_bytes": 1e6 * size_ratio, "compression_ratio": 1 / size_ratio, "size_ratio": size_ratio,
                        "noisy": technique == "distill" and batch_size == 32,
                        "noise_reason": "other processes used 30% of a core" if technique == "distill" else None,
                        "speedup_contradiction": "rounds disagree" if technique == "quantize" else None,
                        "speedup_expected": technique != "distill", "speedup_reason": "dense float model" if technique == "distill" else None,
                    })
    rows.append({**rows[0], "cell_id": f"{models[0]}/broken/{devices[0]}/r0", "technique": "broken", "status": "failed", "speedup_p50": np.nan})
    return pd.DataFrame(rows)


def make_records(reference_accuracy=0.9, reference_size=1_000_000) -> list[dict]:
    """A reference record, a three-step pipeline and a one-step technique, for one model on one device."""
    def cell(technique, steps):
        return {"id": f"mlp/{technique}/cpu/r0", "model": "mlp", "technique": technique, "device": "cpu", "repeat": 0,
                "steps": [{"technique": step, "config": {}} for step in steps]}

    return [
        {"cell": cell("baseline", ["baseline"]), "status": "ok", "metrics": {"accuracy_top1": reference_accuracy, "size_bytes": reference_size}},
        {"cell": {**cell("baseline", ["baseline"]), "device": "cuda"}, "status": "ok", "metrics": {"accuracy_top1": 0.5, "size_bytes": 123}},
        {
            "cell": cell("prune", ["prune"]), "status": "ok", "metrics": {"accuracy_top1": 0.89, "size_bytes": 500_000},
            "steps": [{"step": "prune", "metrics": {"accuracy_top1": 0.89, "size_bytes": 500_000}}],
        },
        {
            "cell": cell("distill", ["distill", "prune", "quantize"]), "status": "ok", "metrics": {"accuracy_top1": 0.905, "size_bytes": 150_000},
            "steps": [
                {"step": "distill", "metrics": {"accuracy_top1": 0.92, "size_bytes": 1_000_000, "accuracy_samples": 1000}},
                {"step": "prune", "metrics": {"accuracy_top1": 0.91, "size_bytes": 600_000, "accuracy_samples": 1000}},
                {"step": "quantize", "metrics": {"accuracy_top1": 0.905, "size_bytes": 150_000, "accuracy_samples": 1000}},
            ],
        },
    ]


RUNS = (("quick-b", "2026-11-10T10:00:00", "bbbbbbbbbbbb"), ("quick-a", "2026-11-01T10:00:00", "aaaaaaaaaaaa"))


def make_trend(runs=RUNS) -> pd.DataFrame:
    """The same frame in several runs (given out of order), speedups growing run by run."""
    parts = []
    for name, created_at, commit in runs:
        part = make_frame().assign(run=name, run_created_at=pd.to_datetime(created_at, utc=True), run_commit=commit)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


@pytest.fixture
def styles() -> dict[str, dict]:
    return technique_styles(TECHNIQUES)


def technique_traces(figure):
    """The traces that draw a technique's data (legend proxies included)."""
    return [trace for trace in figure.data if trace.legendgroup]


def data_traces(figure):
    return [trace for trace in technique_traces(figure) if trace.x is not None and len(trace.x) and trace.x[0] is not None]


def assert_styled(figure, styles):
    """Every technique trace has its technique's colour and symbol; the legend lists each technique once, in suite order."""
    for trace in technique_traces(figure):
        style = styles[trace.legendgroup]
        assert trace.name == trace.legendgroup
        assert trace.marker.color == style["color"], (trace.name, trace.marker.color)
        symbols = trace.marker.symbol if isinstance(trace.marker.symbol, (list, tuple)) else [trace.marker.symbol]
        assert {symbol.removesuffix("-open") for symbol in symbols} == {style["symbol"]}
        if "lines" in (trace.mode or ""):
            assert trace.line.color == style["color"]
    legend = [trace.name for trace in figure.data if trace.showlegend is not False]
    assert legend == [name for name in styles if name in legend]
    assert sorted(legend) == sorted({trace.legendgroup for trace in technique_traces(figure)})
    assert all(trace.showlegend is False for trace in figure.data if not trace.legendgroup)


def dominated(point, others) -> bool:
    x, y = point
    return any(ox >= x and oy >= y and (ox, oy) != (x, y) for ox, oy in others)


def test_technique_styles_keep_the_order_and_stay_distinct_for_thirty_techniques():
    names = ["baseline"] + [f"technique-{i}" for i in range(29)]
    styles = technique_styles(names)
    assert list(styles) == names
    assert styles["baseline"] == {"color": figures.PALETTE[0], "symbol": figures.SYMBOLS[0]}
    assert len({(style["color"], style["symbol"]) for style in styles.values()}) == 30
    assert technique_styles(["a", "b", "a"]) == technique_styles(["a", "b"])


def test_every_figure_draws_a_technique_in_the_same_colour(styles):
    frame = make_frame(batch_sizes=(1, 8, 32))
    built = [
        speedup_vs_accuracy(frame, styles, "baseline", 1.0), accuracy_vs_size(frame, styles), latency_vs_batch_size(frame, styles),
        pipeline_steps(make_records(), styles, "baseline"), speedup_across_runs(make_trend(), styles),
    ]
    colours: dict[str, set[str]] = {}
    for figure in built:
        assert figure is not None
        assert_styled(figure, styles)
        assert figure.layout.template.layout.paper_bgcolor == "white"  # plotly_white
        assert figure.layout.width is None
        assert "better" in figure.layout.title.text
        for trace in technique_traces(figure):
            colours.setdefault(trace.legendgroup, set()).add(trace.marker.color)
        figure.to_html(include_plotlyjs=False)
    assert {name: colour for name, (colour,) in colours.items()} == {name: styles[name]["color"] for name in TECHNIQUES}


def test_speedup_vs_accuracy_has_a_facet_per_batch_size_and_group_each_with_the_budget_band(styles):
    frame = make_frame(batch_sizes=(1, 32), models=("mlp", "cnn"))
    figure = speedup_vs_accuracy(frame, styles, "baseline", 1.5)
    titles = [annotation.text for annotation in figure.layout.annotations]
    assert titles == ["mlp on cpu · batch 1", "mlp on cpu · batch 32", "cnn on cpu · batch 1", "cnn on cpu · batch 32"]
    axes = {trace.xaxis for trace in data_traces(figure)}
    assert len(axes) == 4
    bands = [shape for shape in figure.layout.shapes if shape.type == "rect"]
    assert sorted(shape.xref for shape in bands) == sorted(axes)
    assert all(shape.x0 == -1.5 and shape.x1 >= 2.0 and shape.yref.endswith("domain") for shape in bands)
    lines = [shape for shape in figure.layout.shapes if shape.type == "line"]
    assert len(lines) == 4 and all(shape.y0 == shape.y1 == 1 and shape.line.dash == "dot" for shape in lines)
    assert figure.layout.yaxis.type == "log"
    assert figure.layout.height > speedup_vs_accuracy(make_frame(models=("mlp",)), styles, "baseline", 1.5).layout.height


def test_speedup_vs_accuracy_marks_the_reference_and_opens_doubtful_points(styles):
    figure = speedup_vs_accuracy(make_frame(), styles, "baseline", 1.0)
    reference = [trace for trace in data_traces(figure) if trace.name == "baseline"]
    assert all(list(trace.x) == [0.0] and list(trace.y) == [1.0] and trace.marker.size > figures.MARKER_SIZE for trace in reference)
    for trace in data_traces(figure):
        symbols = set(trace.marker.symbol)
        batch_32 = trace.xaxis in {"x2", "x4"}
        if trace.name == "quantize" or (trace.name == "distill" and batch_32):
            assert symbols == {styles[trace.name]["symbol"] + "-open"}
        else:
            assert symbols == {styles[trace.name]["symbol"]}


def test_speedup_vs_accuracy_staircase_passes_only_through_non_dominated_points(styles):
    figure = speedup_vs_accuracy(make_frame(), styles, "baseline", 1.0)
    frontiers = [trace for trace in figure.data if trace.name == figures.FRONTIER_NAME]
    assert len(frontiers) == 4
    for frontier in frontiers:
        assert frontier.line.shape in ("hv", "vh")
        points = [(x, y) for trace in data_traces(figure) if trace.xaxis == frontier.xaxis for x, y in zip(trace.x, trace.y)]
        on_front = list(zip(frontier.x, frontier.y))
        assert sorted(on_front) == sorted(point for point in set(points) if not dominated(point, points))
        assert (0.0, 1.0) not in on_front  # distill beats the baseline on both axes
        assert list(frontier.x) == sorted(frontier.x)


def test_speedup_vs_accuracy_hover_shows_the_cis_size_and_flags(styles):
    figure = speedup_vs_accuracy(make_frame(), styles, "baseline", 1.0)
    prune = next(trace for trace in data_traces(figure) if trace.name == "prune" and trace.xaxis == "x")
    text = prune.customdata[0]
    speedup = 1.9 * 1.01
    assert f"speedup {speedup:.3g}× (95% CI {speedup * 0.95:.3g} to {speedup * 1.05:.3g}×)" in text
    assert "Δ -0.40 pp (95% CI -1.40 to +0.60 pp), n=1000" in text
    assert "size 500 kB, 0.5× the reference's (compression 2×)" in text
    assert "mlp/prune/cpu/r0" in text
    distill = next(trace for trace in data_traces(figure) if trace.name == "distill" and trace.xaxis == "x2")
    assert "noisy timing: other processes used 30% of a core" in distill.customdata[0]
    assert "no speedup expected: dense float model" in distill.customdata[0]
    quantize = next(trace for trace in data_traces(figure) if trace.name == "quantize")
    assert "contradiction: rounds disagree" in quantize.customdata[0]
    assert prune.error_y.array[0] == pytest.approx(speedup * 0.05)
    assert prune.error_x.arrayminus[0] == pytest.approx(1.0)


def test_speedup_vs_accuracy_works_without_the_accuracy_ci_and_size_ratio_columns(styles):
    frame = make_frame().drop(columns=["accuracy_delta_ci95_low", "accuracy_delta_ci95_high", "size_ratio"])
    figure = speedup_vs_accuracy(frame, styles, "baseline", 1.0)
    prune = next(trace for trace in data_traces(figure) if trace.name == "prune")
    assert prune.error_x.array is None
    assert "0.5× the reference's" in prune.customdata[0]
    assert speedup_vs_accuracy(frame[frame["status"] != "ok"], styles, "baseline", 1.0) is None


def test_speedup_vs_accuracy_names_the_host_when_cells_were_timed_on_several(styles):
    frame = make_frame(models=("mlp",))
    frame.loc[frame["technique"] == "prune", "host"] = "other"
    titles = [annotation.text for annotation in speedup_vs_accuracy(frame, styles, "baseline", 1.0).layout.annotations]
    assert "mlp on cpu (box) · batch 1" in titles and "mlp on cpu (other) · batch 32" in titles


def test_accuracy_vs_size_has_one_point_per_cell_a_facet_per_model_and_full_number_ticks(styles):
    frame = make_frame(batch_sizes=(1, 8, 32))
    figure = accuracy_vs_size(frame, styles)
    assert sorted(annotation.text for annotation in figure.layout.annotations) == ["cnn", "mlp"]
    assert sum(len(trace.x) for trace in data_traces(figure)) == 8
    for axis in (figure.layout.xaxis, figure.layout.xaxis2):
        assert axis.type == "log" and axis.tickmode == "array" and axis.dtick is None
        assert list(axis.ticktext) == [figures.format_bytes(value) for value in axis.tickvals]
        assert not any(re.fullmatch(r"\d", label) for label in axis.ticktext)
        assert len(axis.tickvals) >= 3 and all(axis.range[0] <= math.log10(value) <= axis.range[1] for value in axis.tickvals)
    for frontier in (trace for trace in figure.data if trace.name == figures.FRONTIER_NAME):
        assert frontier.line.shape == "hv"
        points = [(-x, y) for trace in data_traces(figure) if trace.xaxis == frontier.xaxis for x, y in zip(trace.x, trace.y)]
        assert sorted((-x, y) for x, y in zip(frontier.x, frontier.y)) == sorted(p for p in set(points) if not dominated(p, points))


def test_log_axis_labels_full_numbers_at_one_two_five_steps():
    axis = log_axis([0.3, 0.5, 4.0], figures.format_times)
    assert axis["type"] == "log" and axis["tickmode"] == "array" and "dtick" not in axis
    assert {0.5, 1.0, 2.0} <= set(axis["tickvals"])
    assert axis["ticktext"] == [f"{value:g}×" for value in axis["tickvals"]]
    assert all(axis["range"][0] <= math.log10(value) <= axis["range"][1] for value in axis["tickvals"])
    assert axis["range"][0] < math.log10(0.3) and axis["range"][1] > math.log10(4.0)
    one_decade = log_axis([1.0, 30.0])
    assert one_decade["tickvals"] == [1.0, 2.0, 5.0, 10.0, 20.0] and one_decade["ticktext"] == ["1", "2", "5", "10", "20"]
    wide = log_axis([0.001, 5000])
    assert wide["tickvals"] == [0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0]
    assert wide["ticktext"][-2:] == ["1k", "10k"]
    narrow = log_axis([1.02, 1.08])
    assert len(narrow["tickvals"]) >= 3 and all(float(label) == value for label, value in zip(narrow["ticktext"], narrow["tickvals"]))
    assert log_axis([8, 32, 128], ticks=[8, 32, 128])["ticktext"] == ["8", "32", "128"]
    assert log_axis([float("nan"), 0]) == {"type": "log"}


def test_latency_vs_batch_size_needs_three_batch_sizes(styles):
    assert latency_vs_batch_size(make_frame(batch_sizes=(1, 32)), styles) is None
    figure = latency_vs_batch_size(make_frame(batch_sizes=(1, 8, 32), devices=("cpu", "cuda")), styles)
    lines = data_traces(figure)
    assert len(lines) == 2 * 2 * 2 * len(TECHNIQUES)  # two models, two devices, latency and throughput
    assert all(list(trace.x) == [1.0, 8.0, 32.0] for trace in lines)
    assert {trace.line.dash for trace in lines} == {"solid", "dot"}
    assert figure.layout.xaxis.type == figure.layout.yaxis.type == "log"
    assert list(figure.layout.xaxis.ticktext) == ["1", "8", "32"]
    assert figure.layout.yaxis.title.text.startswith("p50 latency per sample")
    assert "throughput" in figure.layout.yaxis3.title.text
    baseline = next(trace for trace in lines if trace.name == "baseline" and trace.yaxis == "y")
    assert list(baseline.y) == pytest.approx([2.0, 2.0 * 8**0.5 / 8, 2.0 * 32**0.5 / 32])


def test_pipeline_steps_start_at_the_reference_and_draw_an_arrow_per_step(styles):
    figure = pipeline_steps(make_records(), styles, "baseline")
    (pipeline,) = data_traces(figure)
    assert pipeline.name == "distill"
    assert (pipeline.x[0], pipeline.y[0]) == (1_000_000, 90.0)
    assert list(pipeline.text) == ["start (baseline)", "distill", "prune", "quantize"]
    arrows = [annotation for annotation in figure.layout.annotations if annotation.showarrow]
    assert len(arrows) == 3
    assert [(arrow.ax, arrow.x) for arrow in arrows] == [(6.0, 6.0), (6.0, math.log10(600_000)), (math.log10(600_000), math.log10(150_000))]
    assert all(arrow.arrowhead and arrow.arrowcolor == styles["distill"]["color"] for arrow in arrows)
    assert figure.layout.xaxis.type == "log" and figure.layout.xaxis.tickmode == "array"
    without_reference = pipeline_steps([record for record in make_records() if record["cell"]["technique"] != "baseline"], styles, "baseline")
    assert len([annotation for annotation in without_reference.layout.annotations if annotation.showarrow]) == 2
    assert pipeline_steps(make_records()[:3], styles, "baseline") is None


def test_speedup_across_runs_orders_runs_by_creation_and_needs_two(styles):
    assert speedup_across_runs(make_trend(runs=(("only", "2026-11-01", "abc"),)), styles) is None
    figure = speedup_across_runs(make_trend(runs=(("undated", None, None), *RUNS)), styles)
    prune = next(trace for trace in data_traces(figure) if trace.name == "prune")
    assert list(prune.x) == ["quick-a<br>aaaaaaaa", "quick-b<br>bbbbbbbb", "undated<br>no commit"]
    assert "run undated (no commit, date unknown)" in prune.customdata[2][0]
    assert figure.layout.xaxis.type == "category" and figure.layout.yaxis.type == "log"
    titles = {annotation.text for annotation in figure.layout.annotations}
    assert {"batch 1", "batch 32", "mlp on cpu", "cnn on cpu"} <= titles
    assert "95% CI" in prune.customdata[0][0]
    assert len({trace.xaxis for trace in data_traces(figure)}) == 4


def test_figures_of_a_real_run():
    from benchharness.report.frame import add_comparisons, load_run, tidy_frame

    run = load_run(REAL_RUN)
    frame = add_comparisons(tidy_frame(run.records), run.reference)
    styles = technique_styles(list(dict.fromkeys(frame["technique"])))
    built = {
        "speedup": speedup_vs_accuracy(frame, styles, run.reference, 1.0), "size": accuracy_vs_size(frame, styles),
        "pipeline": pipeline_steps(run.records, styles, run.reference),
    }
    assert latency_vs_batch_size(frame, styles) is None  # the fixture times two batch sizes
    for figure in built.values():
        assert_styled(figure, styles)
        figure.to_html(include_plotlyjs=False)
    batch_sizes = sorted(frame.loc[frame["status"] == "ok", "batch_size"].dropna().unique())
    assert len({trace.xaxis for trace in data_traces(built["speedup"])}) == len(batch_sizes) * frame.loc[frame["status"] == "ok", "model"].nunique()
    starts = {(trace.x[0], trace.y[0]) for trace in data_traces(built["pipeline"])}
    pipelines = [record for record in run.records if record["status"] == "ok" and len(record["cell"]["steps"]) > 1]
    assert len(starts) == len(pipelines) >= 1
    for record in pipelines:
        baseline = next(other for other in run.records if other["cell"]["id"] == f"{record['cell']['model']}/baseline/cpu/r0")
        assert (baseline["metrics"]["size_bytes"], baseline["metrics"]["accuracy_top1"] * 100) in starts
