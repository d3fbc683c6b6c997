"""The plugin host: built-ins, entry points, ``--plugin`` files and the block list.

Built-in plugins are listed once in :data:`DEFAULT_PLUGINS` and registered
exactly like third-party ones, which come from the entry-point group
``benchharness`` or from ``--plugin MODULE_OR_FILE.py``. Names listed in the
``BENCHHARNESS_DISABLE_PLUGINS`` environment variable (comma separated) are
not registered.

One plugin's fault never stops the others: a plugin that fails to import, that
implements a hook benchharness does not have (or with arguments the hook does
not pass), whose register hook raises, or that registers an invalid item is
skipped whole, with a :class:`PluginFailure` in :attr:`PluginHost.failures`.
Building a host never raises for a plugin's fault. Hooks called later
(commands, report sections, cell events) are called plugin by plugin; one that
raises is a warning.

Every registered item knows its distribution's version (the benchharness
version for built-ins, None for ``--plugin`` files and inline plugins) and can
give a code fingerprint, which artifact cache keys include.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
import traceback
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Generic, TypeVar

import pluggy
from pydantic import BaseModel

from benchharness import __version__, hookspecs
from benchharness.api import Dataset, ModelFamily, Probe, Technique, rebuild_config
from benchharness.executor import Executor
from benchharness.errors import PluginError

DEFAULT_PLUGINS = (
    "benchharness.plugins.baseline",
    "benchharness.plugins.prune",
    "benchharness.plugins.quantize",
    "benchharness.plugins.distill",
    "benchharness.plugins.amp",
    "benchharness.plugins.ddp",
    "benchharness.plugins.pipeline",
    "benchharness.plugins.compiled",
    "benchharness.plugins.ort",
    "benchharness.plugins.models",
    "benchharness.plugins.datasets",
    "benchharness.plugins.cpu_probe",
    "benchharness.plugins.cuda_probe",
    "benchharness.plugins.local",
    "benchharness.plugins.ray_executor",
    "benchharness.plugins.slurm_executor",
    "benchharness.plugins.report_sections",
)
ENTRY_POINT_GROUP = "benchharness"
DISABLE_ENV = "BENCHHARNESS_DISABLE_PLUGINS"
BUILTIN = "benchharness (built-in)"
INLINE = "registered inline"
REGISTRIES = (
    ("techniques", "technique", Technique, "register_techniques"),
    ("models", "model", ModelFamily, "register_models"),
    ("datasets", "data set", Dataset, "register_datasets"),
    ("probes", "probe", Probe, "register_probes"),
    ("executors", "executor", Executor, "register_executors"),
)
HOOK_ARGUMENTS = {
    name: tuple(inspect.signature(function).parameters)
    for name, function in vars(hookspecs).items()
    if callable(function) and hasattr(function, "benchharness_spec")
}
_NOT_PLUGIN_CODE = tuple(str(Path(module.__file__).resolve().parent) for module in (importlib, pluggy)) + (str(Path(__file__).resolve()),)

T = TypeVar("T")


def _entry_points_by_default() -> bool:
    """Installed plugins load, except under the test suite (which sets ``sys._called_from_test``) unless a test asks."""
    return not getattr(sys, "_called_from_test", False)


@dataclass(frozen=True)
class PluginOptions:
    """Which plugins to load; picklable so that workers load the same set. ``extra`` keeps each spec once, in order."""

    extra: tuple[str, ...] = ()
    entry_points: bool = field(default_factory=_entry_points_by_default)
    disabled: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "extra", tuple(dict.fromkeys(self.extra)))

    def blocked(self) -> set[str]:
        """Plugin names not to register: ``disabled`` or, when None, the environment's block list."""
        names = self.disabled
        if names is None:
            names = tuple(os.environ.get(DISABLE_ENV, "").split(","))
        return {name.strip() for name in names if name.strip()}


