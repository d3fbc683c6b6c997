"""The plugin host: built-ins, entry points, ``--plugin`` files and the block list.

Built-in plugins are listed once in :data:`DEFAULT_PLUGINS` and registered
exactly like third-party ones, which come from the entry-point group
``benchharness`` or from ``--plugin MODULE_OR_FILE.py``. Names listed in the
``BENCHHARNESS_DISABLE_PLUGINS`` environment variable (comma separated) are
not registered. A plugin that fails to import is reported and skipped.

Every registered item knows its distribution's version (the benchharness
version for built-ins, None for ``--plugin`` files and inline plugins) and can
give a code fingerprint, which artifact cache keys include.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import os
import sys
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any, Generic, TypeVar

import pluggy

from benchharness import __version__, hookspecs
from benchharness.api import Dataset, ModelFamily, Probe, Technique
from benchharness.errors import PluginError

DEFAULT_PLUGINS = (
    "benchharness.plugins.baseline",
    "benchharness.plugins.prune",
    "benchharness.plugins.quantize",
    "benchharness.plugins.distill",
    "benchharness.plugins.amp",
    "benchharness.plugins.ddp",
    "benchharness.plugins.models",
    "benchharness.plugins.datasets",
    "benchharness.plugins.cpu_probe",
    "benchharness.plugins.cuda_probe",
)
ENTRY_POINT_GROUP = "benchharness"
DISABLE_ENV = "BENCHHARNESS_DISABLE_PLUGINS"
BUILTIN = "benchharness (built-in)"

T = TypeVar("T")


def _entry_points_by_default() -> bool:
    """Installed plugins load, except under the test suite (which sets ``sys._called_from_test``) unless a test asks."""
    return not getattr(sys, "_called_from_test", False)


@dataclass(frozen=True)
class PluginOptions:
    """Which plugins to load; picklable so that workers load the same set."""

    extra: tuple[str, ...] = ()
    entry_points: bool = field(default_factory=_entry_points_by_default)
    disabled: tuple[str, ...] | None = None

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


@dataclass
class Registry(Generic[T]):
    """Named things of one kind (techniques, models, ...) registered by plugins."""

    kind: str
    base: type
    entries: dict[str, Registered[T]] = field(default_factory=dict)

    def add(self, item: Any, plugin: str, distribution: str, version: str | None = None) -> None:
        """Add ``item`` (an instance, or a class that is instantiated) registered by ``plugin`` of ``distribution`` at ``version``."""
        if isinstance(item, type):
            item = item()
        if not isinstance(item, self.base):
            raise PluginError(f"plugin {plugin!r} registered {item!r} as a {self.kind}, but it is not a {self.base.__name__}")
        name = getattr(item, "NAME", None)
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {plugin!r} registered a {self.kind} without a NAME")
        if name in self.entries:
            first = self.entries[name].plugin
            warnings.warn(f"{self.kind} {name!r} from plugin {plugin!r} ignored: plugin {first!r} registered it first", stacklevel=2)
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
        """A hint naming the closest registered name, or listing the registered ones."""
        close = difflib.get_close_matches(name, self.names(), n=1, cutoff=0.5)
        if close:
            return f"did you mean {close[0]!r}?"
        return f"registered {self.kind}s: {', '.join(self.names()) or 'none'}"


@dataclass
class PluginFailure:
    """A plugin that could not be loaded, and why."""

    name: str
    error: str


def _import_plugin(spec: str) -> ModuleType:
    """Import a plugin given as a module name or as a path to a ``.py`` file."""
    if spec.endswith(".py") or os.sep in spec:
        path = Path(spec).resolve()
        if not path.is_file():
            raise FileNotFoundError(f"no such plugin file: {spec}")
        module_name = f"benchharness_plugin_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        module_spec.loader.exec_module(module)
        return module
    return importlib.import_module(spec)


class HookCaller:
    """Typed wrapper that calls every hook with keyword arguments."""

    def __init__(self, pm: pluggy.PluginManager):
        self._pm = pm

    def register_commands(self, cli: Any) -> None:
        """Let plugins add commands to ``cli``."""
        self._pm.hook.register_commands(cli=cli)

    def register_report_sections(self, register: Any) -> None:
        """Let plugins add report sections."""
        self._pm.hook.register_report_sections(register=register)

    def before_cell(self, cell: Any, context: dict[str, Any]) -> None:
        """Tell plugins a cell is about to run."""
        self._pm.hook.before_cell(cell=cell, context=context)

    def after_cell(self, cell: Any, record: dict[str, Any]) -> None:
        """Tell plugins a cell's record was written."""
        self._pm.hook.after_cell(cell=cell, record=record)


