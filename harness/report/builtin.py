"""The report's built-in sections; ``benchharness.plugins.report_sections`` registers them like any plugin's."""

from __future__ import annotations

import html
from typing import Any

import pandas as pd

from benchharness.report import figures, scaling, training
from benchharness.report.answers import Answer, answers
from benchharness.report.sections import Report
from benchharness.report.tables import (
    MISSING, Column, bytes_text, cell_anchor, count_text, html_table, interval_text, is_missing, is_true, significant, visible_columns,
)

EXPECTED_RULE = (
    "<b>Speedup expected?</b> is decided from the model, not from the timing: it is <i>yes</i> when at least 10% of the reference's "
    "Linear/Conv FLOPs were removed or run in a faster representation (int8 kernels, half precision, autocast). Amdahl's law then bounds "
    "the speedup; a measured speedup above that bound is marked as contradicting its representation. See {link}."
)


def docs_link(page: str, anchor: str) -> str:
    """A link to a docs page where the package declares a documentation URL, else the page's path in the source tree."""
    from importlib.metadata import PackageNotFoundError, metadata

    try:
        urls = metadata("benchharness").get_all("Project-URL") or []
    except PackageNotFoundError:
        urls = []
    base = next((url.split(",", 1)[1].strip() for url in urls if url.lower().startswith("documentation,")), None)
    label = f"docs/{page}, “{anchor.replace('-', ' ')}”"
    return f"<a href='{html.escape(base.rstrip('/'), quote=True)}/{page}#{anchor}'>{label}</a>" if base else f"<code>{label}</code> in the benchharness source"


def _escape(value: Any) -> str:
    return html.escape(str(value))


def speedup_html(row: Any, reference: str | None, flags: bool = True) -> str:
    """The speedup with its 95% CI (the reference shows its A/A control), and flags for doubtful timings."""
    if row["technique"] == reference:
        aa = row.get("aa_speedup")
        text = "reference" + (f"<br><span class='ci'>A/A {interval_text(aa, row.get('aa_speedup_ci95_low'), row.get('aa_speedup_ci95_high'))}</span>" if not is_missing(aa) else "")
    elif is_missing(row.get("speedup_p50")):
        text = MISSING
    else:
        low, high = row.get("speedup_ci95_low"), row.get("speedup_ci95_high")
        css = "good" if not is_missing(low) and low > 1 else "bad" if not is_missing(high) and high < 1 else ""
        text = f"<span class='{css}'>{interval_text(row['speedup_p50'], low, high, unit='x')}</span>"
    if flags and is_true(row.get("noisy")):
        text += f"<span class='flag' title='{html.escape(str(row.get('noise_reason')), quote=True)}'>noisy</span>"
    if flags and isinstance(row.get("speedup_contradiction"), str):
        text += f"<span class='flag' title='{html.escape(row['speedup_contradiction'], quote=True)}'>contradicts its representation</span>"
    return text


def accuracy_delta_html(row: Any) -> str:
    """The accuracy difference in points with its 95% CI; coloured only when the CI excludes zero."""
    delta = row.get("accuracy_delta")
    if is_missing(delta):
        return MISSING
    low, high = row.get("accuracy_delta_ci95_low"), row.get("accuracy_delta_ci95_high")
    css = "good" if not is_missing(low) and low > 0 else "bad" if not is_missing(high) and high < 0 else ""
    return f"<span class='{css}'>{interval_text(delta, low, high, scale=100, signed=True)}</span>"


def expected_html(row: Any) -> str:
    """yes/no, with the reason one click away."""
    expected = row.get("speedup_expected")
    if is_missing(expected):
        return MISSING
    return f"<details class='reason'><summary>{'yes' if expected else 'no'}</summary><div>{_escape(row.get('speedup_reason'))}</div></details>"


def ratio_text(value: Any) -> str:
    """``0.28x``."""
    return "-" if is_missing(value) else f"{significant(value)}x"