def source_sha256(item: Any) -> str | None:
    """The SHA-256 of the file of the module that defines ``item``'s class, or None when it has no file."""
    module = sys.modules.get(type(item).__module__)
    path = getattr(module, "__file__", None)
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else None
    except OSError:
        return None


def code_fingerprint(item: Any, plugin: str, distribution: str, version: str | None) -> dict[str, Any]:
    """What identifies the code of ``item``: its plugin, distribution, the distribution's version and its source's hash."""
    return {"plugin": plugin, "distribution": distribution, "version": version, "source_sha256": source_sha256(item)}


def describe_source(source: str, version: str | None = None) -> str:
    """Where a plugin came from, in words: built-in, inline, ``--plugin SPEC`` or ``distribution NAME VERSION``."""
    if source in (BUILTIN, INLINE) or source.startswith("--plugin "):
        return source
    return f"distribution {source} {version}" if version else f"distribution {source}"


def describe_error(error: BaseException) -> str:
    """``Type: message`` on one line, with the innermost place in the plugin's own code that raised it."""
    text = " ".join(f"{type(error).__name__}: {error}".split())
    frames = [frame for frame in traceback.extract_tb(error.__traceback__) if not frame.filename.startswith("<")]
    if frames and not frames[-1].filename.startswith(_NOT_PLUGIN_CODE):
        text += f" (at {frames[-1].filename}:{frames[-1].lineno})"
    return text


def checked_item(item: Any, kind: str, base: type) -> Any:
    """``item`` (an instance, or a class that is instantiated) if it can be registered as a ``kind``; else PluginError saying why."""
    if isinstance(item, type):
        try:
            item = item()
        except (Exception, SystemExit) as error:
            raise PluginError(f"registered the class {item.__name__} as a {kind}, but it cannot be created without arguments: {describe_error(error)}") from error
    if not isinstance(item, base):
        raise PluginError(f"registered {item!r} as a {kind}, but it is not a benchharness.{base.__name__}")
    name = getattr(item, "NAME", None)
    if not isinstance(name, str) or not name:
        raise PluginError(f"registered a {kind} ({type(item).__name__}) without a NAME; give the class a NAME string")
    config = getattr(item, "Config", None)
    if hasattr(base, "Config") and not (isinstance(config, type) and issubclass(config, BaseModel)):
        raise PluginError(f"registered the {kind} {name!r}, but its Config is not a pydantic model; subclass benchharness.StrictConfig")
    if base is Probe and item.DEVICE is not None and not (isinstance(item.DEVICE, str) and item.DEVICE):
        raise PluginError(f"registered the probe {name!r}, but its DEVICE {item.DEVICE!r} is neither None nor a device name")
    return item


@dataclass
class Registered(Generic[T]):
    """Something a plugin registered, with where it came from and the version of its distribution (None if unknown)."""

    item: T
    plugin: str
    distribution: str
    version: str | None = None

    def fingerprint(self) -> dict[str, Any]:
        """The item's code fingerprint (see :func:`code_fingerprint`); part of artifact cache keys."""
        return code_fingerprint(self.item, self.plugin, self.distribution, self.version)


def _nothing_unloaded() -> list[tuple[str, str]]:
    return []


def _names_alike(item: str, plugin: str) -> bool:
    """Whether ``plugin`` (a module, distribution or file name) is named after ``item``."""
    base = plugin.replace("\\", "/").rsplit("/", 1)[-1].removesuffix(".py")
    return item.lower().replace("-", "_") in base.lower().replace("-", "_")


