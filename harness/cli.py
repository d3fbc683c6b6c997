"""The ``benchharness`` command group. Plugins add commands through ``register_commands``."""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from benchharness import __version__
from benchharness.errors import HarnessError, SuiteError
from benchharness.store import TORN_FILE, RecordNotWritten
from benchharness.host import PluginHost, PluginOptions, shadowing_directory

EXIT_FAILED_CELLS = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
LIST_KINDS = ("techniques", "models", "datasets", "probes", "executors", "plugins")

console = Console()
errors = Console(stderr=True)

plugin_option = click.option(
    "--plugin",
    "plugins",
    multiple=True,
    metavar="MODULE_OR_FILE.py",
    help="Load an extra plugin from an importable module or a .py file (repeatable).",
)


def default_suite() -> Path:
    """The embedded quick suite, used when ``run`` is given no suite."""
    return Path(str(resources.files("benchharness.suites") / "quick.toml"))


def make_host(plugins: tuple[str, ...]) -> PluginHost:
    """A plugin host with the extra plugins, reporting plugins that failed to load."""
    host = PluginHost(PluginOptions(extra=tuple(plugins)))
    for failure in host.failures:
        errors.print(f"[yellow]warning:[/] {escape(str(failure))}", highlight=False, soft_wrap=True)
    shadowed = shadowing_directory()
    if shadowed:
        errors.print(f"[yellow]warning:[/] {escape(shadowed)}", highlight=False, soft_wrap=True)
    return host


def fail(error: HarnessError) -> None:
    """Print a harness error and exit with the bad-input code."""
    errors.print(f"[red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
    sys.exit(EXIT_BAD_INPUT)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="benchharness")
def cli() -> None:
    """Benchmark what pruning, quantization, distillation, mixed precision and
    data-parallel training do to your models, on your hardware.

    Start with `benchharness run` (the quick suite) or `benchharness validate SUITE`.
    """


