"""The testing kit for plugin authors: real cell contexts, one-cell runs and :func:`check_technique`.

It is also a pytest plugin, loaded wherever benchharness is installed, that provides the
fixtures ``tiny_data``, ``tiny_model``, ``cell_context``, ``trainer`` and ``run_cell``. The plain
functions behind them (:func:`make_tiny_data`, :func:`make_tiny_model`,
:func:`make_cell_context`, :func:`run_one_cell`) work outside pytest too. Nothing here imports
torch until a fixture or function is used, and no fixture is used unless a test asks for it.
See docs/testing-plugins.md.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

from benchharness import hookimpl
from benchharness.conformance import ConformanceReport, TechniqueNotConforming, check_technique

if TYPE_CHECKING:
    from torch import nn

    from benchharness.api import CellContext, Data, Technique
    from benchharness.host import PluginHost, PluginOptions
    from benchharness.suite import Suite
    from benchharness.train import Trainer

__all__ = [
    "KIT_MEASURE",
    "KIT_TRAIN",
    "ConformanceReport",
    "TechniqueNotConforming",
    "check_technique",
    "kit_suite_text",
    "make_cell_context",
    "make_tiny_data",
    "make_tiny_model",
    "plugin_options",
    "preserved_process_state",
    "run_one_cell",
]

KIT_SUITE_NAME = "kit"
KIT_DATA = {"name": "digits"}
"""The kit's data set: scikit-learn's bundled digits (1,437 training and 360 test images of 8x8 pixels, 10 classes); never downloads."""
KIT_TRAIN = {"epochs": 1, "batch_size": 64, "optimizer": "adam", "lr": 0.005, "weight_decay": 0.0}
"""The kit's training budget: one epoch of Adam, a second or so on a CPU core."""
KIT_MEASURE = {
    "batch_sizes": [1],
    "warmup": 1,
    "min_iterations": 3,
    "min_seconds": 0.0,
    "min_rounds": 2,
    "max_rounds": 2,
    "disturbed_retries": 0,
    "threads": 1,
}
"""The kit's timing settings: two short interleaved rounds at batch size 1, one thread."""
KIT_RUN = {"cell_timeout_s": 600.0}


def plugin_options(plugins: Sequence[str | os.PathLike] = (), entry_points: bool | None = None) -> "PluginOptions":
    """The :class:`~benchharness.host.PluginOptions` for ``plugins`` (module names or ``.py`` files) and ``entry_points``.

    ``.py`` files are made absolute, so that worker processes find them. ``entry_points=None`` keeps
    PluginOptions' default: installed plugins load, except under this project's own test suite.
    """
    from benchharness.host import PluginOptions

    extra = tuple(_plugin_spec(plugin) for plugin in plugins)
    return PluginOptions(extra=extra) if entry_points is None else PluginOptions(extra=extra, entry_points=entry_points)


def _plugin_spec(plugin: str | os.PathLike) -> str:
    text = os.fspath(plugin)
    return str(Path(text).resolve()) if text.endswith(".py") or os.sep in text else text


def make_tiny_data() -> "Data":
    """The kit's data: the registered ``digits`` data set (bundled with scikit-learn, nothing downloaded), on the CPU."""
    from benchharness.api import rebuild_config
    from benchharness.host import PluginHost, PluginOptions

    dataset = PluginHost(PluginOptions(entry_points=False, disabled=())).datasets[KIT_DATA["name"]]
    return dataset.load(rebuild_config(dataset.Config, {}))


