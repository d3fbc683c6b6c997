"""Suites: loading, defaults, and errors that name the file, the key path, what was expected and what was found."""

from __future__ import annotations

import hashlib
from contextlib import contextmanager

import pytest
from click.testing import CliRunner
from pydantic import Field

from benchharness import StrictConfig, Technique, hookimpl
from benchharness.cli import cli
from benchharness.errors import SuiteError
from benchharness.host import PluginHost, PluginOptions
from benchharness.matrix import expand
from benchharness.suite import MeasureSettings, RunSettings, TrainBudget, load_suite, load_suite_text
from tests.conftest import ROOT

QUICK = ROOT / "suites" / "quick.toml"
MINIMAL = 'models = ["small_cnn"]\n[data]\nname = "digits"\n'


def problems_of(text: str, host: PluginHost) -> list:
    """The problems of an invalid suite text (fails the test when the text is valid)."""
    with pytest.raises(SuiteError) as caught:
        load_suite_text(text, "suite.toml", host)
    return caught.value.problems


def only_problem(text: str, host: PluginHost):
    """The single problem of an invalid suite text."""
    problems = problems_of(text, host)
    assert len(problems) == 1, problems
    return problems[0]


def invoke(*args: str):
    """Run the CLI in-process with a wide terminal, so that tables do not truncate cell ids."""
    return CliRunner().invoke(cli, list(args), terminal_width=250, env={"COLUMNS": "250"})


# ---------------------------------------------------------------- a test-only technique with a Config


class ShrinkConfig(StrictConfig):
    """Parameters of the test technique."""

    amount: float = Field(0.5, ge=0, le=1, description="Share of something to shrink.")


class Shrink(Technique):
    """A technique that exists only to check that suites validate step parameters with its Config."""

    NAME = "shrink_for_tests"
    Config = ShrinkConfig

    def apply(self, model, config, context):
        return model


class ShrinkPlugin:
    """Registers :class:`Shrink`."""

    @hookimpl
    def register_techniques(self, register):
        register(Shrink())


@contextmanager
def registered(host: PluginHost, plugin: object, name: str):
    """Register ``plugin`` inline for the duration of a ``with`` block; always unregister it."""
    host.register(plugin, name=name)
    try:
        yield host
    finally:
        host.unregister(plugin)


@pytest.fixture
def fresh_host() -> PluginHost:
    """A host of its own (built-ins only), so that inline registrations never leak into the session host."""
    return PluginHost(PluginOptions(entry_points=False, disabled=()))


# ---------------------------------------------------------------- valid suites


def test_quick_suite_loads(host):
    """The bundled quick suite is valid; unspecified settings take their defaults; the hash is the text's."""
    suite = load_suite(QUICK, host)
    text = QUICK.read_text(encoding="utf-8")
    assert suite.name == "quick"
    assert suite.source == str(QUICK)
    assert suite.text == text
    assert suite.sha256 == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert suite.spec.models == ["small_cnn", "mlp"]
    assert suite.spec.train.epochs == 12 and suite.spec.train.optimizer == "adam"
    assert suite.spec.train.momentum == TrainBudget().momentum  # not in the file: default
    assert suite.spec.measure.max_iterations == MeasureSettings().max_iterations
    assert suite.spec.run.cell_timeout_s == 300 and suite.spec.run.cache is True
    assert len(suite.step_configs) == len(suite.spec.techniques) == 13
    assert suite.step_configs[1]["prune"]["amount"] == 0.5
    assert suite.step_configs[6]["distill"]["teacher"] == "small_cnn"
    assert suite.data_config == {"test_fraction": 0.2}


def test_minimal_suite_defaults_and_name_from_stem(host, write_suite):
    """A suite naming only models and data gets every default, and the file's stem as its name."""
    path = write_suite(MINIMAL, "my-suite.toml")
    suite = load_suite(path, host)
    assert suite.name == "my-suite"
    assert suite.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    spec = suite.spec
    assert spec.train == TrainBudget()
    assert spec.measure == MeasureSettings()
    assert spec.run == RunSettings()
    assert spec.devices == ["cpu"]
    assert spec.seed == 0 and spec.repeats == 1
    assert [entry.steps for entry in spec.techniques] == [["baseline"]]
    assert [entry.label for entry in spec.techniques] == ["baseline"]
    assert suite.step_configs == [{"baseline": {}}]
    assert spec.include == [] and spec.exclude == []


def test_explicit_name_wins_over_the_stem(host, write_suite):
    """A `name` in the file is the suite's name, whatever the file is called."""
    suite = load_suite(write_suite('name = "mine"\n' + MINIMAL, "other.toml"), host)
    assert suite.name == "mine"