def result_columns(report: Report, several_repeats: bool) -> list[Column]:
    """The columns of the results tables."""
    reference = report.reference
    ok = report.ok
    samples = report.distinct("accuracy_samples")
    n = f", n={int(samples[0])}" if len(samples) == 1 else ""
    peak_method = next((value for value in ok.get("inference_peak_method", pd.Series(dtype=object)).dropna().unique()), None)
    largest = int(ok["batch_size"].max()) if ok["batch_size"].notna().any() else None
    columns = [
        Column("technique", "technique", text=True, sticky=True, html=lambda row: f"<span title='{html.escape(str(row.get('steps')), quote=True)}'>{_escape(row['technique'])}</span>"),
        Column("batch", "batch_size", html=lambda row: str(int(row["batch_size"])) if not is_missing(row["batch_size"]) else MISSING),
    ]
    if len(report.thread_counts) > 1:
        columns.append(Column("threads", "threads", html=lambda row: str(int(row["threads"])) if not is_missing(row.get("threads")) else MISSING))
    if several_repeats:
        columns.append(Column("repeat", "repeat"))
    columns += [
        Column("top-1 %", "accuracy_top1", html=lambda row: significant(row["accuracy_top1"] * 100) if not is_missing(row["accuracy_top1"]) else MISSING),
        Column("Δ top-1 pp (CI)", "accuracy_delta", html=accuracy_delta_html,
               title=f"top-1 accuracy minus the {reference}'s, in percentage points, with its 95% CI paired on the same test images (Agresti-Min){n}"),
        Column("p50 / p99 ms", "latency_p50_ms", html=lambda row: f"{significant(row.get('latency_p50_ms'))} <span class='ci'>/ {significant(row.get('latency_p99_ms'))}</span>",
               title="median and 99th percentile latency of one batch, pooled over the rounds"),
        Column("speedup (95% CI)", "speedup_p50", html=lambda row: speedup_html(row, reference),
               title=f"p50 latency of the {reference} over this cell's, from paired interleaved rounds; the reference shows its A/A control (the noise floor)"),
        Column("size (ratio)", "size_bytes", html=lambda row: f"{bytes_text(row.get('size_bytes'))} <span class='ci'>({ratio_text(row.get('size_ratio'))})</span>",
               title=f"serialized state dict, and its size over the {reference}'s"),
        Column("zipped", "size_compressed_bytes", html=lambda row: bytes_text(row.get("size_compressed_bytes")),
               title="serialized size after zip compression: what stored zeros (magnitude pruning) save on disk"),
        Column("bits/weight", "bits_per_weight", html=lambda row: significant(row.get("bits_per_weight")),
               title="bits per weight as a deployable format stores them (32 for fp32, about 8 for int8, 1-2 for binary/ternary layers, packed)"),
        Column("zeros", "sparsity", html=lambda row: f"{row['sparsity']:.0%}" if not is_missing(row.get("sparsity")) else MISSING,
               title="sparsity: the share of weights that are zero (1 - non-zero / total)"),
        Column("FLOPs/sample", "flops", html=lambda row: count_text(row.get("flops"))),
        Column("tensor peak", "inference_peak_bytes", html=lambda row: bytes_text(row.get("inference_peak_bytes")),
               title=f"bytes of tensors alive at the peak of one inference at batch {largest}: weights, input and activations ({peak_method or 'method not recorded'}); not the process's memory"),
        Column("J/sample", "energy_j_per_sample", html=lambda row: significant(row.get("energy_j_per_sample")), title="energy per sample from the device's counters"),
        Column("thread speedup", "thread_speedup_p50", html=lambda row: ratio_text(row.get("thread_speedup_p50")),
               title="p50 at the fewest threads over p50 at this row's threads, from paired rounds (multi-thread speedup)"),
        Column("distill retention", "distill_retention", html=lambda row: f"{significant(row['distill_retention'] * 100)}%" if not is_missing(row.get("distill_retention")) else MISSING,
               title="the distilled student's accuracy over its teacher's"),
        Column("compile s", "compile_s", html=lambda row: significant(row.get("compile_s")),
               title="torch.compile: seconds of the first compiled call beyond an eager one, in the building process (not in the latency)"),
        Column("graph breaks", "compile_graph_breaks", html=lambda row: count_text(row.get("compile_graph_breaks")),
               title="torch.compile: graph breaks torch._dynamo.explain found (their reasons are in the record's notes)"),
        Column("recompiled", "recompilations", html=lambda row: significant(row.get("recompilations")),
               title="graphs compiled while the cell was timed, per round: their compile time is in the latency"),
        Column("speedup expected?", "speedup_expected", html=expected_html, text=True, sort=lambda row: row.get("speedup_expected")),
    ]
    informative = (("bits_per_weight", _varies(ok, "bits_per_weight")), ("sparsity", _above(ok, "sparsity", 0.005)), ("recompilations", _above(ok, "recompilations", 0)))
    uninformative = {key for key, shown in informative if not shown}
    return visible_columns([column for column in columns if column.key not in uninformative], ok)