@dataclass
class Registry(Generic[T]):
    """Named things of one kind (techniques, models, ...) registered by plugins.

    ``unloaded`` says which plugins were skipped or blocked; :meth:`suggest` adds it to its hint.
    """

    kind: str
    base: type
    entries: dict[str, Registered[T]] = field(default_factory=dict)
    unloaded: Callable[[], list[tuple[str, str]]] = field(default=_nothing_unloaded, repr=False)
    ignored: list[str] = field(default_factory=list)

    def add(self, item: Any, plugin: str, distribution: str, version: str | None = None) -> None:
        """Add ``item`` (an instance, or a class that is instantiated) registered by ``plugin`` of ``distribution`` at ``version``."""
        try:
            item = checked_item(item, self.kind, self.base)
        except PluginError as error:
            raise PluginError(f"plugin {plugin!r} {error}") from error
        name = item.NAME
        if name in self.entries:
            first = self.entries[name].plugin
            problem = f"{self.kind} {name!r} from plugin {plugin!r} ignored: plugin {first!r} registered it first"
            self.ignored.append(problem)
            warnings.warn(problem, stacklevel=2)
            return
        self.entries[name] = Registered(item, plugin, distribution, version)

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def __getitem__(self, name: str) -> T:
        return self.entries[name].item

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self.entries)

    def suggest(self, name: str) -> str:
        """A hint naming the closest registered name (or listing them), then every plugin that was skipped or blocked.

        A skipped or blocked plugin named like ``name`` (``binarize`` for ``benchharness_binarize``) comes first,
        since it is most likely the one that would have registered it.
        """
        close = difflib.get_close_matches(name, self.names(), n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}?" if close else f"registered {self.kind}s: {', '.join(self.names()) or 'none'}"
        unloaded = self.unloaded()
        likely = [sentence for plugin, sentence in unloaded if _names_alike(name, plugin)]
        return "; ".join([*likely, hint, *(sentence for plugin, sentence in unloaded if sentence not in likely)])


@dataclass
class PluginFailure:
    """A plugin that was skipped: its name, the exact problem, and where it came from."""

    name: str
    error: str
    source: str = "unknown"
    version: str | None = None

    def __str__(self) -> str:
        return f"plugin {self.name!r} ({describe_source(self.source, self.version)}) was skipped: {self.error}"


@dataclass
class PluginInfo:
    """One plugin as ``benchharness list plugins`` and ``run.json`` show it.

    ``origin`` is ``built-in``, ``entry point``, ``--plugin`` or ``inline``; ``status`` is
    ``loaded``, ``disabled`` (by the block list) or ``failed`` (skipped; ``problem`` says why);
    ``registered`` maps a kind (``technique``, ``model``, ...) to the names the plugin registered,
    and ``hooks`` to the other hooks it implements (commands, report sections, cell events).
    """

    name: str
    distribution: str | None
    version: str | None
    origin: str
    status: str
    registered: dict[str, list[str]] = field(default_factory=dict)
    problem: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {
            "name": self.name, "distribution": self.distribution, "version": self.version, "origin": self.origin,
            "status": self.status, "registered": self.registered, "problem": self.problem,
        }


def origin_of(source: str) -> tuple[str, str | None]:
    """(origin, distribution) of a plugin's ``source``: built-in, ``--plugin``, inline, or an entry point of a distribution."""
    if source == BUILTIN:
        return "built-in", "benchharness"
    if source.startswith("--plugin "):
        return "--plugin", None
    if source == INLINE:
        return "inline", None
    return "entry point", source


def shadowing_directory(directory: Path | None = None) -> str | None:
    """Why ``import benchharness`` from ``directory`` (default: the working directory) would not find this package, or None.

    A directory named ``benchharness`` without an ``__init__.py`` there (a checkout of this project,
    say) is found first by ``python`` and ``pytest`` run from it when benchharness is installed in
    editable mode, and becomes an empty namespace package.
    """
    candidate = (directory or Path.cwd()) / "benchharness"
    installed = Path(__file__).resolve().parent
    if not candidate.is_dir() or (candidate / "__init__.py").exists() or candidate.resolve() == installed:
        return None
    return (
        f"the directory {candidate} hides the installed benchharness package from `python` and `pytest` run in "
        f"{candidate.parent} (`import benchharness` finds an empty namespace package there); rename that directory "
        "or work from another one"
    )