# ---------------------------------------------------------------- syntax and structure


def test_toml_syntax_error_has_line_and_file(host, write_suite):
    """A TOML syntax error is a SuiteError with the line number; its text names the file."""
    path = write_suite('seed = 1\nrepeats = = 2\nmodels = ["mlp"]\n', "broken.toml")
    with pytest.raises(SuiteError) as caught:
        load_suite(path, host)
    error = caught.value
    assert error.file == str(path)
    [problem] = error.problems
    assert problem.line == 2
    assert "TOML syntax error" in problem.message
    assert str(path) in str(error)
    assert "line 2" in str(error)


def test_missing_file_is_a_suite_error(host, tmp_path):
    """A path that cannot be read is a SuiteError naming the file."""
    with pytest.raises(SuiteError) as caught:
        load_suite(tmp_path / "nope.toml", host)
    assert "nope.toml" in str(caught.value)
    assert "cannot read" in str(caught.value)


def test_missing_required_key(host):
    """Leaving out `models` says that the key is required."""
    problem = only_problem('[data]\nname = "digits"\n', host)
    assert problem.path == "models"
    assert "required" in problem.message


@pytest.mark.parametrize(
    "text, path, suggestion",
    [
        ('modles = ["mlp"]\n' + MINIMAL, "modles", "models"),
        (MINIMAL + "[train]\nepoch = 3\n", "train.epoch", "epochs"),
        (MINIMAL + "[measure]\nbatch_size = [1]\n", "measure.batch_size", "batch_sizes"),
        (MINIMAL + "[run]\ncell_timeout = 3\n", "run.cell_timeout", "cell_timeout_s"),
        (MINIMAL + '[[include]]\nmodle = "mlp"\n', "include[0].modle", "model"),
        (MINIMAL + "test_fracton = 0.3\n", "data.test_fracton", "test_fraction"),
    ],
)
def test_unknown_key_suggests_the_closest(host, text, path, suggestion):
    """An unknown key anywhere is reported at its key path with the closest valid key."""
    problem = only_problem(text, host)
    assert problem.path == path
    assert problem.message == "unknown key"
    assert problem.hint == f"did you mean {suggestion!r}?"
    assert f"{path}: unknown key; did you mean {suggestion!r}?" in str(problem)


def test_unknown_key_without_a_close_match_lists_the_valid_keys(host):
    """When nothing is close, the hint lists the section's keys."""
    problem = only_problem(MINIMAL + "[train]\nzzzzzz = 1\n", host)
    assert problem.path == "train.zzzzzz"
    assert "valid keys:" in problem.hint and "epochs" in problem.hint and "optimizer" in problem.hint


@pytest.mark.parametrize(
    "text, path, expected, found",
    [
        (MINIMAL + "[train]\nepochs = -1\n", "train.epochs", "greater than or equal to 0", "-1"),
        (MINIMAL + '[train]\noptimizer = "sgdd"\n', "train.optimizer", "'adamw', 'adagrad' or 'rmsprop'", "'sgdd'"),
        (MINIMAL + '[train]\nlr = "fast"\n', "train.lr", "valid number", "'fast'"),
        (MINIMAL + "[measure]\nwarmup = 1.5\n", "measure.warmup", "valid integer", "1.5"),
        (MINIMAL + "[run]\ncell_timeout_s = 0\n", "run.cell_timeout_s", "greater than 0", "0"),
        ("repeats = 0\n" + MINIMAL, "repeats", "greater than or equal to 1", "0"),
        ('models = "mlp"\n[data]\nname = "digits"\n', "models", "valid list", "'mlp'"),
        ('models = []\n[data]\nname = "digits"\n', "models", "at least 1 item", "[]"),
        (MINIMAL + "test_fraction = 2\n", "data.test_fraction", "less than 1", "2"),
        (MINIMAL + '[[techniques]]\nsteps = ["prune"]\nprune = { amount = 1.0 }\n', "techniques[0].prune.amount", "less than 1", "1.0"),
        (MINIMAL + '[[techniques]]\nsteps = ["prune"]\nprune = { method = "random" }\n', "techniques[0].prune.method", "'magnitude' or 'channels'", "'random'"),
    ],
)
def test_wrong_type_or_range_names_expected_and_found(host, text, path, expected, found):
    """A value of the wrong type or out of range is reported at its path with what was expected and found."""
    problem = only_problem(text, host)
    assert problem.path == path
    assert problem.message.startswith("expected: ")
    assert expected in problem.message
    assert problem.message.endswith(f"; found {found}")