def _varies(frame: pd.DataFrame, column: str) -> bool:
    """Whether ``column`` holds more than one value (bits per weight of all-fp32 runs say nothing)."""
    return column in frame and pd.to_numeric(frame[column], errors="coerce").nunique() > 1


def _above(frame: pd.DataFrame, column: str, threshold: float) -> bool:
    """Whether some value of ``column`` exceeds ``threshold``."""
    return column in frame and bool((pd.to_numeric(frame[column], errors="coerce") > threshold).any())


def render_results(frame: pd.DataFrame, report: Report) -> str | None:
    """One table per model and device: every technique at every batch size."""
    ok = report.ok
    if ok.empty:
        return "<p>No cell has finished successfully yet.</p>"
    several_repeats = ok["repeat"].nunique() > 1
    columns = result_columns(report, several_repeats)
    parts = ["<p class='note'>Click a header to sort, type to filter. Hover a header for its definition; open <i>yes</i>/<i>no</i> for why a speedup is or is not expected.</p>"]
    order = {name: index for index, name in enumerate(report.techniques)}
    for key, rows in ok.groupby(report.group_keys, sort=False):
        rows = rows.assign(_order=rows["technique"].map(order).fillna(len(order))).sort_values(["threads", "batch_size", "_order", "repeat"])
        parts.append(f"<h3>{_escape(report.group_title(key))}</h3>")
        parts.append(html_table(
            rows, columns, "results", row_id=lambda row: cell_anchor(row["cell_id"], row["batch_size"]),
            row_class=lambda row: "reference" if row["technique"] == report.reference else "",
        ))
    return "".join(parts)


def _answer_row(answer: Answer, report: Report, budget: float) -> dict[str, Any]:
    reference = answer.reference
    choice = answer.choice
    shown = choice if choice is not None else reference
    link = f"<a href='#{cell_anchor(shown['cell_id'], answer.batch_size)}'>{_escape(shown['technique'])}</a>"
    if answer.verdict == "ship":
        verdict = f"<b>{link}</b>"
    elif answer.verdict == "keep":
        verdict = f"<b><a href='#{cell_anchor(reference['cell_id'], answer.batch_size)}'>{_escape(reference['technique'])}</a></b> <span class='muted'>(nothing within the budget is measurably faster; fastest: {link})</span>"
    else:
        verdict = f"<b><a href='#{cell_anchor(reference['cell_id'], answer.batch_size)}'>{_escape(reference['technique'])}</a></b> <span class='muted'>(no technique stays within {budget:g} pp)</span>"
    smallest = answer.smallest
    return {
        "group": report.group_title(answer.group), "batch_size": answer.batch_size, "verdict": verdict, "verdict_sort": str(shown["technique"]),
        "speedup": speedup_html(choice, report.reference, flags=False) if choice is not None else MISSING,
        "speedup_sort": choice["speedup_p50"] if choice is not None else None,
        "delta": accuracy_delta_html(choice) if choice is not None else MISSING,
        "delta_sort": choice["accuracy_delta"] if choice is not None else None,
        "size": ratio_text(choice.get("size_ratio")) if choice is not None else MISSING,
        "size_sort": choice.get("size_ratio") if choice is not None else None,
        "smallest": f"{_escape(smallest['technique'])} ({ratio_text(smallest.get('size_ratio'))})" if smallest is not None else MISSING,
        "flags": "".join(f"<span class='flag' title='{html.escape(detail, quote=True)}'>{_escape(label)}</span>" for label, detail in answer.flags) or "<span class='muted'>none</span>",
        "technique": shown["technique"],
    }


