"""``benchharness new plugin NAME``: write a technique plugin package that is ready to install and test.

The package's files are made from the templates in ``benchharness/templates/plugin/``, whose
``string.Template`` placeholders (``$name``, ``$module``, ``$distribution``, ``$class_name``,
``$config_class``) are filled from the plugin's name. As written, the package holds a working
technique, tests that use the testing kit (:mod:`benchharness.testing`) and pass right away, a
README, and a pyproject.toml whose entry point lets benchharness find the plugin once installed.
"""

from __future__ import annotations

import importlib.util
import keyword
import os
import re
import shlex
import warnings
from dataclasses import asdict, dataclass
from importlib import metadata, resources
from pathlib import Path
from string import Template

from benchharness.errors import HarnessError

TEMPLATE_FILES = {
    "pyproject.toml.tmpl": "pyproject.toml",
    "README.md.tmpl": "README.md",
    "gitignore.tmpl": ".gitignore",
    "__init__.py.tmpl": "{module}/__init__.py",
    "test_technique.py.tmpl": "tests/test_{name}.py",
}
"""Each template in ``templates/plugin/`` and the file it becomes in the package (formatted with the names)."""
NAME_PATTERN = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
NAME_RULE = (
    "a plugin name is lower-case letters and digits, words joined by single underscores, starting with a letter "
    "(e.g. binarize, weight_sharing), because it becomes the technique's NAME, the entry point's name and the "
    "module benchharness_NAME"
)
GENERATED_CODE_NAMES = frozenset({"Field", "StrictConfig", "Technique", "PLUGINS"})
"""Names the generated modules import or define, which the technique's classes must not take."""


@dataclass(frozen=True)
class PluginNames:
    """The names a plugin package derives from the plugin's name, e.g. ``weight_sharing``."""

    name: str
    """The technique's NAME and the entry point's name: ``weight_sharing``."""
    module: str
    """The importable package: ``benchharness_weight_sharing``."""
    distribution: str
    """The name pip installs and PyPI lists: ``benchharness-weight-sharing``."""
    class_name: str
    """The technique's class: ``WeightSharing``."""
    config_class: str
    """Its config's class: ``WeightSharingConfig``."""

    @classmethod
    def of(cls, name: str) -> "PluginNames":
        """The names derived from a valid plugin ``name``."""
        class_name = "".join(word.capitalize() for word in name.split("_"))
        return cls(name, f"benchharness_{name}", f"benchharness-{name.replace('_', '-')}", class_name, f"{class_name}Config")


def write_plugin_package(name: str, directory: str | os.PathLike | None = None) -> Path:
    """Write the plugin package for the technique ``name`` into ``directory`` and return that directory.

    ``directory`` defaults to ``./benchharness-NAME`` (underscores as hyphens); it must be new or
    empty. Raises :class:`~benchharness.errors.HarnessError` saying what is wrong and how to fix
    it for an invalid name, a name an installed or built-in plugin already uses, or a directory
    that is a file or not empty. Nothing is written then.
    """
    check_plugin_name(name)
    names = PluginNames.of(name)
    package = Path(directory) if directory is not None else Path.cwd() / names.distribution
    check_package_directory(package)
    check_name_is_free(names)
    files = rendered_files(names)
    for relative, text in files.items():
        path = package / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return package


def check_plugin_name(name: str) -> None:
    """Raise HarnessError unless ``name`` is a valid plugin name (with the closest valid name, when there is one)."""
    if not name:
        raise HarnessError(f"the plugin name is empty; {NAME_RULE}")
    if keyword.iskeyword(name):
        raise HarnessError(f"invalid plugin name {name!r}: it is a Python keyword; choose another name, e.g. {name}_technique")
    if not NAME_PATTERN.fullmatch(name):
        suggestion = suggested_name(name)
        hint = f"; did you mean {suggestion!r}?" if suggestion else ""
        raise HarnessError(f"invalid plugin name {name!r}: {NAME_RULE}{hint}")
    unprefixed = name.removeprefix("benchharness_")
    if unprefixed != name:
        raise HarnessError(
            f"invalid plugin name {name!r}: leave out the benchharness prefix; `benchharness new plugin {unprefixed}` "
            f"writes the package benchharness-{unprefixed.replace('_', '-')}"
        )
    names = PluginNames.of(name)
    clashing = sorted({names.class_name, names.config_class} & GENERATED_CODE_NAMES)
    if clashing:
        raise HarnessError(
            f"invalid plugin name {name!r}: the generated module would define a class named {clashing[0]}, a name it "
            f"imports or uses for something else; choose another name, e.g. my_{name}"
        )