def test_batch_size_below_one_names_the_key_and_the_value(host):
    """The problem with a batch size of 0 should point at measure.batch_sizes and show the bad value only."""
    problem = only_problem(MINIMAL + "[measure]\nbatch_sizes = [32, 0]\n", host)
    assert problem.path.startswith("measure.batch_sizes")
    assert "{" not in problem.message


def test_min_iterations_above_max_iterations_is_rejected(host):
    """A minimum sample count above the maximum cannot be honoured, so the suite should be rejected."""
    problems_of(MINIMAL + "[measure]\nmin_iterations = 100\nmax_iterations = 10\n", host)


def test_a_key_named_params_is_not_a_back_door(host):
    """`params` in a [[techniques]] entry is neither 'name', 'steps' nor a step, so it should be an unknown key."""
    problem = only_problem(MINIMAL + '[[techniques]]\nsteps = ["prune"]\nparams = { prune = { amount = 0.9 } }\n', host)
    assert problem.path == "techniques[0].params"


# ---------------------------------------------------------------- names looked up among the plugins


@pytest.mark.parametrize(
    "text, path, message, hint",
    [
        ('models = ["small_cn"]\n[data]\nname = "digits"\n', "models[0]", "unknown model 'small_cn'", "did you mean 'small_cnn'?"),
        (MINIMAL + '[[techniques]]\nsteps = ["baselin"]\n', "techniques[0].steps[0]", "unknown technique 'baselin'", "did you mean 'baseline'?"),
        ('models = ["mlp"]\n[data]\nname = "digit"\n', "data.name", "unknown data set 'digit'", "did you mean 'digits'?"),
        ('devices = ["cpuu"]\n' + MINIMAL, "devices[0]", "unknown device 'cpuu'", "did you mean 'cpu'?"),
        ('models = ["small_cnn:foo"]\n[data]\nname = "digits"\n', "models[0]", "takes no variant", "write 'small_cnn'"),
    ],
)
def test_misspelt_names_suggest_the_closest(host, text, path, message, hint):
    """A name that no plugin registered is reported at its path with the closest registered name."""
    problem = only_problem(text, host)
    assert problem.path == path
    assert message in problem.message
    assert problem.hint == hint


def test_unknown_name_far_from_any_lists_the_registered_ones(host):
    """When no registered name is close, the hint lists them all."""
    problem = only_problem(MINIMAL + '[[techniques]]\nsteps = ["zzzzzzzz"]\n', host)
    assert problem.path == "techniques[0].steps[0]"
    assert "registered techniques:" in problem.hint and "baseline" in problem.hint and "prune" in problem.hint


def test_torchvision_variants(host):
    """torchvision needs a variant; a misspelt one suggests the closest torchvision model."""
    problems = problems_of('models = ["torchvision:resnet5O", "torchvision", "torchvision:resnet50"]\n[data]\nname = "digits"\n', host)
    assert [problem.path for problem in problems] == ["models[0]", "models[1]"]
    typo, bare = problems
    assert "unknown torchvision model 'resnet5O'" in typo.message
    assert typo.hint == "did you mean 'torchvision:resnet50'?"
    assert "needs a variant" in bare.message
    assert bare.hint.startswith("write e.g. 'torchvision:")


def test_step_parameters_for_a_step_not_in_the_pipeline(host):
    """A parameter table named after a technique that is not a step of the pipeline is an unknown key."""
    problem = only_problem(MINIMAL + '[[techniques]]\nsteps = ["baseline"]\nprune = { amount = 0.5 }\n', host)
    assert problem.path == "techniques[0].prune"
    assert "unknown key" in problem.message
    assert "baseline" in problem.hint


def test_step_parameter_typo_suggests_the_step(host):
    """A misspelt step table suggests the step it was probably meant for."""
    problem = only_problem(MINIMAL + '[[techniques]]\nsteps = ["prune"]\nprnue = { amount = 0.5 }\n', host)
    assert problem.path == "techniques[0].prnue"
    assert problem.hint == "did you mean 'prune'?"


def test_step_parameters_must_be_a_table(host):
    """A step's parameters are a table, not a scalar."""
    problem = only_problem(MINIMAL + '[[techniques]]\nsteps = ["prune"]\nprune = 0.5\n', host)
    assert problem.path == "techniques[0].prune"
    assert "expected a table" in problem.message and "found 0.5" in problem.message


def test_technique_check_suite_is_consulted(host):
    """A technique's own check of the suite is reported at its step (distill's teacher must be a model of the suite)."""
    problem = only_problem('models = ["mlp"]\n[data]\nname = "digits"\n[[techniques]]\nsteps = ["distill"]\ndistill = { teacher = "small_cnn" }\n', host)
    assert problem.path == "techniques[0].distill"
    assert "small_cnn" in problem.message