def render_answers(frame: pd.DataFrame, report: Report) -> str:
    """Per model, device and batch size: the technique to ship within the accuracy budget, with its speedup, accuracy and size."""
    budget = report.max_accuracy_drop
    found = answers(report.ok, report.reference, budget, report.group_keys)
    if not found:
        return f"<p>No answer yet: no group has both a finished {_escape(report.reference)} cell and another technique.</p>"
    ship = sum(answer.verdict == "ship" for answer in found)
    n = report.distinct("accuracy_samples")
    lead = (
        f"<p class='lead'>The fastest technique whose top-1 accuracy is at most <b>{budget:g} pp</b> below the <b>{_escape(report.reference)}</b>'s "
        f"(<code>[report] max_accuracy_drop</code>), for each model, device and batch size. {ship} of {len(found)} groups have a technique "
        "that is measurably faster (speedup CI above 1); the others keep the reference.</p>"
        "<p class='note'>Speedups are ratios of p50 latency timed in the same interleaved rounds, with 95% CIs from the paired rounds. "
        f"Accuracy differences are paired on the same {int(n[0]) if n else '?'} test images, with 95% CIs: "
        "a difference whose CI contains 0 is not a measured gain or loss.</p>"
    )
    rows = pd.DataFrame([_answer_row(answer, report, budget) for answer in found])
    columns = [
        Column("model and device", "group", text=True, sticky=True),
        Column("batch", "batch_size"),
        Column("ship", "verdict", text=True, wrap=True, html=lambda row: row["verdict"], sort=lambda row: row["verdict_sort"]),
        Column("speedup (95% CI)", "speedup", html=lambda row: row["speedup"], title="hover a flag for why it is there", sort=lambda row: row["speedup_sort"]),
        Column("Δ top-1, pp (95% CI)", "delta", html=lambda row: row["delta"], sort=lambda row: row["delta_sort"]),
        Column("size ratio", "size", html=lambda row: row["size"], sort=lambda row: row["size_sort"]),
        Column("smallest within budget", "smallest", text=True, html=lambda row: row["smallest"]),
        Column("doubts", "flags", text=True, wrap=True, html=lambda row: row["flags"]),
    ]
    return lead + html_table(rows, columns, "answers", filter_box=False)


def render_speedup_accuracy(frame: pd.DataFrame, report: Report) -> Any:
    """Speedup against accuracy difference, per model and device (rows) and batch size (columns)."""
    if report.ok.empty:
        return None
    return figures.speedup_vs_accuracy(report.ok, report.styles, report.reference, report.max_accuracy_drop)


def render_accuracy_size(frame: pd.DataFrame, report: Report) -> Any:
    """Accuracy against serialized size, per model."""
    return None if report.ok.empty else figures.accuracy_vs_size(report.ok, report.styles)