def _plugin_file(spec: str) -> Path | None:
    """The resolved path of a ``--plugin`` spec that names a file, or None for a module name."""
    return Path(spec).resolve() if spec.endswith(".py") or os.sep in spec else None


def _import_plugin(spec: str) -> ModuleType:
    """Import a plugin given as a module name or as a path to a ``.py`` file (a module of its own per path)."""
    path = _plugin_file(spec)
    if path is None:
        return importlib.import_module(spec)
    if not path.is_file():
        raise FileNotFoundError(f"no such plugin file: {spec}")
    module_name = f"benchharness_plugin_{path.stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def _required_arguments(function: Callable) -> list[str]:
    """The arguments ``function`` cannot do without (pluggy passes hooks' arguments by these names)."""
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in inspect.signature(function).parameters.values() if p.kind in kinds and p.default is inspect.Parameter.empty]


def hook_problems(pm: pluggy.PluginManager, plugin: Any) -> list[str]:
    """What is wrong with ``plugin``'s hook implementations: unknown hook names, arguments the hook does not pass, wrappers."""
    problems = []
    for attribute in dir(plugin):
        options = pm.parse_hookimpl_opts(plugin, attribute)
        if options is None:
            continue
        hook = options.get("specname") or attribute
        if hook not in HOOK_ARGUMENTS:
            if not options.get("optionalhook"):
                close = difflib.get_close_matches(hook, list(HOOK_ARGUMENTS), n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}?" if close else f"the hooks are {', '.join(sorted(HOOK_ARGUMENTS))}"
                problems.append(f"hook {hook!r} is not a benchharness hook; {hint}")
            continue
        if options.get("hookwrapper") or options.get("wrapper"):
            problems.append(f"hook {hook!r} is implemented as a wrapper; benchharness calls each implementation on its own, so write a plain function")
            continue
        asked = _required_arguments(getattr(plugin, attribute))
        unknown = [name for name in asked if name not in HOOK_ARGUMENTS[hook]]
        if unknown:
            passed = ", ".join(HOOK_ARGUMENTS[hook])
            problems.append(f"hook {hook!r} passes ({passed}), but {attribute}({', '.join(asked)}) asks for {', '.join(map(repr, unknown))}; rename the argument")
    return problems


class HookCaller:
    """Calls every implementation of a hook with keyword arguments, one plugin at a time: one that raises is a warning."""

    def __init__(self, pm: pluggy.PluginManager, where: Callable[[str], str] = lambda name: "unknown"):
        self._pm = pm
        self._where = where

    def _call(self, hook: str, after: Callable[[str], None] = lambda plugin: None, **arguments: Any) -> None:
        for impl in reversed(getattr(self._pm.hook, hook).get_hookimpls()):
            try:
                impl.function(**{name: arguments[name] for name in impl.argnames})
            except (Exception, SystemExit) as error:
                self._warn(impl.plugin_name, f"failed in {hook}: {describe_error(error)}; ignored")
            after(impl.plugin_name)

    def _warn(self, plugin: str, problem: str) -> None:
        warnings.warn(f"plugin {plugin!r} ({self._where(plugin)}) {problem}", stacklevel=4)

    def register_commands(self, cli: Any) -> None:
        """Let plugins add commands to ``cli``; a plugin that replaces or removes a command already there is undone."""
        commands = getattr(cli, "commands", {})
        kept = dict(commands)

        def restore(plugin: str) -> None:
            taken = [name for name, command in kept.items() if commands.get(name) is not command]
            if taken:
                commands.update({name: kept[name] for name in taken})
                self._warn(plugin, f"replaced or removed the command(s) {', '.join(map(repr, taken))} in register_commands; kept the original ones")
            kept.update(commands)

        self._call("register_commands", after=restore, cli=cli)

    def register_report_sections(self, register: Any) -> None:
        """Let plugins add report sections."""
        self._call("register_report_sections", register=register)

    def before_cell(self, cell: Any, context: dict[str, Any]) -> None:
        """Tell plugins a cell is about to run."""
        self._call("before_cell", cell=cell, context=context)

    def after_cell(self, cell: Any, record: dict[str, Any]) -> None:
        """Tell plugins a cell's record was written."""
        self._call("after_cell", cell=cell, record=record)