# ---------------------------------------------------------------- a plugin's Config validates its step's parameters


def test_inline_technique_config_range(fresh_host):
    """An out-of-range parameter of an inline-registered technique is reported under its step with expected/found."""
    with registered(fresh_host, ShrinkPlugin(), "shrink-test-plugin") as host:
        problem = only_problem(MINIMAL + '[[techniques]]\nsteps = ["shrink_for_tests"]\nshrink_for_tests = { amount = 1.5 }\n', host)
    assert problem.path == "techniques[0].shrink_for_tests.amount"
    assert "less than or equal to 1" in problem.message
    assert problem.message.endswith("found 1.5")


def test_inline_technique_config_unknown_key(fresh_host):
    """An unknown parameter of an inline-registered technique is rejected, with the closest field as hint."""
    with registered(fresh_host, ShrinkPlugin(), "shrink-test-plugin") as host:
        problem = only_problem(MINIMAL + '[[techniques]]\nsteps = ["shrink_for_tests"]\nshrink_for_tests = { amout = 0.2 }\n', host)
    assert problem.path == "techniques[0].shrink_for_tests.amout"
    assert problem.message == "unknown key"
    assert problem.hint == "did you mean 'amount'?"


def test_inline_technique_config_reaches_the_cells(fresh_host):
    """A valid parameter is validated into step_configs (defaults filled) and handed to each cell's Step."""
    text = (
        MINIMAL
        + '[[techniques]]\nname = "shrunk"\nsteps = ["shrink_for_tests", "prune"]\nshrink_for_tests = { amount = 0.25 }\nprune = { amount = 0.3 }\n'
        + '[[techniques]]\nsteps = ["shrink_for_tests"]\n'
    )
    with registered(fresh_host, ShrinkPlugin(), "shrink-test-plugin") as host:
        suite = load_suite_text(text, "suite.toml", host)
    assert suite.step_configs[0]["shrink_for_tests"] == {"amount": 0.25}
    assert suite.step_configs[0]["prune"]["amount"] == 0.3
    assert suite.step_configs[1] == {"shrink_for_tests": {"amount": 0.5}}
    first, second = expand(suite)
    assert [(step.technique, step.config) for step in first.steps] == [
        ("shrink_for_tests", {"amount": 0.25}),
        ("prune", suite.step_configs[0]["prune"]),
    ]
    assert second.technique == "shrink_for_tests"
    assert second.steps[0].config == {"amount": 0.5}


def test_unregistered_technique_is_unknown_again(fresh_host):
    """After the plugin is unregistered its technique is no longer accepted."""
    text = MINIMAL + '[[techniques]]\nsteps = ["shrink_for_tests"]\n'
    with registered(fresh_host, ShrinkPlugin(), "shrink-test-plugin") as host:
        load_suite_text(text, "suite.toml", host)
    assert "shrink_for_tests" not in fresh_host.techniques
    problem = only_problem(text, fresh_host)
    assert problem.path == "techniques[0].steps[0]"


# ---------------------------------------------------------------- duplicates, empty matrix, many problems


def test_duplicates_are_errors(host):
    """Duplicate models, devices and technique labels would give colliding cell ids."""
    text = (
        'models = ["mlp", "small_cnn", "mlp"]\ndevices = ["cpu", "cpu"]\n[data]\nname = "digits"\n'
        '[[techniques]]\nsteps = ["prune"]\n[[techniques]]\nsteps = ["prune"]\n'
    )
    problems = {problem.path: problem for problem in problems_of(text, host)}
    assert set(problems) == {"models[2]", "devices[1]", "techniques[1]"}
    assert "duplicate model 'mlp'" in problems["models[2]"].message
    assert "duplicate device 'cpu'" in problems["devices[1]"].message
    assert "duplicate technique 'prune'" in problems["techniques[1]"].message
    assert problems["techniques[1]"].hint == "give each pipeline a distinct 'name'"


def test_a_name_equal_to_another_pipelines_default_label_is_a_duplicate(host):
    """name = 'baseline' collides with the unnamed pipeline whose steps are ['baseline']."""
    problem = only_problem(MINIMAL + '[[techniques]]\nsteps = ["baseline"]\n[[techniques]]\nname = "baseline"\nsteps = ["prune"]\n', host)
    assert problem.path == "techniques[1]"
    assert "duplicate" in problem.message


