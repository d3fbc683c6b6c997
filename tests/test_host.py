"""The plugin host: built-ins, inline plugins, --plugin files, entry points, the block list, failures."""

from __future__ import annotations

import warnings

import subprocess
import sys
import textwrap
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import benchharness
from benchharness import Technique, hookimpl
from benchharness.cli import cli as cli_group
from benchharness.errors import PluginError
from benchharness.host import BUILTIN, DEFAULT_PLUGINS, PluginHost, PluginOptions
from tests.conftest import ROOT, TEST_PLUGINS


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
    """register_report_sections hands (title, render) pairs to the callback, the built-in sections' with their names."""
    host = bare_host(extra=(str(TEST_PLUGINS / "observer.py"),))
    sections = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        host.hooks.register_report_sections(register=lambda title, render, name=None, order=None: sections.append((title, render, name)))
    titles = {title: (render, name) for title, render, name in sections}
    assert titles["Observer"][0]([1, 2, 3]) == "<p>3 rows</p>"
    assert titles["Answers: what to ship"][1] == "answers"


def test_installed_plugins_stay_out_of_tests_unless_asked(installed_distribution, monkeypatch):
    """Under the test suite the default options skip entry points; outside it they load them."""
    import sys

    assert PluginOptions().entry_points is False
    assert "entry_point_technique" not in PluginHost(PluginOptions(disabled=())).techniques
    monkeypatch.delattr(sys, "_called_from_test")
    assert PluginOptions().entry_points is True
    assert "entry_point_technique" in PluginHost(PluginOptions(disabled=())).techniques


# ------------------------------------------------- the same plugin given twice


def test_the_same_plugin_given_twice_is_loaded_once(monkeypatch):
    """A --plugin given twice, or as two spellings of one file, is loaded once: no pluggy error, no duplicate warnings."""
    import os
    import warnings

    monkeypatch.chdir(ROOT)
    path = str(TEST_PLUGINS / "faulty.py")
    assert PluginOptions(extra=(path, path)).extra == (path,)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        host = bare_host(extra=(path, path, os.path.relpath(path)))
    assert host.failures == []
    assert [name for name, _ in host.plugin_rows()].count(path) == 1
    assert os.path.relpath(path) not in host.plugin_versions()
    assert host.techniques.entries["explode"].plugin == path


def test_resume_with_the_plugin_given_again(tmp_path):
    """`run --resume DIR --plugin P` after `run --plugin P` works: the stored and the given plugin are one."""
    plugin = str(TEST_PLUGINS / "offline_device.py")
    suite = tmp_path / "nowhere.toml"
    suite.write_text('models = ["small_cnn"]\ndevices = ["offline"]\n[data]\nname = "digits"\n[[techniques]]\nsteps = ["baseline"]\n')
    first = CliRunner().invoke(cli_group, ["run", str(suite), "--out", str(tmp_path / "runs"), "--plugin", plugin])
    assert first.exit_code == 0, first.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    resumed = CliRunner().invoke(cli_group, ["run", "--resume", str(run_dir), "--plugin", plugin])
    assert resumed.exit_code == 0, resumed.output
    assert "0 of 1 cells to run" in resumed.output


