"""A corpus of malformed suites: each fails in a second with one clear message, exit code 2, nothing written.

Every file under tests/suites/bad/ starts with `# expect: <text>`, the words its message must contain.
Property-based tests feed random structures to the loader: it raises only the harness's SuiteError.
"""

from __future__ import annotations

import string

import pytest
import tomli_w
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchharness.cli import cli
from benchharness.errors import SuiteError
from benchharness.suite import load_suite_text
from tests.conftest import ROOT

BAD = sorted((ROOT / "tests" / "suites" / "bad").glob("*.toml"))


def expectation(path) -> str:
    """The text a suite's error message must contain, from its first line."""
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} lacks its '# expect:' line"
    return first.removeprefix("# expect: ")


def test_the_corpus_is_there():
    """The corpus covers every kind of bad input the issue lists."""
    assert len(BAD) >= 13


@pytest.mark.parametrize("path", BAD, ids=lambda path: path.stem)
def test_bad_suite_fails_clearly(path, tmp_path, monkeypatch):
    """`validate` and `run` exit 2 naming the file and the expected words; no run directory appears."""
    monkeypatch.chdir(tmp_path)
    for command in (["validate", str(path)], ["run", str(path), "--out", str(tmp_path / "runs")]):
        result = CliRunner().invoke(cli, command, terminal_width=400, env={"COLUMNS": "400"})
        flat = " ".join(result.output.split())
        assert result.exit_code == 2, result.output
        assert str(path) in flat
        assert " ".join(expectation(path).split()) in flat, flat
    assert not (tmp_path / "runs").exists()
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_output_directory(tmp_path):
    """An --out under a file cannot be created: exit 2 with the path and the fix."""
    (tmp_path / "file").write_text("")
    result = CliRunner().invoke(cli, ["run", str(ROOT / "suites" / "quick.toml"), "--out", str(tmp_path / "file" / "runs")])
    assert result.exit_code == 2
    assert "cannot create a run directory" in result.output and "--out" in result.output


scalars = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False), st.booleans(), st.text(string.printable, max_size=12))
keys = st.sampled_from(["name", "models", "devices", "data", "techniques", "train", "measure", "run", "include", "exclude", "seed", "repeats", "steps", "epochs", "lr", "batch_sizes", "prune", "amount", "method", "teacher", "dir", "bogus"])
values = st.recursive(scalars | st.lists(scalars, max_size=3), lambda children: st.lists(children, max_size=3) | st.dictionaries(keys, children, max_size=4), max_leaves=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(keys, values, max_size=6))
def test_random_structures_raise_only_suite_errors(host, document):
    """Whatever the structure, loading either succeeds or raises SuiteError with at least one problem."""
    try:
        load_suite_text(tomli_w.dumps(document), "random.toml", host)
    except SuiteError as error:
        assert error.problems and str(error).startswith("random.toml")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=200))
def test_random_text_raises_only_suite_errors(host, text):
    """Arbitrary text is either a valid suite or a SuiteError, never another exception."""
    try:
        load_suite_text(text, "text.toml", host)
    except SuiteError:
        pass


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["train.epochs", "measure.batch_sizes", "techniques[0].prune.amount", "data.name", "models", "run.cell_timeout_s", "nope[3]"]), values)
def test_random_overrides_raise_only_suite_errors(host, key, value):
    """--set with any key and value gives a valid suite or a SuiteError."""
    text = 'models = ["mlp"]\n[data]\nname = "digits"\n[[techniques]]\nsteps = ["prune"]\n'
    try:
        load_suite_text(text, "override.toml", host, overrides=[f"{key}={tomli_w.dumps({'v': value})[4:].strip() if not isinstance(value, dict) else value}"])
    except SuiteError:
        pass