def test_same_steps_with_distinct_names_are_fine(host):
    """Two pipelines with the same steps but distinct names are two columns of the matrix."""
    text = MINIMAL + (
        '[[techniques]]\nname = "prune-30"\nsteps = ["prune"]\nprune = { amount = 0.3 }\n'
        '[[techniques]]\nname = "prune-60"\nsteps = ["prune"]\nprune = { amount = 0.6 }\n'
    )
    suite = load_suite_text(text, "suite.toml", host)
    assert [cell.technique for cell in expand(suite)] == ["prune-30", "prune-60"]
    assert [cell.steps[0].config["amount"] for cell in expand(suite)] == [0.3, 0.6]


@pytest.mark.parametrize(
    "rules",
    [
        '[[exclude]]\nmodel = "*"\n',
        '[[include]]\nmodel = "resnet*"\n',
        '[[include]]\ndevice = "cuda"\n',
        '[[include]]\nmodel = "small_cnn"\n[[exclude]]\ntechnique = "base*"\n',
    ],
)
def test_empty_matrix_is_an_error(host, rules):
    """Include and exclude rules that leave no cell make the suite invalid."""
    problem = only_problem(MINIMAL + rules, host)
    assert problem.path == "include/exclude"
    assert "empty" in problem.message


def test_structural_problems_are_reported_together(host):
    """Every structural problem of a file is listed in one error."""
    text = 'repeats = 0\nmodels = ["mlp"]\n[data]\nname = "digits"\n[train]\nepoch = 3\nlr = 0\n[measure]\nwarmup = -1\n'
    with pytest.raises(SuiteError) as caught:
        load_suite_text(text, "many.toml", host)
    paths = [problem.path for problem in caught.value.problems]
    assert sorted(paths) == sorted(["repeats", "train.epoch", "train.lr", "measure.warmup"])
    assert "many.toml: invalid suite (4 problems)" in str(caught.value)
    for path in paths:
        assert f"many.toml: {path}: " in str(caught.value)


def test_name_problems_are_reported_together(host):
    """Every unknown name of a file is listed in one error, each with its hint."""
    text = 'models = ["small_cn", "mlp"]\ndevices = ["cpuu"]\n[data]\nname = "digit"\n[[techniques]]\nsteps = ["baselin"]\n'
    problems = problems_of(text, host)
    assert {problem.path: problem.hint for problem in problems} == {
        "data.name": "did you mean 'digits'?",
        "techniques[0].steps[0]": "did you mean 'baseline'?",
        "models[0]": "did you mean 'small_cnn'?",
        "devices[0]": "did you mean 'cpu'?",
    }


# ---------------------------------------------------------------- data sets


def test_cifar10_missing_directory(host, tmp_path):
    """CIFAR-10 in a folder that does not exist is a problem at `data` that names the folder and the way out."""
    missing = tmp_path / "nowhere"
    problem = only_problem(f'models = ["mlp"]\n[data]\nname = "cifar10"\ndir = "{missing}"\n', host)
    assert problem.path == "data"
    assert str(missing) in problem.message
    assert "download = true" in problem.message
    assert not missing.exists()


def test_cifar10_missing_directory_with_download_is_valid(host, tmp_path):
    """With download = true a missing folder is not a suite problem (the worker downloads it)."""
    suite = load_suite_text(f'models = ["mlp"]\n[data]\nname = "cifar10"\ndir = "{tmp_path / "nowhere"}"\ndownload = true\n', "suite.toml", host)
    assert suite.data_config["download"] is True
    assert not (tmp_path / "nowhere").exists()


# ---------------------------------------------------------------- `benchharness validate`


def test_validate_bad_suite_exits_2_and_writes_nothing(tmp_path, monkeypatch):
    """`validate` of an invalid suite exits 2, names the file and the key path, and creates nothing."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.toml").write_text(MINIMAL + "[train]\nepoch = 3\n")
    result = invoke("validate", "bad.toml")
    assert result.exit_code == 2
    assert "bad.toml" in result.output
    assert "train.epoch" in result.output and "did you mean 'epochs'?" in result.output
    assert list(tmp_path.iterdir()) == [tmp_path / "bad.toml"]
    assert not (tmp_path / "runs").exists()


def test_validate_unknown_name_exits_2(tmp_path, monkeypatch):
    """`validate` reports names no plugin registered, with the hint, exit 2."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.toml").write_text('models = ["small_cn"]\n[data]\nname = "digits"\n')
    result = invoke("validate", "bad.toml")
    assert result.exit_code == 2
    assert "bad.toml" in result.output and "models[0]" in result.output and "small_cnn" in result.output
    assert list(tmp_path.iterdir()) == [tmp_path / "bad.toml"]