def test_plugin_files_with_the_same_file_name_keep_their_own_code(tmp_path):
    """Two --plugin files named alike in different folders are two modules: each item's fingerprint hashes its own file."""
    import hashlib

    paths = []
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        path = tmp_path / folder / "plugin.py"
        path.write_text(textwrap.dedent(f'''
            from benchharness import Technique, hookimpl

            class Named(Technique):
                NAME = "technique_{folder}"

            @hookimpl
            def register_techniques(register):
                register(Named())
        '''))
        paths.append(path)
    host = bare_host(extra=tuple(map(str, paths)))
    for folder, path in zip(("one", "two"), paths):
        fingerprint = host.techniques.entries[f"technique_{folder}"].fingerprint()
        assert fingerprint["source_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------- broken plugins are skipped


def only_failure(host: PluginHost, path: str):
    """The one failure of ``host``, which must be the plugin at ``path``, now unregistered."""
    assert [failure.name for failure in host.failures] == [path]
    assert not host.pm.has_plugin(path)
    assert path not in host.plugin_versions()
    assert "baseline" in host.techniques and "cpu" in host.probes
    return host.failures[0]


def test_misspelt_hook_skips_the_plugin_with_a_suggestion():
    """A hook name that is not a benchharness hook skips the whole plugin; the failure suggests the right name."""
    path = str(TEST_PLUGINS / "misspelt_hook.py")
    failure = only_failure(bare_host(extra=(path,)), path)
    assert failure.error == "hook 'register_technique' is not a benchharness hook; did you mean 'register_techniques'?"
    assert failure.source == f"--plugin {path}"
    assert str(failure) == f"plugin {path!r} (--plugin {path}) was skipped: {failure.error}"


def test_misspelt_hook_skips_all_the_plugin_registers():
    """The correct hooks of a plugin with a misspelt one contribute nothing either."""
    path = str(TEST_PLUGINS / "misspelt_hook.py")
    host = bare_host(extra=(path,))
    assert "misspelt_sibling_model" not in host.models and "misspelt_technique" not in host.techniques


def test_wrong_argument_name_skips_the_plugin():
    """A hook implementation asking for an argument the hook does not pass is named with the hook's arguments."""
    path = str(TEST_PLUGINS / "wrong_argument.py")
    host = bare_host(extra=(path,))
    failure = only_failure(host, path)
    assert failure.error == "hook 'register_techniques' passes (register), but register_techniques(reg) asks for 'reg'; rename the argument"
    assert "wrong_argument_technique" not in host.techniques


def test_item_without_name_skips_the_whole_plugin():
    """A technique without NAME skips everything its plugin registered, of every kind; nothing crashes."""
    path = str(TEST_PLUGINS / "nameless.py")
    host = bare_host(extra=(path, str(TEST_PLUGINS / "faulty.py")))
    failure = only_failure(host, path)
    assert "technique" in failure.error and "Nameless" in failure.error and "without a NAME" in failure.error
    assert "nameless_sibling" not in host.techniques and "nameless_sibling_data" not in host.datasets
    assert "explode" in host.techniques


def test_raising_register_hook_skips_the_plugin():
    """A register hook that raises skips its plugin, including what it registered before raising; the error says where."""
    path = str(TEST_PLUGINS / "raising_register.py")
    host = bare_host(extra=(path,))
    failure = only_failure(host, path)
    assert failure.error.startswith("register_techniques raised RuntimeError: register_techniques of raising_register fails on purpose")
    assert "raising_register.py:" in failure.error
    assert "half_registered" not in host.techniques


def test_plugin_calling_sys_exit_on_import_is_skipped():
    """SystemExit raised while importing a plugin is a failure of that plugin, not the end of the process."""
    path = str(TEST_PLUGINS / "exits_on_import.py")
    failure = only_failure(bare_host(extra=(path,)), path)
    assert failure.error.startswith("SystemExit: exits_on_import: usage: exits_on_import.py INPUT (at ")
    assert "exits_on_import.py:5)" in failure.error


def test_entry_point_failure_names_its_distribution(tmp_path, monkeypatch):
    """A broken entry-point plugin's failure names the plugin, its distribution and version, and the problem."""
    (tmp_path / "typo_plugin.py").write_text((TEST_PLUGINS / "misspelt_hook.py").read_text())
    info = tmp_path / "typo_dist-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: typo-dist\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text("[benchharness]\ntypo = typo_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    host = bare_host(entry_points=True)
    failure = only_failure(host, "typo")
    assert (failure.source, failure.version) == ("typo-dist", "0.3")
    assert str(failure) == "plugin 'typo' (distribution typo-dist 0.3) was skipped: " + failure.error
    assert "did you mean 'register_techniques'?" in failure.error


def test_runtime_hook_errors_are_warnings_and_other_plugins_still_run(tmp_path, monkeypatch):
    """A plugin whose command, report or cell hooks raise loads; each failing call is a warning, the other plugins' hooks still run."""
    from benchharness.api import Cell

    log = tmp_path / "events.jsonl"
    monkeypatch.setenv("BENCHHARNESS_TEST_OBSERVER_LOG", str(log))
    path = str(TEST_PLUGINS / "raising_runtime.py")
    host = bare_host(extra=(str(TEST_PLUGINS / "observer.py"), path))
    assert host.failures == [] and "still_here" in host.techniques
    cell = Cell("m/t/cpu/r0", "m", "t", [], "cpu", 0, 0)
    group = click.Group("test")
    sections = []
    with pytest.warns(UserWarning) as caught:
        host.hooks.register_commands(cli=group)
        host.hooks.register_report_sections(register=lambda title, render: sections.append(title))
        host.hooks.before_cell(cell=cell, context={"run_dir": tmp_path})
        host.hooks.after_cell(cell=cell, record={"status": "ok"})
    messages = [str(warning.message) for warning in caught]
    for hook in ("register_commands", "register_report_sections", "before_cell", "after_cell"):
        expected = f"plugin {path!r} (--plugin {path}) failed in {hook}: RuntimeError: {hook} of raising_runtime fails on purpose (at {path}:"
        assert [message for message in messages if message.startswith(expected) and message.endswith("; ignored")]
    assert "hello" in group.commands and sections == ["Observer"]
    assert len(log.read_text().splitlines()) == 2


def test_inline_plugin_with_a_misspelt_hook_is_refused():
    """Registering a broken plugin inline raises PluginError with the problem and leaves the host as it was."""

    class Misspelt:
        @hookimpl
        def register_model(self, register):
            pass

    host = bare_host()
    plugin = Misspelt()
    with pytest.raises(PluginError, match=r"plugin 'misspelt' \(registered inline\) was skipped: hook 'register_model' is not a benchharness hook; did you mean 'register_models'\?"):
        host.register(plugin, name="misspelt")
    assert not host.pm.is_registered(plugin) and host.failures == []
    assert "baseline" in host.techniques


def test_inline_plugin_with_a_taken_name_is_refused():
    """An inline plugin under the name of a loaded one is a PluginError, not a pluggy ValueError."""
    host = bare_host()
    with pytest.raises(PluginError, match="'benchharness.plugins.baseline' is already loaded"):
        host.register(InlinePlugin(), name="benchharness.plugins.baseline")
    assert "inline_technique" not in host.techniques


@pytest.mark.parametrize(
    "attributes, problem",
    [
        ({"NAME": "bad_config", "Config": dict}, "its Config is not a pydantic model"),
        ({"NAME": ""}, "without a NAME"),
    ],
)
def test_invalid_technique_attributes_are_refused(attributes, problem):
    """A technique's Config and NAME are checked when it is registered, not when a suite first uses it."""
    technique = type("Invalid", (Technique,), attributes)

    class Plugin:
        @hookimpl
        def register_techniques(self, register):
            register(technique)

    host = bare_host()
    with pytest.raises(PluginError, match=problem):
        host.register(Plugin(), name="invalid")


# ------------------------------------------------- hints for suites that need a skipped plugin


def test_unknown_name_hint_names_the_plugins_that_failed():
    """When a suite names something missing, the hint says which plugins failed to load, and why."""
    from benchharness.errors import SuiteError
    from benchharness.suite import load_suite_text

    path = str(TEST_PLUGINS / "nameless.py")
    host = bare_host(extra=(path,))
    hint = host.techniques.suggest("nameless_sibling")
    assert f"plugin {path!r} (--plugin {path}) was skipped: " in hint and "without a NAME" in hint
    text = 'models = ["small_cnn"]\ndevices = ["cpu"]\n[data]\nname = "digits"\n[[techniques]]\nsteps = ["nameless_sibling"]\n'
    with pytest.raises(SuiteError) as raised:
        load_suite_text(text, "needs.toml", host)
    assert "unknown technique 'nameless_sibling'" in str(raised.value) and f"{path!r}" in str(raised.value)


def test_unknown_name_hint_names_blocked_plugins(monkeypatch):
    """A plugin kept out by BENCHHARNESS_DISABLE_PLUGINS is named in the hint, with the variable."""
    monkeypatch.setenv("BENCHHARNESS_DISABLE_PLUGINS", "benchharness.plugins.baseline")
    host = PluginHost(PluginOptions(entry_points=False))
    hint = host.techniques.suggest("baseline")
    assert hint.startswith("plugin 'benchharness.plugins.baseline' is disabled by BENCHHARNESS_DISABLE_PLUGINS; remove it from that variable"), hint
    assert "disabled" not in bare_host().techniques.suggest("nothing_like_it")
    other = host.techniques.suggest("quantise")
    assert other.startswith("did you mean 'quantize'?") and "'benchharness.plugins.baseline' is disabled" in other


# ------------------------------------------------- the command line with broken plugins


SUITE_NEEDING = 'models = ["small_cnn"]\ndevices = ["cpu"]\n[data]\nname = "digits"\n[[techniques]]\nsteps = ["{technique}"]\n'


@pytest.mark.parametrize("plugin", ["misspelt_hook.py", "wrong_argument.py", "nameless.py", "raising_register.py", "exits_on_import.py"])
def test_cli_goes_on_without_a_broken_plugin(plugin, tmp_path):
    """`list` and `validate` of a suite that does not need the broken plugin work; the plugin is named as skipped."""
    path = str(TEST_PLUGINS / plugin)
    listed = CliRunner().invoke(cli_group, ["list", "plugins", "--plugin", path], terminal_width=400, env={"COLUMNS": "400"})
    assert listed.exit_code == 0, listed.output
    assert plugin in listed.output and "benchharness.plugins.baseline" in listed.output
    suite = tmp_path / "fine.toml"
    suite.write_text(SUITE_NEEDING.format(technique="baseline"))
    validated = CliRunner().invoke(cli_group, ["validate", str(suite), "--plugin", path])
    assert validated.exit_code == 0, validated.output


def test_cli_exits_2_when_the_suite_needs_the_broken_plugin(tmp_path):
    """A suite naming a technique of a skipped plugin exits 2, and the message says the plugin was skipped and why."""
    path = str(TEST_PLUGINS / "nameless.py")
    suite = tmp_path / "needs.toml"
    suite.write_text(SUITE_NEEDING.format(technique="nameless_sibling"))
    result = CliRunner().invoke(cli_group, ["validate", str(suite), "--plugin", path], terminal_width=400, env={"COLUMNS": "400"})
    assert result.exit_code == 2
    assert "unknown technique 'nameless_sibling'" in result.output and "nameless.py" in result.output and "without a NAME" in result.output


@pytest.fixture
def broken_distribution(tmp_path):
    """An installed distribution (on PYTHONPATH) with a misspelt-hook plugin and one whose later hooks raise."""
    for module, source in (("typo_plugin", "misspelt_hook.py"), ("noisy_plugin", "raising_runtime.py")):
        (tmp_path / f"{module}.py").write_text((TEST_PLUGINS / source).read_text())
    info = tmp_path / "broken_dist-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-dist\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[benchharness]\ntypo = typo_plugin\nnoisy = noisy_plugin\n")
    return tmp_path


