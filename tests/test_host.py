"""The plugin host: built-ins, inline plugins, --plugin files, entry points, the block list, failures."""

from __future__ import annotations

import textwrap

import click
import pytest
from click.testing import CliRunner

import benchharness
from benchharness import Technique, hookimpl
from benchharness.errors import PluginError
from benchharness.host import BUILTIN, DEFAULT_PLUGINS, PluginHost, PluginOptions
from tests.conftest import TEST_PLUGINS


class InlineTechnique(Technique):
    """A technique registered by an inline test plugin."""

    NAME = "inline_technique"
    DESCRIPTION = "test"


class InlinePlugin:
    """An inline plugin object registering one technique."""

    @hookimpl
    def register_techniques(self, register):
        register(InlineTechnique)


def bare_host(**options) -> PluginHost:
    """A host without entry points and without the environment's block list."""
    options.setdefault("entry_points", False)
    options.setdefault("disabled", ())
    return PluginHost(PluginOptions(**options))


def test_builtins_are_registered_like_plugins(host):
    """Every built-in module is a registered plugin and its items carry their provenance."""
    assert [name for name, _ in host.plugin_rows()][: len(DEFAULT_PLUGINS)] == list(DEFAULT_PLUGINS)
    assert "baseline" in host.techniques
    assert {"small_cnn", "mlp", "resnet18_cifar", "mobilenetv2_cifar", "torchvision"} <= set(host.models.names())
    assert {"digits", "cifar10", "synthetic"} <= set(host.datasets.names())
    assert set(host.devices()) >= {"cpu", "cuda"}
    entry = host.techniques.entries["baseline"]
    assert entry.plugin == "benchharness.plugins.baseline"
    assert entry.distribution == BUILTIN
    assert entry.version == benchharness.__version__


def test_inline_plugin_registers_and_unregisters():
    """An inline plugin's technique appears once registered and disappears once unregistered."""
    host = bare_host()
    plugin = InlinePlugin()
    host.register(plugin, name="inline")
    try:
        assert "inline_technique" in host.techniques
        assert host.techniques.entries["inline_technique"].plugin == "inline"
        assert host.plugin_versions()["inline"] is None
    finally:
        host.unregister(plugin)
    assert "inline_technique" not in host.techniques


def test_plugin_file_is_loaded():
    """--plugin FILE.py registers what the file registers, with its source recorded."""
    path = str(TEST_PLUGINS / "faulty.py")
    host = bare_host(extra=(path,))
    assert {"explode", "abort", "hang", "refuse", "identity"} <= set(host.techniques.names())
    assert host.techniques.entries["explode"].distribution == f"--plugin {path}"
    assert host.techniques.entries["explode"].version is None and host.plugin_versions()[path] is None