class PluginHost:
    """Loads plugins into a pluggy PluginManager and collects what they register; never raises for a plugin's fault."""

    def __init__(self, options: PluginOptions | None = None):
        self.options = options or PluginOptions()
        self.pm = pluggy.PluginManager("benchharness")
        self.pm.add_hookspecs(hookspecs)
        self.failures: list[PluginFailure] = []
        self.blocked: list[str] = []
        self.blocked_sources: dict[str, tuple[str, str | None]] = {}
        self.sources: dict[str, str] = {}
        self.versions: dict[str, str | None] = {}
        blocked = self.options.blocked()
        for name in DEFAULT_PLUGINS:
            self._load(name, lambda name=name: importlib.import_module(name), BUILTIN, blocked, __version__)
        if self.options.entry_points:
            for entry_point in self._entry_points():
                distribution, version = _distribution(entry_point)
                self._load(entry_point.name, entry_point.load, distribution, blocked, version)
        files: set[Path] = set()
        for spec in self.options.extra:
            path = _plugin_file(spec)
            if path is None or path not in files:
                self._load(spec, lambda spec=spec: _import_plugin(spec), f"--plugin {spec}", blocked)
            files.add(path)
        self.hooks = HookCaller(self.pm, self.describe_plugin)
        self.failures += self._collect_all()

    def register(self, plugin: Any, name: str | None = None) -> None:
        """Register a plugin object inline (tests, notebooks) and collect what it registers.

        A plugin that would be skipped when loaded raises PluginError instead, and the host stays as it was.
        """
        name = name or self.pm.get_canonical_name(plugin)
        if self.pm.has_plugin(name):
            raise PluginError(f"a plugin named {name!r} is already loaded ({self.describe_plugin(name)}); register this one under another name")
        problem = self._add(plugin, name, INLINE)
        if problem:
            raise PluginError(str(PluginFailure(name, problem, INLINE)))
        failures = self._collect_all()
        self.failures += [failure for failure in failures if failure.name != name]
        for failure in failures:
            if failure.name == name:
                raise PluginError(str(failure))

    def unregister(self, plugin: Any) -> None:
        """Remove an inline-registered plugin and what it registered (nothing happens if it is not registered)."""
        name = self.pm.get_name(plugin)
        if name is None:
            return
        self.pm.unregister(plugin)
        self.sources.pop(name, None)
        self.versions.pop(name, None)
        self.failures += self._collect_all()

    def describe_plugin(self, name: str) -> str:
        """Where the registered plugin ``name`` came from, in words."""
        return describe_source(self.sources.get(name, INLINE), self.versions.get(name))

    def unloaded_notes(self) -> list[tuple[str, str]]:
        """(plugin name, sentence) per plugin that was skipped (and why) or blocked; registries add these to their hints."""
        notes = [(failure.name, str(failure)) for failure in self.failures]
        if self.options.disabled is None:
            blocked = [(name, f"plugin {name!r} is disabled by {self.blocked_by}; remove it from that variable to load it") for name in self.blocked]
        else:
            blocked = [(name, f"plugin {name!r} is blocked by {self.blocked_by}") for name in self.blocked]
        return notes + blocked

    @property
    def blocked_by(self) -> str:
        """What keeps the :attr:`blocked` plugins out: the environment variable, or ``PluginOptions.disabled``."""
        return DISABLE_ENV if self.options.disabled is None else "PluginOptions.disabled"

    def _entry_points(self) -> list[metadata.EntryPoint]:
        """The installed entry points of the group; a distribution whose entry points cannot be read is a failure."""
        try:
            return list(metadata.entry_points(group=ENTRY_POINT_GROUP))
        except Exception:
            pass
        found = []
        for dist in metadata.distributions():
            try:
                found += [entry_point for entry_point in dist.entry_points if entry_point.group == ENTRY_POINT_GROUP]
            except Exception as error:
                name, version = _distribution_name(dist)
                problem = f"its entry points cannot be read: {describe_error(error)}; reinstall the distribution"
                self.failures.append(PluginFailure(name, problem, name, version))
        return found

    def _load(self, name: str, load: Callable[[], Any], source: str, blocked: set[str], version: str | None = None) -> None:
        if name in blocked:
            if name not in self.blocked_sources:
                self.blocked.append(name)
                self.blocked_sources[name] = (source, version)
            return
        if self.pm.has_plugin(name):
            if self.sources.get(name) != source:
                taken = f"a plugin named {name!r} is already loaded ({self.describe_plugin(name)}); give this one another name"
                self.failures.append(PluginFailure(name, taken, source, version))
            return
        try:
            plugin = load()
        except (Exception, SystemExit) as error:  # a broken third-party plugin must not stop the run
            self.failures.append(PluginFailure(name, describe_error(error), source, version))
            return
        problem = self._add(plugin, name, source, version)
        if problem:
            self.failures.append(PluginFailure(name, problem, source, version))

    def _add(self, plugin: Any, name: str, source: str, version: str | None = None) -> str | None:
        """Register ``plugin`` as ``name`` unless its hooks are wrong; return the problem, or None."""
        if self.pm.is_registered(plugin):
            return None
        try:
            problems = hook_problems(self.pm, plugin)
            if problems:
                return "; also, ".join(problems)
            self.pm.register(plugin, name=name)
        except Exception as error:
            if self.pm.get_plugin(name) is plugin:
                self.pm.unregister(name=name)
            return describe_error(error)
        self.sources[name] = source
        self.versions[name] = version
        return None

    def _collect_all(self) -> list[PluginFailure]:
        """Rebuild the registries; unregister every plugin whose register hook raised or whose items are invalid, and return those."""
        gathered, broken = self._gather()
        failures = []
        for name, error in broken.items():
            failures.append(PluginFailure(name, error, self.sources.pop(name, INLINE), self.versions.pop(name, None)))
            self.pm.unregister(name=name)
        for attribute, kind, base, _ in REGISTRIES:
            registry: Registry = Registry(kind, base, unloaded=self.unloaded_notes)
            for plugin_name, item in gathered[attribute]:
                if plugin_name not in broken:
                    registry.add(item, plugin_name, self.sources.get(plugin_name, "unknown"), self.versions.get(plugin_name))
            setattr(self, attribute, registry)
        return failures

    def _gather(self) -> tuple[dict[str, list[tuple[str, Any]]], dict[str, str]]:
        """Call every register hook: the checked items per registry with their plugin, and each broken plugin's problem."""
        gathered: dict[str, list[tuple[str, Any]]] = {attribute: [] for attribute, *_ in REGISTRIES}
        broken: dict[str, str] = {}
        for attribute, kind, base, hook_name in REGISTRIES:
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                if impl.plugin_name in broken:
                    continue
                items: list[Any] = []
                try:
                    impl.function(**({"register": _collector(items)} if "register" in impl.argnames else {}))
                    gathered[attribute] += [(impl.plugin_name, checked_item(item, kind, base)) for item in items]
                except PluginError as error:
                    broken[impl.plugin_name] = str(error)
                except (Exception, SystemExit) as error:
                    broken[impl.plugin_name] = f"{hook_name} raised {describe_error(error)}"
        return gathered, broken

    def skip_reason(self, cell: Any, device_reason: str | None = None) -> str | None:
        """Why ``cell`` cannot run here (device unavailable, or a step unsupported on it), or None.

        ``device_reason`` lets a caller pass an availability answer it already has.
        """
        probe = self.probes[cell.device]
        reason = device_reason if device_reason is not None else probe.unavailable_reason()
        if reason:
            return f"device {cell.device!r} unavailable: {reason}"
        for step in cell.steps:
            technique = self.techniques[step.technique]
            reason = technique.unsupported_reason(rebuild_config(technique.Config, step.config), probe)
            if reason:
                return f"{step.technique}: {reason}"
        return None

    def devices(self) -> dict[str, Probe]:
        """Probes that are devices, by device name."""
        return {name: probe for name, probe in ((n, self.probes[n]) for n in self.probes.names()) if probe.DEVICE}

    def plugin_infos(self) -> list[PluginInfo]:
        """Every plugin: the loaded ones in load order, then the disabled, then the failed, with distributions and versions."""
        registered: dict[str, dict[str, list[str]]] = {}
        for attribute, kind, *_ in REGISTRIES:
            registry = getattr(self, attribute)
            for name in registry.names():
                registered.setdefault(registry.entries[name].plugin, {}).setdefault(kind, []).append(name)
        infos = []
        registry_hooks = {hook for *_, hook in REGISTRIES}
        for name, source in self.plugin_rows():
            origin, distribution = origin_of(source)
            hooks = sorted(caller.name for caller in self.pm.get_hookcallers(self.pm.get_plugin(name)) or [] if caller.name not in registry_hooks)
            items = {**registered.get(name, {}), **({"hooks": hooks} if hooks else {})}
            infos.append(PluginInfo(name, distribution, self.versions.get(name), origin, "loaded", items))
        for name in self.blocked:
            source, version = self.blocked_sources[name]
            origin, distribution = origin_of(source)
            infos.append(PluginInfo(name, distribution, version, origin, "disabled", problem=f"blocked by {self.blocked_by}"))
        for failure in self.failures:
            origin, distribution = origin_of(failure.source)
            infos.append(PluginInfo(failure.name, distribution, failure.version, origin, "failed", problem=failure.error))
        return infos

    def problems(self) -> list[str]:
        """What ``benchharness plugins check`` reports: skipped plugins, names registered twice, pluggy's own validation,
        and a directory here that hides the installed package (see :func:`shadowing_directory`)."""
        found = [str(failure) for failure in self.failures]
        shadowed = shadowing_directory()
        if shadowed:
            found.append(shadowed)
        for attribute, *_ in REGISTRIES:
            found += getattr(self, attribute).ignored
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as error:
            found.append(f"plugin {error.plugin!r}: {error}")
        return found

    def plugin_rows(self) -> list[tuple[str, str]]:
        """(plugin name, where it came from) for every registered plugin."""
        return [(name, self.sources.get(name, INLINE)) for name, _ in self.pm.list_name_plugin() if name]

    def technique_fingerprint(self, technique: Technique) -> dict[str, Any]:
        """The code fingerprint of ``technique``: its registration's, or a built-in's for one the harness made (the implicit train step)."""
        entry = self.techniques.entries.get(technique.NAME)
        if entry is not None and entry.item is technique:
            return entry.fingerprint()
        return code_fingerprint(technique, type(technique).__module__, BUILTIN, __version__)

    def plugin_versions(self) -> dict[str, str | None]:
        """Every registered plugin's name and its distribution's version (None for ``--plugin`` files and inline plugins)."""
        return {name: self.versions.get(name) for name, _ in self.plugin_rows()}


def _collector(items: list[Any]) -> Callable[[Any], None]:
    """The ``register`` callback handed to a register hook: it keeps each item for checking."""

    def register(item: Any) -> None:
        items.append(item)

    return register


def _distribution_name(dist: metadata.Distribution | None) -> tuple[str, str | None]:
    """The name and version of ``dist`` ("unknown", None when it is missing or unreadable)."""
    try:
        return (dist.name or "unknown", dist.version) if dist else ("unknown", None)
    except Exception:
        return "unknown", None


def _distribution(entry_point: metadata.EntryPoint) -> tuple[str, str | None]:
    """The name and version of the distribution that declares ``entry_point``."""
    try:
        return _distribution_name(entry_point.dist)
    except Exception:
        return "unknown", None