def run_console(args: list[str], pythonpath: Path) -> subprocess.CompletedProcess:
    """Run `benchharness ARGS` through the console entry point (cli.main) in a fresh process that loads entry points."""
    import os

    env = {key: value for key, value in os.environ.items() if key != "BENCHHARNESS_DISABLE_PLUGINS"}
    env.update(PYTHONPATH=str(pythonpath), COLUMNS="400")
    return subprocess.run([sys.executable, "-m", "benchharness.cli", *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("args", [["--help"], ["--version"]])
def test_console_help_and_version_survive_broken_entry_points(broken_distribution, args):
    """`--help` and `--version` work with installed plugins that are broken; the register_commands failure is a warning."""
    result = run_console(args, broken_distribution)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert ("Usage:" in result.stdout) if args == ["--help"] else (benchharness.__version__ in result.stdout)
    assert "plugin 'noisy' (distribution broken-dist 0.1) failed in register_commands" in result.stderr


def test_console_list_names_the_broken_entry_point(broken_distribution):
    """`list plugins` shows the skipped plugin and its problem; the working one is listed."""
    result = run_console(["list", "plugins"], broken_distribution)
    assert result.returncode == 0, result.stderr
    assert "typo" in result.stdout and "'register_technique' is not a benchharness hook" in result.stdout
    assert "noisy" in result.stdout


def test_a_plugin_cannot_replace_or_remove_existing_commands():
    """register_commands may add commands; replacing or removing one already there is undone with a warning."""
    path = str(TEST_PLUGINS / "command_thief.py")
    host = bare_host(extra=(path,))
    group = click.Group("test")
    run, listing = click.Command("run", callback=lambda: click.echo("real run")), click.Command("list", callback=lambda: None)
    group.add_command(run)
    group.add_command(listing)
    with pytest.warns(UserWarning, match=rf"plugin {path!r} \(--plugin {path}\) replaced or removed the command\(s\) 'run', 'list' in register_commands; kept the original ones"):
        host.hooks.register_commands(cli=group)
    assert group.commands["run"] is run and group.commands["list"] is listing
    assert CliRunner().invoke(group, ["extra"]).output.strip() == "extra from the command thief"


def test_entry_point_named_like_a_loaded_plugin_is_skipped(tmp_path, monkeypatch):
    """An entry point whose name a loaded plugin already has is skipped with a failure, not a pluggy error."""
    (tmp_path / "impostor_plugin.py").write_text((TEST_PLUGINS / "offline_device.py").read_text())
    info = tmp_path / "impostor-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: impostor\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[benchharness]\nbenchharness.plugins.baseline = impostor_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    host = bare_host(entry_points=True)
    (failure,) = host.failures
    assert str(failure) == (
        "plugin 'benchharness.plugins.baseline' (distribution impostor 1.0) was skipped: a plugin named "
        "'benchharness.plugins.baseline' is already loaded (benchharness (built-in)); give this one another name"
    )
    assert "offline" not in host.probes and "baseline" in host.techniques


def test_unreadable_entry_points_skip_only_their_distribution(installed_distribution):
    """A distribution whose entry_points.txt cannot be decoded is a failure; other distributions' plugins still load."""
    info = installed_distribution / "garbled-2.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: garbled\nVersion: 2.0\n")
    (info / "entry_points.txt").write_bytes(b"[benchharness]\ngarbled = garbled_plugin\xff\xfe\n")
    host = bare_host(entry_points=True)
    assert "entry_point_technique" in host.techniques and "baseline" in host.techniques
    garbled = [failure for failure in host.failures if failure.name == "garbled"]
    assert len(garbled) == 1
    assert str(garbled[0]).startswith("plugin 'garbled' (distribution garbled 2.0) was skipped: its entry points cannot be read: UnicodeDecodeError")
    assert garbled[0].error.endswith("; reinstall the distribution")