def test_validate_quick_suite_lists_every_cell(host, tmp_path, monkeypatch):
    """`validate` of the quick suite exits 0, prints every cell id, and writes nothing."""
    monkeypatch.chdir(tmp_path)
    result = invoke("validate", str(QUICK))
    assert result.exit_code == 0, result.output
    cells = expand(load_suite(QUICK, host))
    assert f"quick: {len(cells)} cells" in result.output
    for cell in cells:
        assert cell.id in result.output
    assert "valid:" in result.output
    assert list(tmp_path.iterdir()) == []


def test_pipeline_name_cannot_hold_a_slash(host):
    """A '/' in a pipeline's name would make cell ids ambiguous, so it is rejected with the key path."""
    with pytest.raises(SuiteError) as caught:
        load_suite_text(MINIMAL + '[[techniques]]\nname = "a/b"\nsteps = ["baseline"]\n', "slash.toml", host)
    assert "techniques[0].name" in str(caught.value) and "'a/b'" in str(caught.value)


def test_crlf_file_hash_matches_its_bytes(host, tmp_path):
    """The recorded hash is the hash of the file's bytes, whatever its line endings."""
    import hashlib

    path = tmp_path / "crlf.toml"
    path.write_bytes(MINIMAL.replace("\n", "\r\n").encode())
    suite = load_suite(path, host)
    assert suite.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "override, check",
    [
        ("train.epochs=1", lambda spec: spec.train.epochs == 1),
        ("measure.batch_sizes=[1, 8]", lambda spec: spec.measure.batch_sizes == [1, 8]),
        ("models=['mlp']", lambda spec: spec.models == ["mlp"]),
        ("techniques[0].steps[0]=prune", lambda spec: spec.techniques[0].steps == ["prune"]),
        ("techniques[0].name=renamed", lambda spec: spec.techniques[0].label == "renamed"),
        ("run.cache=false", lambda spec: spec.run.cache is False),
    ],
)
def test_set_overrides(host, write_suite, override, check):
    """--set values land where their key path says, typed as TOML values (bare words are strings)."""
    suite = load_suite(write_suite(MINIMAL + '[[techniques]]\nsteps = ["baseline"]\n'), host, [override])
    assert check(suite.spec)
    assert suite.overrides == [override]


def test_overrides_change_the_hash(host, write_suite):
    """A suite run with overrides has another hash than the file alone."""
    path = write_suite(MINIMAL)
    assert load_suite(path, host).sha256 != load_suite(path, host, ["train.epochs=1"]).sha256


@pytest.mark.parametrize("override, words", [("train.epochs", "key.path=value"), ("techniques[5].name=x", "no such place"), ("train.epochs=-3", "train.epochs")])
def test_bad_overrides(host, write_suite, override, words):
    """A malformed or misplaced override, or a value that fails validation, is a suite error naming it."""
    with pytest.raises(SuiteError, match=words.replace("[", r"\[").replace(".", r"\.")):
        load_suite(write_suite(MINIMAL), host, [override])


@pytest.mark.parametrize("name", ["cifar.toml", "cifar-cpu.toml"])
def test_bundled_cifar_suites_are_valid_with_data(host, tmp_path, name):
    """The CIFAR suites validate once the data folder exists, and name it when it does not."""
    from tests.test_datasets import write_fake_cifar

    suite_path = ROOT / "suites" / name
    with pytest.raises(SuiteError, match="cifar-10-batches-py"):
        load_suite(suite_path, host, [f"data.dir={tmp_path / 'absent'}"])
    write_fake_cifar(tmp_path)
    suite = load_suite(suite_path, host, [f"data.dir={tmp_path}"])
    assert len(expand(suite)) > 10


# ---------------------------------------------------------------- names, seeds, sizes


VALID_NAMES = ["quick", "cifar-cpu", "a.b_c+d-1", "_x", "9", "A" * 64, "int8.static"]
INVALID_NAMES = {
    "": "; found ''",
    ".hidden": "('.' may not come first)",
    "-x": "('-' may not come first)",
    "+x": "('+' may not come first)",
    "a b": "(' ' is not allowed)",
    "a/b": "('/' is not allowed)",
    "..": "('.' may not come first)",
    "a\\b": "('\\\\' is not allowed)",
    "a:b": "(':' is not allowed)",
    "caf\u00e9": "('\u00e9' is not allowed)",
    "a\tb": "('\\t' is not allowed)",
    "x*": "('*' is not allowed)",
    "a" * 65: "(this one has 65)",
}


def toml_string(value: str) -> str:
    """``value`` as a TOML basic string (every character escaped, so control characters survive)."""
    return '"' + "".join(f"\\U{ord(char):08x}" for char in value) + '"'