def suggested_name(name: str) -> str | None:
    """A valid plugin name close to ``name`` (lower-cased, hyphens and other separators as underscores, no benchharness prefix), or None."""
    candidate = re.sub(r"[-_.\s]+", "_", name.strip().lower()).strip("_").removeprefix("benchharness_")
    valid = NAME_PATTERN.fullmatch(candidate) and not keyword.iskeyword(candidate)
    return candidate if valid and candidate != name else None


def check_package_directory(package: Path) -> None:
    """Raise HarnessError if ``package`` exists and is a file or a directory that is not empty."""
    if not package.exists():
        return
    if not package.is_dir():
        raise HarnessError(f"{package} exists and is not a directory; choose another directory for the package (--dir)")
    if any(package.iterdir()):
        raise HarnessError(
            f"{package} exists and is not empty; the package is written into a new or empty directory: "
            "remove or rename that one, or choose another (--dir)"
        )


def check_name_is_free(names: PluginNames) -> None:
    """Raise HarnessError if a built-in or installed plugin already uses the technique name, the entry-point name or the module.

    The generated package would then not be loaded, or not be the plugin its tests check.
    """
    from benchharness.host import ENTRY_POINT_GROUP, PluginHost, PluginOptions

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        host = PluginHost(PluginOptions(entry_points=True, disabled=()))
    if names.name in host.techniques:
        plugin = host.techniques.entries[names.name].plugin
        raise HarnessError(
            f"the technique name {names.name!r} is taken by plugin {plugin!r} ({host.describe_plugin(plugin)}); "
            f"choose another name{uninstall_hint(host.sources.get(plugin))}"
        )
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry_point.name == names.name:
            distribution = entry_point.dist.name if entry_point.dist else None
            raise HarnessError(
                f"an installed plugin is already named {names.name!r} (entry point {entry_point.value!r} of "
                f"{distribution or 'an installed distribution'}); choose another name{uninstall_hint(distribution)}"
            )
    if importlib.util.find_spec(names.module) is not None:
        distribution = next(iter(metadata.packages_distributions().get(names.module, [])), None)
        raise HarnessError(
            f"a module named {names.module} is already importable here, and would be imported instead of the new package's; "
            f"choose another name{uninstall_hint(distribution)}"
        )


def uninstall_hint(distribution: str | None) -> str:
    """``, or uninstall it: pip uninstall DIST`` for a third-party distribution; nothing for built-ins and unknown sources."""
    if not distribution or distribution.startswith(("benchharness (", "registered inline", "--plugin ")):
        return ""
    return f", or uninstall it first: pip uninstall {distribution}"


def rendered_files(names: PluginNames) -> dict[str, str]:
    """The package's files: path relative to the package directory, and text."""
    placeholders = asdict(names)
    return {destination.format(**placeholders): Template(read_template(template)).substitute(placeholders) for template, destination in TEMPLATE_FILES.items()}


def read_template(filename: str) -> str:
    """The text of the template ``filename`` in ``templates/plugin/`` (package data of benchharness)."""
    return resources.files("benchharness").joinpath("templates", "plugin", filename).read_text(encoding="utf-8")


def next_steps(package: Path) -> list[str]:
    """The shell commands that install the new package and run its tests, starting with a ``cd`` into it."""
    try:
        shown = package.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        shown = package.resolve()
    return [f"cd {shlex.quote(str(shown))}", 'pip install -e ".[test]"', "pytest", "benchharness list plugins"]