class PluginHost:
    """Loads plugins into a pluggy PluginManager and collects what they register."""

    def __init__(self, options: PluginOptions | None = None):
        self.options = options or PluginOptions()
        self.pm = pluggy.PluginManager("benchharness")
        self.pm.add_hookspecs(hookspecs)
        self.failures: list[PluginFailure] = []
        self.sources: dict[str, str] = {}
        self.versions: dict[str, str | None] = {}
        blocked = self.options.blocked()
        for name in DEFAULT_PLUGINS:
            self._load(name, lambda name=name: importlib.import_module(name), BUILTIN, blocked, __version__)
        if self.options.entry_points:
            for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
                dist = entry_point.dist
                self._load(entry_point.name, entry_point.load, dist.name if dist else "unknown", blocked, dist.version if dist else None)
        for spec in self.options.extra:
            self._load(spec, lambda spec=spec: _import_plugin(spec), f"--plugin {spec}", blocked)
        self.hooks = HookCaller(self.pm)
        self._collect_all()

    def register(self, plugin: Any, name: str | None = None) -> None:
        """Register a plugin object inline (tests, notebooks) and collect what it registers."""
        name = self.pm.register(plugin, name=name)
        self.sources[name] = "registered inline"
        self._collect_all()

    def unregister(self, plugin: Any) -> None:
        """Remove an inline-registered plugin and what it registered."""
        name = self.pm.get_name(plugin)
        self.pm.unregister(plugin)
        self.sources.pop(name, None)
        self.versions.pop(name, None)
        self._collect_all()

    def _collect_all(self) -> None:
        self.pm.check_pending()
        self.techniques: Registry[Technique] = self._collect("technique", Technique, "register_techniques")
        self.models: Registry[ModelFamily] = self._collect("model", ModelFamily, "register_models")
        self.datasets: Registry[Dataset] = self._collect("data set", Dataset, "register_datasets")
        self.probes: Registry[Probe] = self._collect("probe", Probe, "register_probes")

    def _load(self, name: str, load: Any, source: str, blocked: set[str], version: str | None = None) -> None:
        if name in blocked:
            return
        try:
            plugin = load()
        except Exception as error:  # a broken third-party plugin must not stop the run
            self.failures.append(PluginFailure(name, f"{type(error).__name__}: {error}"))
            return
        if self.pm.is_registered(plugin):
            return
        self.pm.register(plugin, name=name)
        self.sources[name] = source
        self.versions[name] = version

    def _collect(self, kind: str, base: type, hook_name: str) -> Registry:
        registry: Registry = Registry(kind, base)
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
            plugin_name = impl.plugin_name
            source = self.sources.get(plugin_name, "unknown")
            version = self.versions.get(plugin_name)

            def register(item: Any, plugin_name: str = plugin_name, source: str = source, version: str | None = version) -> None:
                registry.add(item, plugin_name, source, version)

            try:
                impl.function(**({"register": register} if "register" in impl.argnames else {}))
            except PluginError:
                raise
            except Exception as error:
                raise PluginError(f"plugin {plugin_name!r} failed in {hook_name}: {type(error).__name__}: {error}") from error
        return registry

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
            reason = technique.unsupported_reason(technique.Config.model_validate(step.config), probe)
            if reason:
                return f"{step.technique}: {reason}"
        return None

    def devices(self) -> dict[str, Probe]:
        """Probes that are devices, by device name."""
        return {name: probe for name, probe in ((n, self.probes[n]) for n in self.probes.names()) if probe.DEVICE}

    def plugin_rows(self) -> list[tuple[str, str]]:
        """(plugin name, where it came from) for every registered plugin."""
        return [(name, self.sources.get(name, "registered inline")) for name, _ in self.pm.list_name_plugin() if name]

    def technique_fingerprint(self, technique: Technique) -> dict[str, Any]:
        """The code fingerprint of ``technique``: its registration's, or a built-in's for one the harness made (the implicit train step)."""
        entry = self.techniques.entries.get(technique.NAME)
        if entry is not None and entry.item is technique:
            return entry.fingerprint()
        return code_fingerprint(technique, type(technique).__module__, BUILTIN, __version__)

    def plugin_versions(self) -> dict[str, str | None]:
        """Every registered plugin's name and its distribution's version (None for ``--plugin`` files and inline plugins)."""
        return {name: self.versions.get(name) for name, _ in self.plugin_rows()}