def make_tiny_model(data: "Data | None" = None, model: str = "small_cnn", seed: int = 0) -> "nn.Module":
    """A freshly initialised registered ``model`` (``NAME`` or ``NAME:variant``) for ``data`` (default: :func:`make_tiny_data`).

    It is seeded with ``seed`` without changing the caller's random state.
    """
    import torch

    from benchharness.host import PluginHost, PluginOptions
    from benchharness.suite import split_model_name

    data = data if data is not None else make_tiny_data()
    family, variant = split_model_name(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return PluginHost(PluginOptions(entry_points=False, disabled=())).models[family].build(data.num_classes, data.input_shape, variant)


def kit_suite_text(
    steps: str | Sequence[str],
    config: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    model: str = "small_cnn",
    device: str = "cpu",
    models: Sequence[str] = (),
    suite: Mapping[str, Any] | None = None,
) -> str:
    """The TOML text of the kit's one-cell suite: ``model`` x the pipeline ``steps`` x ``device``.

    ``config`` maps a step name to its parameters. ``models`` are further models the suite names
    (e.g. a teacher); an ``[[include]]`` rule keeps the one cell of ``model``. ``suite`` holds suite
    values merged over the kit's (``{"train": {"epochs": 2}}``). None values are left out, so a
    field set to None gets its default.
    """
    steps = [steps] if isinstance(steps, str) else list(steps)
    entry = {"steps": steps, **{name: dict(params) for name, params in (config or {}).items()}}
    document: dict[str, Any] = {
        "name": KIT_SUITE_NAME,
        "models": list(dict.fromkeys([model, *models])),
        "devices": [device],
        "data": dict(KIT_DATA),
        "techniques": [entry],
        "train": dict(KIT_TRAIN),
        "measure": dict(KIT_MEASURE),
        "run": dict(KIT_RUN),
        "include": [{"model": model}],
    }
    return toml_text(_merged(document, suite or {}))


def _merged(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in changes.items():
        merged[key] = _merged(merged[key], value) if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping) else value
    return merged


def toml_text(document: Mapping[str, Any]) -> str:
    """``document`` as TOML (written by tomli-w): None values are left out, paths written as strings."""
    import tomli_w

    try:
        return tomli_w.dumps(_toml_ready(document))
    except TypeError as error:
        raise TypeError(f"{error}: it cannot be written to a suite; use booleans, numbers, strings, lists and dicts") from None


def toml_value(value: Any) -> str:
    """One Python value (bool, number, string, path, list) as a TOML value; None is not representable."""
    return toml_text({"value": value}).removeprefix("value = ").strip()


def _toml_ready(value: Any) -> Any:
    """``value`` with None left out of mappings and paths made strings, recursively."""
    if isinstance(value, Mapping):
        return {key: _toml_ready(item) for key, item in value.items() if item is not None}
    if isinstance(value, (list, tuple)):
        return [_toml_ready(item) for item in value]
    return str(value) if isinstance(value, PurePath) else value


def fresh_directory(root: Path, prefix: str) -> Path:
    """A new directory ``root/prefix-N`` (the first N not taken)."""
    root.mkdir(parents=True, exist_ok=True)
    for number in range(100_000):
        path = root / f"{prefix}-{number}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free directory name {prefix}-N under {root}")


def technique_name(host: "PluginHost", technique: "str | Technique | type[Technique]") -> str:
    """The name under which ``host`` knows ``technique``: a registered name, or a Technique (instance or class) registered inline.

    Raises LookupError for an unknown name (the message names close names and skipped plugins), and
    :class:`~benchharness.errors.PluginError` for a Technique that cannot be registered or whose
    NAME another class already took.
    """
    from benchharness.errors import PluginError
    from benchharness.host import checked_item

    if isinstance(technique, str):
        if technique not in host.techniques:
            raise LookupError(f"no technique named {technique!r}: {host.techniques.suggest(technique)}")
        return technique
    from benchharness.api import Technique

    instance = checked_item(technique, "technique", Technique)
    name = instance.NAME
    if name in host.techniques:
        registered = host.techniques.entries[name]
        if type(registered.item) is not type(instance):
            raise PluginError(
                f"NAME {name!r} is already registered by plugin {registered.plugin!r}; a second technique of that name is "
                "ignored with a warning when plugins load, so give this one a unique NAME"
            )
        return name
    host.register(_InlineTechnique(instance), name=f"benchharness-testing-{name}")
    return name


class _InlineTechnique:
    """A plugin registering one technique object, for techniques handed to the kit directly."""

    def __init__(self, technique: "Technique"):
        self.technique = technique

    @hookimpl
    def register_techniques(self, register):
        """Register the technique."""
        register(self.technique)


def models_named_in(config: Mapping[str, Mapping[str, Any]] | None, host: "PluginHost") -> list[str]:
    """Registered model names among the string values of the steps' parameters (a teacher, say)."""
    from benchharness.suite import split_model_name

    named = []
    for params in (config or {}).values():
        for value in params.values():
            if isinstance(value, str) and split_model_name(value)[0] in host.models:
                named.append(value)
    return named


def load_kit_suite(
    directory: Path,
    host: "PluginHost",
    steps: Sequence[str],
    config: Mapping[str, Mapping[str, Any]] | None,
    *,
    model: str,
    device: str,
    suite: Mapping[str, Any] | None,
    overrides: Sequence[str] = (),
) -> "Suite":
    """Write the kit's suite to ``directory/kit.toml`` and load it with ``host`` (raises SuiteError when invalid)."""
    from benchharness.suite import load_suite_text

    text = kit_suite_text(steps, config, model=model, device=device, models=models_named_in(config, host), suite=suite)
    path = directory / f"{KIT_SUITE_NAME}.toml"
    path.write_text(text)
    return load_suite_text(text, str(path), host, default_name=KIT_SUITE_NAME, overrides=list(overrides))