@pytest.mark.parametrize("name", VALID_NAMES)
def test_valid_names(host, name):
    """Letters, digits and . _ - + make a name, up to 64 characters, for the suite and for a pipeline."""
    suite = load_suite_text(f"name = {toml_string(name)}\n" + MINIMAL + f"[[techniques]]\nname = {toml_string(name)}\nsteps = ['baseline']\n", "suite.toml", host)
    assert suite.name == name and suite.spec.techniques[0].label == name


@pytest.mark.parametrize("name, detail", list(INVALID_NAMES.items()), ids=lambda value: repr(value)[:20])
def test_invalid_names_say_what_is_allowed(host, name, detail):
    """A name that could leave its directory, hide, or break a file name is rejected with its key path and the rule."""
    rule = "expected: a name of 1 to 64 characters among letters, digits and . _ - +, not starting with . - or +"
    suite_problem = only_problem(f"name = {toml_string(name)}\n" + MINIMAL, host)
    pipeline_problem = only_problem(MINIMAL + f"[[techniques]]\nsteps = ['baseline']\n[[techniques]]\nname = {toml_string(name)}\nsteps = ['prune']\n", host)
    for problem, path in ((suite_problem, "name"), (pipeline_problem, "techniques[1].name")):
        assert problem.path == path
        assert problem.message.startswith(rule)
        assert detail in problem.message, problem.message


@pytest.mark.parametrize(
    "stem, name",
    [("my-suite", "my-suite"), ("my suite (v2)", "my_suite_v2_"), (".hidden", "hidden"), ("---", "suite"), ("r\u00e9sum\u00e9", "r_sum_"), ("x" * 100, "x" * 64)],
)
def test_the_file_stem_is_made_into_a_name(host, tmp_path, stem, name):
    """Without a `name`, the file's stem is used with other characters replaced by '_' and the length cut to 64."""
    path = tmp_path / f"{stem}.toml"
    path.write_text(MINIMAL)
    assert load_suite(path, host).name == name


def test_an_explicit_name_is_not_sanitised(host, write_suite):
    """A `name` written in the suite is checked, never silently changed."""
    problem = only_problem('name = "my suite"\n' + MINIMAL, host)
    assert problem.path == "name" and "(' ' is not allowed)" in problem.message


class OddNamePlugin:
    """Registers a technique whose NAME cannot be part of a file name."""

    @hookimpl
    def register_techniques(self, register):
        odd = type("Odd", (Shrink,), {"NAME": "odd\x00"})
        register(odd())


def test_a_derived_label_is_checked_too(fresh_host):
    """Steps whose '+'-joined label is no valid name need a `name`; with one the pipeline is fine."""
    with registered(fresh_host, OddNamePlugin(), "odd"):
        text = MINIMAL + '[[techniques]]\nsteps = ["odd\\u0000"]\n'
        problem = only_problem(text, fresh_host)
        assert problem.path == "techniques[0].steps"
        assert "the pipeline's label 'odd\\x00', its steps joined by '+', is not a valid name" in problem.message
        assert "('\\x00' is not allowed)" in problem.message
        assert problem.hint == "give the pipeline a 'name'"
        assert load_suite_text(text.replace("steps =", 'name = "odd"\nsteps ='), "suite.toml", fresh_host).spec.techniques[0].label == "odd"


def test_a_long_derived_label_needs_a_name(host):
    """Eleven prune steps make a 65-character label: too long for a file name, so the pipeline needs a `name`."""
    steps = 'steps = ["prune", "prune", "prune", "prune", "prune", "prune", "prune", "prune", "prune", "prune", "prune"]\n'
    problem = only_problem(MINIMAL + "[[techniques]]\n" + steps, host)
    assert problem.path == "techniques[0].steps" and "(this one has 65)" in problem.message
    assert load_suite_text(MINIMAL + '[[techniques]]\nname = "prune-11"\n' + steps, "suite.toml", host)


@pytest.mark.parametrize("seed, repeats", [(2**32 - 1, 1), (2**32 - 3, 3), (0, 1000)])
def test_seeds_up_to_2_to_the_32_minus_1(host, seed, repeats):
    """The last repeat's seed may be 2**32 - 1, the largest numpy accepts."""
    suite = load_suite_text(f"seed = {seed}\nrepeats = {repeats}\n" + MINIMAL, "suite.toml", host)
    assert expand(suite)[-1].seed == seed + repeats - 1 <= 2**32 - 1