@cli.command()
@click.argument("suite", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--resume", type=click.Path(file_okay=False, path_type=Path), help="Run only the cells missing from this run directory.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"), show_default=True, help="Where run directories are created.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a suite value, e.g. --set train.epochs=1 or --set 'techniques[2].ddp.node_rank=1' (repeatable).")
@click.option("--no-cache", is_flag=True, help="Train everything afresh: neither read nor write the artifact cache.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Artifact cache directory [default: $BENCHHARNESS_CACHE_DIR or ~/.cache/benchharness].")
@click.option("--executor", default=None, metavar="NAME", help="Where cells run: local (default), ray, slurm; the same as --set run.executor=NAME.")
@plugin_option
def run(suite: Path | None, resume: Path | None, out: Path, overrides: tuple[str, ...], no_cache: bool, cache_dir: Path | None, executor: str | None, plugins: tuple[str, ...]) -> None:
    """Run every cell of SUITE (default: the bundled quick suite).

    Results go to OUT/<suite>-<timestamp>/results.jsonl, one JSON record per
    cell, written as each cell ends. Exit code: 0 when every cell is ok or
    skipped, 1 when any failed or timed out, 2 on bad input, 130 when interrupted.
    """
    from benchharness.store import RunDir

    try:
        if resume:
            if suite or overrides or executor:
                raise HarnessError("--resume RUN_DIR reruns the suite as it was started: give no SUITE, --set or --executor with it")
            run_dir = RunDir.open(resume)
            info = run_dir.read_info()
            run_dir.lock()
            loaded, host = load_resumed_suite(info, plugins)
        else:
            from benchharness.suite import load_suite

            host = make_host(plugins)
            chosen = [f"run.executor={json.dumps(executor)}"] if executor else []
            loaded = load_suite(suite or default_suite(), host, [*overrides, *chosen])
            run_dir = RunDir.create(out, loaded.name)
            run_dir.lock()
        warn_about_skipped_lines(run_dir)
    except HarnessError as error:
        fail(error)
    try:
        summary, runner = run_cells(loaded, host, run_dir, resume is not None, no_cache, cache_dir)
    except KeyboardInterrupt:
        exit_interrupted(run_dir)
    except RecordNotWritten as error:
        errors.print(f"[red]error:[/] {escape(str(error))}", soft_wrap=True, highlight=False)
        sys.exit(EXIT_FAILED_CELLS)
    except HarnessError as error:  # e.g. an executor that cannot reach its cluster
        fail(error)
    counts = ", ".join(f"{count} {status}" for status, count in sorted(summary.counts.items())) or "no cells run"
    console.print(f"results: {run_dir.results_path} ({counts})", soft_wrap=True, highlight=False)
    report_path = write_report_if_possible(run_dir, host)
    if report_path:
        console.print(f"report:  {report_path} ({file_size(report_path)})", soft_wrap=True, highlight=False)
    if summary.noisy:
        errors.print(f"[yellow]warning:[/] {len(summary.noisy)} cell(s) were measured on a disturbed machine; their latencies are unreliable:")
        for cell_id, reason in summary.noisy.items():
            errors.print(f"  [yellow]noisy[/] {cell_id}: {reason}", highlight=False)
    if summary.interrupted:
        exit_interrupted(run_dir)
    if summary.any_failed:
        sys.exit(EXIT_FAILED_CELLS)


def exit_interrupted(run_dir: Any) -> None:
    """Print the resume command (unwrapped) and exit 130; further Ctrl-C presses are ignored while exiting."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    errors.print(f"[yellow]interrupted.[/] resume with: benchharness run --resume {run_dir.path}", soft_wrap=True, highlight=False)
    sys.exit(EXIT_INTERRUPTED)


def load_resumed_suite(info: dict[str, Any], plugins: tuple[str, ...]) -> tuple[Any, PluginHost]:
    """The suite a run was started with (from its ``run.json``) and a host with the plugins it used plus ``plugins``."""
    from benchharness.suite import load_suite_text

    stored = info.get("plugin_options", {}).get("extra", [])
    host = make_host(tuple(dict.fromkeys([*stored, *plugins])))
    suite = info["suite"]
    return load_suite_text(suite["text"], suite["source"], host, suite["name"], suite.get("overrides")), host


def run_cells(loaded: Any, host: PluginHost, run_dir: Any, resuming: bool, no_cache: bool, cache_dir: Path | None) -> tuple[Any, Any]:
    """Start the workers, describe the run in ``run.json`` (once), run the missing cells; (summary, runner).

    A preliminary ``run.json`` is written before anything slow starts, so Ctrl-C at any moment leaves a run that resumes.
    """
    from benchharness.cache import default_cache_dir
    from benchharness.describe import preliminary_info
    from benchharness.matrix import expand
    from benchharness.runner import Runner

    if not resuming:
        run_dir.write_info(preliminary_info(loaded, host))
    use_cache = loaded.spec.run.cache and not no_cache
    runner = Runner(loaded, host, run_dir, errors, cache_dir=(cache_dir or default_cache_dir()) if use_cache else None)
    try:
        if not run_dir.read_info().get("described", True):
            run_dir.write_info(runner.describe())
        cells = expand(loaded)
        finished = run_dir.finished_cell_ids()
        todo = [cell for cell in cells if cell.id not in finished]
        where = f" on {loaded.spec.run.executor}" if loaded.spec.run.executor != "local" else ""
        errors.print(f"[bold]{loaded.name}[/]: {len(todo)} of {len(cells)} cells to run{where} -> {run_dir.path}", soft_wrap=True, highlight=False)
        warn_if_busy()
        return runner.run(todo), runner
    finally:
        runner.close()


def warn_about_skipped_lines(run_dir: Any) -> None:
    """Name the lines of ``results.jsonl`` that are not usable records (their cells run again on resume)."""
    from benchharness.store import describe_skipped

    if run_dir.torn_tail:
        errors.print(f"[yellow]warning:[/] {run_dir.results_path} ended in a torn record ({len(run_dir.torn_tail)} bytes), moved to {run_dir.path / TORN_FILE}; its cell runs again", soft_wrap=True, highlight=False)
    _, skipped = run_dir.read_records()
    if skipped:
        errors.print(f"[yellow]warning:[/] {describe_skipped(run_dir.results_path, skipped)}", soft_wrap=True, highlight=False)


def warn_if_busy() -> None:
    """Say before a run starts when other processes are using the CPUs it will measure on."""
    from benchharness.system import busy_warning

    warning = busy_warning()
    if warning:
        errors.print(f"[yellow]warning:[/] {warning}; measurements taken now may be flagged noisy (see `benchharness system`)", highlight=False)


def file_size(path: Path) -> str:
    """A file's size in kB or MB."""
    size = Path(path).stat().st_size
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"


def write_report_if_possible(run_dir: Any, host: PluginHost | None = None) -> Path | None:
    """Write the run's HTML report; a report problem never fails a run (the records are safe on disk)."""
    from benchharness.report import write_report

    try:
        return write_report(run_dir.path, host=host)
    except Exception as error:  # the measurements are safe on disk; say why the report is missing
        errors.print(f"[yellow]warning:[/] the report could not be written: {type(error).__name__}: {error}")
        return None


@cli.command()
@click.argument("suite", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a suite value, as for `run`.")
@plugin_option
def validate(suite: Path, overrides: tuple[str, ...], plugins: tuple[str, ...]) -> None:
    """Check SUITE and print its expanded matrix; writes nothing. Exit code 2 when invalid."""
    from benchharness.matrix import expand
    from benchharness.suite import load_suite

    host = make_host(plugins)
    try:
        loaded = load_suite(suite, host, list(overrides))
    except SuiteError as error:
        fail(error)
    cells = expand(loaded)
    reasons = {device: host.probes[device].unavailable_reason() for device in loaded.spec.devices}
    table = Table(title=f"{loaded.name}: {len(cells)} cells", title_justify="left")
    for column in ("#", "cell", "steps", "device", "will"):
        table.add_column(column, overflow="fold")
    for number, cell in enumerate(cells, start=1):
        will = "[yellow]skip[/] (device unavailable)" if reasons[cell.device] else "run"
        steps = " -> ".join(step.technique for step in cell.steps)
        table.add_row(str(number), cell.id, steps, cell.device, will)
    console.print(table)
    for device, reason in reasons.items():
        if reason:
            console.print(f"[yellow]{device}[/] unavailable: {reason}", highlight=False)
    console.print(f"[green]valid:[/] {suite}")


@cli.command(name="list")
@click.argument("kind", required=False, type=click.Choice(LIST_KINDS), default=None)
@plugin_option
def list_command(kind: str | None, plugins: tuple[str, ...]) -> None:
    """List registered techniques, models, data sets, probes or plugins (default: all), with where each came from."""
    host = make_host(plugins)
    for name in [kind] if kind else LIST_KINDS:
        console.print(plugin_table(host, name))


def plugin_table(host: PluginHost, kind: str) -> Table:
    """A table of one kind of registered thing; for plugins, every plugin with its version, origin, what it registered and its status."""
    table = Table(title=kind, title_justify="left")
    if kind == "plugins":
        table.add_column("plugin", no_wrap=True)
        for column in ("distribution", "version", "from", "registered", "status"):
            table.add_column(column, overflow="fold")
        colours = {"loaded": "green", "disabled": "yellow", "failed": "red"}
        for info in host.plugin_infos():
            registered = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in info.registered.items())
            status = f"[{colours[info.status]}]{info.status}[/]" + (f": {escape(info.problem)}" if info.problem else "")
            table.add_row(escape(info.name), info.distribution or "", info.version or "", info.origin, escape(registered), status)
        return table
    registry = {"techniques": host.techniques, "models": host.models, "datasets": host.datasets, "probes": host.probes, "executors": host.executors}[kind]
    for column in ("name", "description", "plugin", "distribution"):
        table.add_column(column)
    for name in registry.names():
        entry = registry.entries[name]
        shown = f"{name}:<name>" if kind == "models" and entry.item.variants() is not None else name
        table.add_row(shown, entry.item.DESCRIPTION, entry.plugin, entry.distribution)
    return table


@cli.group(name="plugins")
def plugins_group() -> None:
    """Check the installed plugins."""


@plugins_group.command(name="check")
@plugin_option
def plugins_check(plugins: tuple[str, ...]) -> None:
    """Validate every plugin that would load: hooks and their arguments (pluggy's validation), import errors,
    invalid items, a missing NAME, and names registered twice. Exits 1 on any problem, 0 when all is well."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        host = PluginHost(PluginOptions(extra=tuple(plugins)))
    problems = host.problems()
    infos = host.plugin_infos()
    loaded = [info for info in infos if info.status == "loaded"]
    disabled = [info.name for info in infos if info.status == "disabled"]
    for problem in problems:
        errors.print(f"[red]problem:[/] {escape(problem)}", highlight=False, soft_wrap=True)
    if disabled:
        console.print(f"disabled: {', '.join(disabled)}", highlight=False, soft_wrap=True)
    verdict = "[red]problems found[/]" if problems else "[green]all plugins are valid[/]"
    console.print(f"{verdict}: {len(loaded)} loaded, {len(disabled)} disabled, {len(problems)} problem(s)", highlight=False)
    if problems:
        sys.exit(EXIT_FAILED_CELLS)


@cli.group(name="new")
def new_group() -> None:
    """Start a new project from a template."""


@new_group.command(name="plugin")
@click.argument("name")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default=None, help="The package directory to create; new or empty [default: ./benchharness-NAME].")
def new_plugin(name: str, directory: Path | None) -> None:
    """Write a plugin package for the technique NAME (e.g. binarize, weight_sharing), ready to install and test:
    pyproject.toml with the entry point, a working technique to change, tests using the testing kit, and a README."""
    from benchharness.scaffold import next_steps, write_plugin_package

    try:
        package = write_plugin_package(name, directory)
    except HarnessError as error:
        fail(error)
    console.print(f"[green]created[/] {escape(str(package))}: the technique {name!r}, its tests and a README", highlight=False, soft_wrap=True)
    console.print("next:", highlight=False)
    for command in next_steps(package):
        console.print(f"  {command}", markup=False, highlight=False, soft_wrap=True)


@cli.command(name="system")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON instead of a table.")
def system_command(as_json: bool) -> None:
    """Check this machine for what disturbs timings: busy processes, load, threads, swap, clocks, steal.

    Samples the machine for a fraction of a second. Always exits 0; docs/system-check.md explains each check.
    """
    from benchharness.system import system_check

    findings = system_check()
    if as_json:
        click.echo(json.dumps([finding.as_dict() for finding in findings], indent=2))
        return
    colours = {"ok": "green", "warning": "yellow", "unknown": "dim"}
    table = Table(title="system check", title_justify="left")
    for column in ("what", "value", "verdict", "advice"):
        table.add_column(column, overflow="fold")
    for finding in findings:
        colour = colours[finding.verdict]
        table.add_row(finding.name, finding.value, f"[{colour}]{finding.verdict}[/]", finding.advice)
    console.print(table, highlight=False)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@plugin_option
def probe(as_json: bool, plugins: tuple[str, ...]) -> None:
    """Describe the hardware through every registered probe."""
    from benchharness.describe import describe_probes

    described = describe_probes(make_host(plugins))
    if as_json:
        click.echo(json.dumps(described, indent=2, default=str))
        return
    for name, facts in described.items():
        table = Table(title=f"probe: {name}", title_justify="left", show_header=False)
        table.add_column("fact")
        table.add_column("value")
        for key, value in facts.items():
            table.add_row(key, ", ".join(map(str, value)) if isinstance(value, list) else str(value))
        console.print(table)


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Where to write the HTML [default: RUN_DIR/report.html; for several runs, SUITE-runs.html beside the last]; a CSV is written beside a run's report.")
@click.option("--cdn", is_flag=True, help="Link plotly.js from its CDN instead of inlining it (smaller file, needs internet to view).")
@plugin_option
def report(run_dirs: tuple[Path, ...], output: Path | None, cdn: bool, plugins: tuple[str, ...]) -> None:
    """Write the HTML report of RUN_DIR (also of a run that is still going or was killed).

    Given several run directories of one suite, write a page of each technique's speedup
    across those runs (oldest first) instead.
    """
    from benchharness.report import write_report
    from benchharness.store import RunDir

    try:
        for run_dir in run_dirs:
            warn_about_skipped_lines(RunDir.open(run_dir))
        if len(run_dirs) > 1:
            path = write_trend(list(run_dirs), output, cdn)
            console.print(f"runs:   {path} ({file_size(path)})", soft_wrap=True, highlight=False)
            return
        path = write_report(run_dirs[0], output, cdn=cdn, host=make_host(plugins))
    except HarnessError as error:
        fail(error)
    console.print(f"report: {path} ({file_size(path)})\ntable:  {path.with_suffix('.csv')}", soft_wrap=True, highlight=False)


def write_trend(run_dirs: list[Path], output: Path | None, cdn: bool) -> Path:
    """Write the page of speedups across ``run_dirs`` and return its path."""
    from benchharness.report.views import load_same_suite, trend_page

    runs = load_same_suite(run_dirs)
    page = trend_page(runs, cdn=cdn)
    name = runs[0].info["suite"]["name"]
    path = Path(output) if output else Path(run_dirs[-1]).resolve().parent / f"{name}-runs.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


@cli.command()
@click.argument("run_a", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("run_b", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Also write the comparison as HTML.")
@click.option("--threshold", type=click.FloatRange(0, 10), default=0.05, show_default=True, help="Relative change beyond which a significant change is a regression.")
def compare(run_a: Path, run_b: Path, output: Path | None, threshold: float) -> None:
    """Compare RUN_B against RUN_A cell by cell; exit 1 when any significant regression is found.

    Cells are matched by model, technique, device and batch size. Latency changes are tested
    with a Mann-Whitney U test on the raw samples.
    """
    from benchharness.report.compare import compare_runs
    from benchharness.report.views import comparison_page

    try:
        table = compare_runs(run_a, run_b, threshold)
    except HarnessError as error:
        fail(error)
    if table.empty:
        errors.print("[yellow]no cells in common[/]")
        return
    view = Table(title=f"{run_b.name} vs {run_a.name} (ratios B/A)", title_justify="left")
    for column in ("cell", "batch", "top-1", "p50", "p99", "size", "p-value", "regression"):
        view.add_column(column, overflow="fold")
    for _, row in table.iterrows():
        flag = f"[red]yes: {row['why']}[/]" if row["regression"] else "no"
        view.add_row(
            f"{row['model']}/{row['technique']}/{row['device']}", str(int(row["batch_size"])), f"{row['accuracy_top1_ratio']:.3f}",
            f"{row['latency_p50_ms_ratio']:.3f}", f"{row['latency_p99_ms_ratio']:.3f}", f"{row['size_bytes_ratio']:.3f}", f"{row['latency_p_value']:.2g}", flag,
        )
    console.print(view)
    if output:
        output.write_text(comparison_page(table, run_a, run_b, threshold), encoding="utf-8")
        console.print(f"comparison: {output}")
    if table["regression"].any():
        errors.print(f"[red]{int(table['regression'].sum())} significant regression(s)[/]")
        sys.exit(EXIT_FAILED_CELLS)


@cli.group()
def cache() -> None:
    """Inspect or clear the artifact cache of trained models."""


cache_dir_option = click.option(
    "--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Cache directory [default: $BENCHHARNESS_CACHE_DIR or ~/.cache/benchharness]."
)


@cache.command(name="list")
@cache_dir_option
def cache_list(cache_dir: Path | None) -> None:
    """List cached models, newest first."""
    from benchharness.cache import ArtifactCache, default_cache_dir

    store = ArtifactCache(cache_dir or default_cache_dir())
    entries, unusable = store.scan()
    click.echo(f"{store.root}: {len(entries)} entries" + (f", {len(unusable)} unusable" if unusable else ""))
    for entry in entries:
        click.echo(f"{entry.key[:12]}  {entry.size_bytes / 1e6:8.2f} MB  {entry.created_at}  {entry.description}")
    for entry in unusable:
        click.echo(f"unusable: {entry.path}: {entry.reason}")
    if unusable:
        click.echo("an unusable entry is rebuilt by the next run that needs it; `benchharness cache clear` removes them all")


@cache.command(name="clear")
@cache_dir_option
def cache_clear(cache_dir: Path | None) -> None:
    """Delete every cached model."""
    from benchharness.cache import ArtifactCache, default_cache_dir

    store = ArtifactCache(cache_dir or default_cache_dir())
    console.print(f"removed {store.clear()} entries from {store.root}")


def main() -> None:
    """Console-script entry point: load plugins' commands, then run the CLI."""
    import warnings

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            host = PluginHost()
            host.hooks.register_commands(cli=cli)
    except HarnessError as error:
        fail(error)
    for warning in caught:
        errors.print(f"[yellow]warning:[/] {escape(str(warning.message))}", highlight=False, soft_wrap=True)
    cli()


if __name__ == "__main__":
    main()