def build_cell_context(
    host: "PluginHost",
    options: "PluginOptions",
    directory: Path,
    name: str,
    config: Mapping[str, Any] | None,
    *,
    model: str,
    device: str,
    suite: Mapping[str, Any] | None = None,
    cache_dir: Path | None = None,
) -> "CellContext":
    """The context of the one cell ``model`` x ``name`` x ``device``, built by the worker's own CellRun in this process.

    Raises :class:`~benchharness.errors.Unsupported` when the device is unavailable or the
    technique does not support it (the worker would skip the cell).
    """
    configs = {name: dict(config)} if config else {}
    loaded = load_kit_suite(directory, host, [name], configs, model=model, device=device, suite=suite)
    return context_of_suite(loaded, host, options, directory, name, cache_dir)


def context_of_suite(loaded: "Suite", host: "PluginHost", options: "PluginOptions", directory: Path, name: str, cache_dir: Path | None) -> "CellContext":
    """The context of the kit suite's one cell, prepared by the worker's CellRun; raises Unsupported when the worker would skip the cell."""
    from benchharness.errors import Unsupported
    from benchharness.matrix import expand
    from benchharness.tasks import CellTask
    from benchharness.worker import CellRun

    (cell,) = expand(loaded)
    reason = host.skip_reason(cell)
    if reason:
        raise Unsupported(reason)
    workdir = directory / "work"
    workdir.mkdir(exist_ok=True)
    context = CellRun(CellTask(cell, loaded, options, workdir, cache_dir)).prepare()
    context.model_trained = not host.techniques[name].TRAINS
    return context


def make_cell_context(
    tmp_path: str | os.PathLike,
    technique: "str | Technique | type[Technique]" = "baseline",
    config: Mapping[str, Any] | None = None,
    *,
    model: str = "small_cnn",
    device: str = "cpu",
    plugins: Sequence[str | os.PathLike] = (),
    suite: Mapping[str, Any] | None = None,
    entry_points: bool | None = None,
    cache: bool = True,
) -> "CellContext":
    """A real :class:`~benchharness.CellContext` for ``technique`` on ``model`` and ``device``, built as a worker builds it.

    The kit's one-cell suite (digits, one epoch; see :func:`kit_suite_text`) is written under
    ``tmp_path`` and loaded with the built-in plugins, ``plugins`` and, as ``entry_points`` says,
    installed ones; the worker's ``CellRun`` prepares the context in this process (it applies the
    cell's conditions: one torch thread). ``model_trained`` is what the technique's step gets as
    the pipeline's only step: False when it ``TRAINS``. ``technique`` may be a Technique instance or
    class, registered inline. The artifact cache is ``tmp_path/kit-cache`` (None without ``cache``).
    Raises :class:`~benchharness.errors.Unsupported` when the cell would be skipped.
    """
    from benchharness.host import PluginHost

    root = Path(tmp_path)
    options = plugin_options(plugins, entry_points)
    host = PluginHost(options)
    name = technique_name(host, technique)
    directory = fresh_directory(root, "kit-context")
    return build_cell_context(host, options, directory, name, config, model=model, device=device, suite=suite, cache_dir=root / "kit-cache" if cache else None)


def run_one_cell(
    tmp_path: str | os.PathLike,
    steps: str | Sequence[str],
    config: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    model: str = "mlp",
    device: str = "cpu",
    plugins: Sequence[str | os.PathLike] = (),
    entry_points: bool | None = None,
    overrides: Sequence[str] = (),
    measure: Mapping[str, Any] | None = None,
    suite: Mapping[str, Any] | None = None,
    cache: bool = True,
) -> dict[str, Any]:
    """Run the one cell ``model`` x ``steps`` x ``device`` through the real runner; its record from ``results.jsonl``.

    The cell is built in a worker process and timed in interleaved rounds, as ``benchharness run``
    does; ``plugins`` (module names importable by the workers, or ``.py`` files) load in every
    worker. ``config`` maps a step name to its parameters, ``overrides`` are ``--set KEY=VALUE``
    strings, ``measure`` changes the kit's timing settings (:data:`KIT_MEASURE`) and ``suite`` any
    other suite value. The run directory is under ``tmp_path/kit-runs`` and the artifact cache is
    ``tmp_path/kit-cache`` (no cache without ``cache``). The record is returned whatever its
    ``status`` (``ok``, ``skipped``, ``failed``, ``timeout``); a failed one has ``error_message``
    and ``traceback``. Call it from the main thread (the runner handles Ctrl-C).
    """
    from benchharness.cli import run_cells
    from benchharness.describe import preliminary_info
    from benchharness.host import PluginHost
    from benchharness.store import RunDir

    root = Path(tmp_path)
    options = plugin_options(plugins, entry_points)
    host = PluginHost(options)
    steps = [steps] if isinstance(steps, str) else list(steps)
    directory = fresh_directory(root, "kit-suite")
    changes = _merged({"measure": dict(measure or {})}, suite or {})
    loaded = load_kit_suite(directory, host, steps, config, model=model, device=device, suite=changes, overrides=overrides)
    run_dir = RunDir.create(root / "kit-runs", loaded.name)
    run_dir.write_info(preliminary_info(loaded, host))
    run_cells(loaded, host, run_dir, False, not cache, root / "kit-cache")
    records = run_dir.records()
    if len(records) != 1:
        raise RuntimeError(f"the run in {run_dir.path} recorded {len(records)} cells instead of 1; see its logs/")
    return records[0]