def render_batch_sizes(frame: pd.DataFrame, report: Report) -> Any:
    """Latency and throughput against batch size: a figure for three or more batch sizes, a table otherwise."""
    ok = report.ok
    if ok.empty or ok["batch_size"].nunique() < 2:
        return None
    figure = figures.latency_vs_batch_size(ok, report.styles)
    if figure is not None:
        return figure
    sizes = sorted(int(size) for size in ok["batch_size"].dropna().unique())
    pivot = ok.assign(batch_size=ok["batch_size"].astype(int)).pivot_table(index=report.group_keys + ["technique"], columns="batch_size", values=["latency_p50_ms", "throughput_sps"], aggfunc="median", sort=False).reset_index()
    pivot.columns = ["_".join(str(part) for part in column if part != "").strip("_") if isinstance(column, tuple) else column for column in pivot.columns]
    columns = [Column(key, key, text=True, sticky=key == "technique") for key in report.group_keys + ["technique"]]
    for size in sizes:
        columns.append(Column(f"p50 ms/sample, batch {size}", f"latency_p50_ms_{size}", html=lambda row, size=size: significant(row.get(f"latency_p50_ms_{size}", float("nan")) / size)))
    for size in sizes:
        columns.append(Column(f"samples/s, batch {size}", f"throughput_sps_{size}", html=lambda row, size=size: count_text(row.get(f"throughput_sps_{size}"))))
    return "<p class='note'>Two batch sizes make no curve: latency per sample and throughput at each.</p>" + html_table(pivot, columns, "batch-sizes")


def render_pipelines(frame: pd.DataFrame, report: Report) -> Any:
    """Accuracy and size after every step of multi-step pipelines, from the trained model on."""
    return figures.pipeline_steps(report.run.records, report.styles, report.reference)


def render_noisy(frame: pd.DataFrame, report: Report) -> str | None:
    """The cells flagged noisy, with why; nothing when none was."""
    flagged = frame[frame["noisy"] == True].drop_duplicates("cell_id")  # noqa: E712  (None means not measured)
    if flagged.empty:
        return None
    columns = [
        Column("cell", "cell_id", text=True, sticky=True, html=lambda row: f"<a href='#{cell_anchor(row['cell_id'], row['batch_size'])}'>{_escape(row['cell_id'])}</a>"),
        Column("why", "noise_reason", text=True, wrap=True),
    ]
    return (
        "<p class='note'>These cells were timed while other processes used the CPU, or their rounds disagree: treat their latency and speedup "
        "as unreliable and measure again on a quiet machine (<code>benchharness system</code> shows what disturbs it).</p>"
        + html_table(flagged, columns, "problems")
    )


def render_failures(frame: pd.DataFrame) -> str:
    """Skipped and failed cells with their reason and error type."""
    bad = frame[frame["status"] != "ok"].drop_duplicates("cell_id")
    if bad.empty:
        return "<p>Every cell finished.</p>"
    columns = [
        Column("cell", "cell_id", text=True, sticky=True, html=lambda row: f"<span id='{cell_anchor(row['cell_id'])}'>{_escape(row['cell_id'])}</span>"),
        Column("status", "status", text=True), Column("error type", "error_type", text=True),
        Column("reason", "error_message", text=True, html=lambda row: f"<details class='reason'><summary>{_escape(str(row.get('error_message') or '')[:80])}</summary><div>{_escape(row.get('error_message'))}</div></details>"),
    ]
    return html_table(bad, columns, "problems")


def _plugin_text(plugin: dict[str, Any]) -> str:
    """A plugin's name and version, and its status when it was not loaded (disabled, failed)."""
    text = f"{plugin['name']} {plugin.get('version') or ''}".strip()
    status = plugin.get("status", "loaded")
    return text if status == "loaded" else f"{text} ({status})"


def _facts(pairs: list[tuple[str, Any]]) -> str:
    return "<dl class='facts'>" + "".join(f"<dt>{_escape(key)}</dt><dd>{_escape(value)}</dd>" for key, value in pairs if not is_missing(value) and value != "") + "</dl>"