def test_plugin_module_name_is_loaded(tmp_path, monkeypatch):
    """--plugin MODULE imports an importable module by name."""
    (tmp_path / "my_module_plugin.py").write_text(textwrap.dedent('''
        from benchharness import Technique, hookimpl

        class ModuleTechnique(Technique):
            NAME = "module_technique"

        @hookimpl
        def register_techniques(register):
            register(ModuleTechnique())
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    host = bare_host(extra=("my_module_plugin",))
    assert "module_technique" in host.techniques


def test_broken_plugin_is_reported_and_skipped():
    """A plugin that fails to import is named in failures; everything else still loads."""
    path = str(TEST_PLUGINS / "broken.py")
    host = bare_host(extra=(path, str(TEST_PLUGINS / "faulty.py")))
    assert [failure.name for failure in host.failures] == [path]
    assert "broken on purpose" in host.failures[0].error
    assert "explode" in host.techniques and "baseline" in host.techniques


def test_missing_plugin_file_is_reported():
    """A --plugin path that does not exist is a reported failure, not a crash."""
    host = bare_host(extra=("/nonexistent/plugin.py",))
    assert "no such plugin file" in host.failures[0].error


def test_block_list_from_environment(monkeypatch):
    """BENCHHARNESS_DISABLE_PLUGINS keeps the named plugins out."""
    monkeypatch.setenv("BENCHHARNESS_DISABLE_PLUGINS", "benchharness.plugins.cuda_probe, benchharness.plugins.baseline")
    host = PluginHost(PluginOptions(entry_points=False))
    assert "cuda" not in host.probes
    assert "baseline" not in host.techniques
    assert "cpu" in host.probes


@pytest.fixture
def installed_distribution(tmp_path, monkeypatch):
    """A fake installed distribution declaring one good and one broken entry point."""
    (tmp_path / "fake_dist_plugin.py").write_text(textwrap.dedent('''
        from benchharness import Technique, hookimpl

        class EntryPointTechnique(Technique):
            NAME = "entry_point_technique"

        @hookimpl
        def register_techniques(register):
            register(EntryPointTechnique())
    '''))
    info = tmp_path / "fake_dist-1.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-dist\nVersion: 1.2\n")
    (info / "entry_points.txt").write_text("[benchharness]\nfake_plugin = fake_dist_plugin\nbad_plugin = module_that_does_not_exist_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_entry_point_plugins(installed_distribution):
    """Entry points in the 'benchharness' group load, with their distribution; a broken one is skipped."""
    host = bare_host(entry_points=True)
    assert host.techniques.entries["entry_point_technique"].distribution == "fake-dist"
    assert host.techniques.entries["entry_point_technique"].version == "1.2"
    assert host.plugin_versions()["fake_plugin"] == "1.2"
    assert [failure.name for failure in host.failures] == ["bad_plugin"]


def test_entry_points_off_under_tests(installed_distribution):
    """With entry points off (the default under tests), installed plugins are not loaded."""
    host = bare_host(entry_points=False)
    assert "entry_point_technique" not in host.techniques


def test_entry_point_blocked_by_name(installed_distribution):
    """The block list applies to entry points too."""
    host = bare_host(entry_points=True, disabled=("fake_plugin", "bad_plugin"))
    assert "entry_point_technique" not in host.techniques
    assert host.failures == []


def test_registering_a_non_technique_is_an_error():
    """register() with the wrong type names the plugin."""

    class Wrong:
        @hookimpl
        def register_techniques(self, register):
            register(object())

    host = bare_host()
    plugin = Wrong()
    try:
        with pytest.raises(PluginError, match="wrong_plugin"):
            host.register(plugin, name="wrong_plugin")
    finally:
        if host.pm.is_registered(plugin):
            host.pm.unregister(plugin)


def test_duplicate_name_keeps_the_first():
    """A second technique with a taken name is ignored with a warning naming both plugins."""

    class Duplicate:
        @hookimpl
        def register_techniques(self, register):
            class Baseline(Technique):
                NAME = "baseline"

            register(Baseline())

    host = bare_host()
    plugin = Duplicate()
    try:
        with pytest.warns(UserWarning, match="registered it first"):
            host.register(plugin, name="duplicate")
        assert host.techniques.entries["baseline"].plugin == "benchharness.plugins.baseline"
    finally:
        host.unregister(plugin)


def test_observing_hooks_accept_fewer_arguments(tmp_path, monkeypatch):
    """before_cell/after_cell are called with keywords; an implementation may take fewer."""
    from benchharness.api import Cell

    log = tmp_path / "events.jsonl"
    monkeypatch.setenv("BENCHHARNESS_TEST_OBSERVER_LOG", str(log))
    host = bare_host(extra=(str(TEST_PLUGINS / "observer.py"),))
    cell = Cell("m/t/cpu/r0", "m", "t", [], "cpu", 0, 0)
    host.hooks.before_cell(cell=cell, context={"run_dir": tmp_path})
    host.hooks.after_cell(cell=cell, record={"status": "ok"})
    assert log.read_text().splitlines() == [
        '{"event": "before_cell", "cell": "m/t/cpu/r0"}',
        '{"event": "after_cell", "cell": "m/t/cpu/r0", "status": "ok"}',
    ]


def test_register_commands_adds_a_command():
    """register_commands lets a plugin add a CLI command."""
    host = bare_host(extra=(str(TEST_PLUGINS / "observer.py"),))
    group = click.Group("test")
    host.hooks.register_commands(cli=group)
    result = CliRunner().invoke(group, ["hello"])
    assert result.exit_code == 0
    assert result.output.strip() == "hello from the observer plugin"


def test_register_report_sections():
    """register_report_sections hands (title, render) pairs to the callback."""
    host = bare_host(extra=(str(TEST_PLUGINS / "observer.py"),))
    sections = []
    host.hooks.register_report_sections(register=lambda title, render: sections.append((title, render)))
    assert [title for title, _ in sections] == ["Observer"]
    assert sections[0][1]([1, 2, 3]) == "<p>3 rows</p>"


def test_installed_plugins_stay_out_of_tests_unless_asked(installed_distribution, monkeypatch):
    """Under the test suite the default options skip entry points; outside it they load them."""
    import sys

    assert PluginOptions().entry_points is False
    assert "entry_point_technique" not in PluginHost(PluginOptions(disabled=())).techniques
    monkeypatch.delattr(sys, "_called_from_test")
    assert PluginOptions().entry_points is True
    assert "entry_point_technique" in PluginHost(PluginOptions(disabled=())).techniques