@dataclass
class _ProcessState:
    threads: int
    affinity: set[int] | None
    environment: dict[str, str]
    handlers: dict[int, Any]
    quantized_engine: str | None


_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2") if hasattr(signal, name))


def _process_state() -> _ProcessState:
    import torch

    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    handlers = {number: signal.getsignal(number) for number in _SIGNALS}
    return _ProcessState(torch.get_num_threads(), affinity, dict(os.environ), handlers, torch.backends.quantized.engine)


def _restore_process_state(state: _ProcessState) -> None:
    import threading

    import torch

    torch.set_num_threads(state.threads)
    if state.affinity is not None:
        os.sched_setaffinity(0, state.affinity)
    for name in set(os.environ) - set(state.environment):
        del os.environ[name]
    os.environ.update(state.environment)
    if threading.current_thread() is threading.main_thread():
        for number, handler in state.handlers.items():
            if handler is not None and signal.getsignal(number) is not handler:
                signal.signal(number, handler)
    if state.quantized_engine is not None and torch.backends.quantized.engine != state.quantized_engine:
        torch.backends.quantized.engine = state.quantized_engine


@contextmanager
def preserved_process_state() -> Iterator[None]:
    """Undo, when the block ends, what a cell changes in this process: torch threads, CPU affinity, environment variables,
    signal handlers (e.g. a launcher's) and the quantized engine."""
    state = _process_state()
    try:
        yield
    finally:
        _restore_process_state(state)


try:
    import pytest
except ImportError:  # the plain functions work without pytest
    pytest = None

if pytest is not None:

    @pytest.fixture
    def tiny_data() -> "Data":
        """The kit's data (:func:`make_tiny_data`): digits, 1,437 training and 360 test images, on the CPU."""
        return make_tiny_data()

    @pytest.fixture
    def tiny_model(tiny_data) -> "nn.Module":
        """A freshly initialised ``small_cnn`` for ``tiny_data`` (:func:`make_tiny_model`)."""
        return make_tiny_model(tiny_data)

    @pytest.fixture
    def cell_context(tmp_path):
        """A factory of real cell contexts: ``cell_context(technique="baseline", config=None, *, model="small_cnn", device="cpu", plugins=(), suite=None)``.

        See :func:`make_cell_context`. A cell the worker would skip (device unavailable, technique
        unsupported on it) skips the test with the reason. What the contexts changed in this
        process (threads, affinity) is undone after the test.
        """
        from benchharness.errors import Unsupported

        def make(technique="baseline", config=None, *, model="small_cnn", device="cpu", plugins=(), suite=None, entry_points=None, cache=True):
            try:
                return make_cell_context(
                    tmp_path, technique, config, model=model, device=device, plugins=plugins, suite=suite, entry_points=entry_points, cache=cache
                )
            except Unsupported as reason:
                pytest.skip(f"the cell would be skipped: {reason}")

        with preserved_process_state():
            yield make

    @pytest.fixture
    def trainer(cell_context) -> "Trainer":
        """The :class:`~benchharness.train.Trainer` of a default ``cell_context()`` (the kit's one-epoch budget, on the CPU)."""
        return cell_context().trainer

    @pytest.fixture
    def run_cell(tmp_path):
        """A factory that runs one cell through the real runner and returns its record: ``run_cell(steps, config=None, *, model="mlp", ...)``.

        See :func:`run_one_cell`.
        """

        def run(steps, config=None, *, model="mlp", device="cpu", plugins=(), entry_points=None, overrides=(), measure=None, suite=None, cache=True):
            return run_one_cell(
                tmp_path, steps, config, model=model, device=device, plugins=plugins, entry_points=entry_points,
                overrides=overrides, measure=measure, suite=suite, cache=cache,
            )

        return run