def render_environment(frame: pd.DataFrame, report: Report) -> str:
    """Where and with what the run was measured: hardware, OS, library versions, threads and allocator, data, plugins."""
    from benchharness.report.frame import describe_hardware

    info = report.run.info
    environment = info.get("environment") or {}
    conditions = info.get("conditions") or {}
    dirty = environment.get("benchharness_git_dirty")
    commit = environment.get("benchharness_git_commit")
    data_name = (report.suite.get("data") or {}).get("name")
    train, test = report.distinct("train_split_samples"), report.distinct("accuracy_samples")
    set_env = {key: value for key, value in (conditions.get("environment") or {}).items() if value is not None}
    pairs = [
        ("hardware", "; ".join(describe_hardware(info))),
        ("operating system", environment.get("os") or environment.get("platform")),
        ("kernel", environment.get("kernel")),
        ("host", environment.get("hostname")),
        ("benchharness", f"{environment.get('benchharness')} (commit {str(commit)[:12] if commit else 'n/a'}"
         + (", uncommitted changes" if dirty else ", clean tree" if dirty is False else "") + ")"),
        ("Python", environment.get("python")),
        ("libraries", ", ".join(f"{name} {environment[name]}" for name in ("torch", "torchvision", "numpy", "pandas", "plotly", "pluggy", "scipy") if environment.get(name))),
        ("CUDA (torch)", environment.get("torch_cuda")),
        ("threads", conditions.get("threads")),
        ("CPUs (affinity)", ", ".join(str(cpu) for cpu in conditions.get("cpus") or [])),
        ("allocator", conditions.get("allocator")),
        ("isolation", conditions.get("isolation")),
        ("environment variables set", ", ".join(f"{key}={value}" for key, value in set_env.items()) or "none of the threading/allocator variables"),
        ("data", f"{data_name or '?'}: " + (f"{int(train[0])} training, " if train else "") + (f"{int(test[0])} test images" if test else "split sizes not recorded")),
        ("executor", (info.get("executor") or {}).get("name")),
        ("plugins", ", ".join(_plugin_text(plugin) for plugin in info.get("plugins") or [])),
    ]
    return f"<details><summary>Hardware, software, threads, allocator, data and plugins of this run</summary>{_facts(pairs)}</details><p class='note'>{EXPECTED_RULE.format(link=docs_link('measurement.md', 'how-much-speedup-can-be-expected-at-all'))}</p>"


def render_suite(frame: pd.DataFrame, report: Report) -> str:
    """The suite's text as run, with its source, hash and overrides."""
    suite = report.run.info["suite"]
    overrides = suite.get("overrides") or []
    return (
        f"<p class='meta'>{_escape(suite['source'])}, sha256 {suite['sha256']}" + (f"; overrides: {_escape(' '.join(overrides))}" if overrides else "")
        + f"</p><details><summary>suite text</summary><pre>{_escape(suite['text'])}</pre></details>"
    )


def register_builtin_sections(register) -> None:
    """Register the built-in sections: answers, results, figures, noisy cells, failures, environment and the suite."""
    register("Answers: what to ship", render_answers, name="answers", order=100)
    register("Results", render_results, name="results", order=200)
    register("Speedup and accuracy", render_speedup_accuracy, name="speedup-accuracy", order=300)
    register("Accuracy and size", render_accuracy_size, name="accuracy-size", order=310)
    register("Batch sizes", render_batch_sizes, name="batch-sizes", order=320)
    register("Pipelines, step by step", render_pipelines, name="pipelines", order=330)
    register("Learning curves", training.render_learning_curves, name="learning-curves", order=340)
    register("Training recipes", training.render_recipes, name="recipes", order=350)
    register("Thread scaling", scaling.render_thread_scaling, name="thread-scaling", order=360)
    register("GPU speedup", scaling.render_gpu_speedup, name="gpu-speedup", order=370)
    register("Noisy measurements", render_noisy, name="noisy", order=800)
    register("Skipped and failed cells", render_failures, name="failures", order=810)
    register("Environment", render_environment, name="environment", order=900)
    register("The suite, as run", render_suite, name="suite", order=910)