@pytest.mark.parametrize("seed, repeats", [(2**32 - 1, 2), (2**32 - 3, 4)])
def test_the_last_repeats_seed_must_fit(host, seed, repeats):
    """seed + repeats - 1 above 2**32 - 1 is a problem at `seed` that says what to change."""
    problem = only_problem(f"seed = {seed}\nrepeats = {repeats}\n" + MINIMAL, host)
    assert problem.path == "seed" and f"would use seed {seed + repeats - 1}" in problem.message
    assert problem.hint == "lower seed or repeats"


SYNTHETIC = 'models = ["mlp"]\n[data]\nname = "synthetic"\n'


@pytest.mark.parametrize("shape", [[1], [1, 4096, 4096], [3, 32, 32], [2, 2, 2, 2]])
def test_synthetic_shapes_in_bounds(host, shape):
    """Every dimension at least 1, at most 2**24 elements per sample."""
    assert load_suite_text(SYNTHETIC + f"shape = {shape}\n", "suite.toml", host).data_config["shape"] == shape


@pytest.mark.parametrize(
    "shape, path, words",
    [
        ([-1], "data.shape[0]", "greater than or equal to 1"),
        ([3, 0, 8], "data.shape[1]", "greater than or equal to 1"),
        ([2, 4096, 4096], "data.shape", "a sample of at most 16,777,216 elements (this shape has 33,554,432)"),
        ([], "data.shape", "at least 1 item"),
    ],
)
def test_synthetic_shapes_out_of_bounds(host, shape, path, words):
    """A shape with an empty or negative dimension, or samples of more than 2**24 elements, fails validation."""
    problem = only_problem(SYNTHETIC + f"shape = {shape}\n", host)
    assert problem.path == path and words in problem.message


def test_synthetic_seed_fits_torch(host):
    """torch seeds are at most 2**64 - 1."""
    assert load_suite_text(SYNTHETIC + f"seed = {2**64 - 1}\n", "suite.toml", host)
    assert only_problem(SYNTHETIC + f"seed = {2**64}\n", host).path == "data.seed"


def test_a_path_with_a_nul_is_a_suite_error(host, tmp_path):
    """A NUL in the suite's path is a SuiteError naming it, not a ValueError."""
    with pytest.raises(SuiteError, match="cannot read the file"):
        load_suite(str(tmp_path / "a\x00b.toml"), host)


def test_a_directory_is_a_suite_error(host, tmp_path):
    """A directory as the suite is refused as not a regular file."""
    with pytest.raises(SuiteError, match="not a regular file but a directory"):
        load_suite(tmp_path, host)


def test_a_suite_of_exactly_1_mib_loads(host, tmp_path):
    """The size limit is 1 MiB inclusive: comments fill a valid suite up to it."""
    path = tmp_path / "full.toml"
    padding = (1 << 20) - len(MINIMAL.encode()) - 1
    path.write_text(MINIMAL + "#" + "x" * (padding - 1) + "\n")
    assert path.stat().st_size == 1 << 20
    assert load_suite(path, host).name == "full"
    path.write_text(MINIMAL + "#" + "x" * padding + "\n")
    with pytest.raises(SuiteError, match="1,048,577 bytes"):
        load_suite(path, host)


def test_nesting_up_to_32_levels_is_fine(host):
    """Data nested 32 levels deep reaches validation (and fails there as an unknown key), 33 levels does not."""
    [problem] = problems_of(MINIMAL + "x = " + "[" * 31 + "]" * 31 + "\n", host)
    assert problem.path == "data.x" and problem.message == "unknown key"
    [problem] = problems_of(MINIMAL + "x = " + "[" * 32 + "]" * 32 + "\n", host)
    assert problem.message == "nested too deeply" and problem.path == "data.x" + "[0]" * 31


def test_too_many_cells(host):
    """A matrix of more than 100,000 cells is refused before it is expanded."""
    models = 'models = ["mlp", "small_cnn", "resnet18_cifar", "mobilenetv2_cifar"]\n'
    techniques = "".join(f'[[techniques]]\nname = "p{index}"\nsteps = ["baseline"]\n' for index in range(25))
    assert load_suite_text(models + "repeats = 1000\n[data]\nname = 'digits'\n" + techniques, "suite.toml", host)
    problem = only_problem(models + "repeats = 1000\ndevices = ['cpu', 'cuda']\n[data]\nname = 'digits'\n" + techniques, host)
    assert problem.message == "the matrix would have 200,000 cells (4 models x 25 pipelines x 2 devices x 1000 repeats), more than 100,000"


def test_default_threads_follow_the_cpus_the_process_may_use():
    """A process pinned to one CPU (a Slurm job's or a container's allocation) gets one torch thread by default."""
    import subprocess
    import sys

    script = "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); from benchharness.suite import MeasureSettings; print(MeasureSettings().thread_count())"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "1"
