"""benchharness.testing, the plugin authors' kit: its fixtures, one-cell runs and check_technique on broken and good techniques."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Literal

import pytest
import torch
from pydantic import BaseModel, Field
from torch import nn

from benchharness import CellContext, Data, StrictConfig, Technique
from benchharness.errors import SuiteError, Unsupported
from benchharness.testing import (
    KIT_TRAIN,
    ConformanceReport,
    TechniqueNotConforming,
    check_technique,
    kit_suite_text,
    make_cell_context,
    make_tiny_model,
    toml_value,
)
from benchharness.train import Trainer
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def shared_dir(tmp_path_factory):
    """One directory for the module's checks, so that they share the artifact cache (the model trained once)."""
    return tmp_path_factory.mktemp("checks")


def test_the_kit_is_benchharness_pytest_plugin():
    """benchharness declares the kit as a pytest11 plugin, so its fixtures are there wherever benchharness is installed."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project.get("entry-points", {}).get("pytest11")
    assert declared == {"benchharness": "benchharness.testing"}, "declare [project.entry-points.pytest11] benchharness = \"benchharness.testing\" and reinstall"


def test_importing_the_kit_does_not_import_torch():
    """The kit is a pytest plugin loaded in every run: importing it stays cheap."""
    code = "import sys, benchharness.testing; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_tiny_data_is_the_bundled_digits(tiny_data):
    """Small real images with labels in range, on the CPU."""
    assert isinstance(tiny_data, Data) and tiny_data.name == "digits"
    assert tiny_data.input_shape == (1, 8, 8) and tiny_data.num_classes == 10
    assert tiny_data.x_train.shape[0] == tiny_data.y_train.shape[0] > tiny_data.x_test.shape[0] == tiny_data.y_test.shape[0] > 0
    assert tiny_data.y_train.dtype == torch.int64 and int(tiny_data.y_train.max()) == 9
    assert tiny_data.x_train.device.type == "cpu"


def test_tiny_model_is_a_fresh_small_cnn(tiny_model, tiny_data):
    """A seeded, untrained small_cnn giving logits per class; the caller's random state is left alone."""
    state = torch.random.get_rng_state()
    again = make_tiny_model(tiny_data)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(a, b) for a, b in zip(tiny_model.state_dict().values(), again.state_dict().values()))
    with torch.inference_mode():
        assert tiny_model(tiny_data.x_test[:5]).shape == (5, 10)


def test_cell_context_is_built_like_a_workers(cell_context, tmp_path):
    """A real context: the kit's one-cell suite, a real Trainer, data on the device, model_trained as for a first step."""
    context = cell_context()
    assert isinstance(context, CellContext) and isinstance(context.trainer, Trainer)
    assert context.cell.id == "small_cnn/baseline/cpu/r0" and [step.technique for step in context.cell.steps] == ["baseline"]
    assert context.suite.spec.train.epochs == KIT_TRAIN["epochs"] and context.suite.spec.data.name == "digits"
    assert context.model_trained is False  # baseline TRAINS: it gets the fresh model
    assert context.torch_device == torch.device("cpu") and context.device.DEVICE == "cpu"
    assert context.data.x_train.device.type == "cpu"
    assert context.workdir.is_dir() and tmp_path in context.workdir.parents
    assert context.plugin_options is not None and context.notes == {}


def test_cell_context_for_a_step_after_training(cell_context):
    """A technique that does not train gets a trained model; trained_model trains it with the one-epoch budget."""
    context = cell_context("prune", {"method": "channels", "amount": 0.25}, model="mlp")
    assert context.model_trained is True
    assert context.cell.steps[0].config["method"] == "channels"
    model = context.trained_model("mlp")
    assert context.trainer.samples_seen == context.data.x_train.shape[0]
    assert context.evaluate(model) > 0.5


def test_cell_context_rejects_a_bad_config(cell_context):
    """The config is validated as a suite's would be, strictly."""
    with pytest.raises(SuiteError, match="amount"):
        cell_context("prune", {"amount": "0.5"})


def test_cell_context_of_a_cell_the_worker_would_skip(tmp_path):
    """A technique that does not support the device raises Unsupported (the fixture turns it into a skip)."""
    with pytest.raises(Unsupported, match="fp16 autocast is for CUDA"):
        make_cell_context(tmp_path, "amp", {"dtype": "fp16"})


def test_cell_context_of_a_technique_object(cell_context):
    """A Technique instance (or class) that no plugin registers is registered inline for the suite."""
    context = cell_context(ScaleWeights, {"factor": 0.5}, model="mlp")
    assert context.cell.steps[0].technique == "scale_weights" and context.model_trained is True


def test_cell_context_with_suite_values(cell_context):
    """Suite values are merged over the kit's."""
    context = cell_context(suite={"train": {"epochs": 2}, "seed": 7})
    assert context.suite.spec.train.epochs == 2 and context.cell.seed == 7


def test_trainer_fixture_trains_one_epoch(trainer, tiny_model, tiny_data):
    """The context's real Trainer counts the samples and time of its fits."""
    model = trainer.fit(tiny_model, tiny_data)
    assert model is tiny_model and not model.training
    assert trainer.samples_seen == tiny_data.x_train.shape[0] and trainer.train_seconds > 0


def test_suite_text_writes_toml_values():
    """Config values become TOML: booleans, numbers, strings with quotes and newlines, lists, tables."""
    import tomllib

    config = {"flag": True, "name": 'a "b"\nc\x7f', "sizes": [1, 2.5], "table": {"x": None, "y": 1}, "none": None}
    text = kit_suite_text(["baseline", "thing"], {"thing": config}, suite={"train": {"epochs": 3}})
    parsed = tomllib.loads(text)
    assert parsed["techniques"][0]["thing"] == {"flag": True, "name": 'a "b"\nc\x7f', "sizes": [1, 2.5], "table": {"y": 1}}
    assert parsed["train"]["epochs"] == 3 and parsed["include"] == [{"model": "small_cnn"}]
    assert toml_value(float("inf")) == "inf"
    with pytest.raises(TypeError, match="cannot be written to a suite"):
        toml_value(object())


PLUGIN_FILE = '''
from benchharness import StrictConfig, Technique, hookimpl


class HalveConfig(StrictConfig):
    factor: float = 0.5


class Halve(Technique):
    NAME = "halve_weights"
    Config = HalveConfig

    def apply(self, model, config, context):
        import torch

        with torch.no_grad():
            for parameter in model.parameters():
                parameter.mul_(config.factor)
        context.notes["halve_factor"] = config.factor
        return model


class Explode(Technique):
    NAME = "explode"

    def apply(self, model, config, context):
        raise RuntimeError("kaboom from the plugin file")


@hookimpl
def register_techniques(register):
    register(Halve())
    register(Explode())
'''


@pytest.mark.slow
def test_run_cell_runs_a_real_cell(run_cell):
    """A one-cell run in worker processes, timed in rounds: an ok record with accuracy and latency."""
    record = run_cell("baseline")
    assert record["status"] == "ok", record.get("traceback")
    assert record["cell"]["id"] == "mlp/baseline/cpu/r0"
    assert record["metrics"]["accuracy_top1"] > 0.5 and record["metrics"]["train_samples"] > 0
    (entry,) = record["latency"]
    assert entry["batch_size"] == 1 and entry["latency_p50_ms"] > 0 and entry["rounds"] == 2


@pytest.mark.slow
def test_run_cell_loads_plugins_from_a_file_in_the_workers(run_cell, tmp_path):
    """A .py plugin is loaded by the workers too; steps take their config; a raising step is a failed record."""
    plugin = tmp_path / "halve_plugin.py"
    plugin.write_text(PLUGIN_FILE)
    record = run_cell(["baseline", "halve_weights"], {"halve_weights": {"factor": 0.25}}, plugins=[plugin])
    assert record["status"] == "ok", record.get("traceback")
    assert record["notes"]["halve_factor"] == 0.25 and [step["step"] for step in record["steps"]] == ["baseline", "halve_weights"]
    failed = run_cell("explode", plugins=[str(plugin)], overrides=["train.epochs=1"])
    assert failed["status"] == "failed" and "kaboom from the plugin file" in failed["error_message"]


class ScaleConfig(StrictConfig):
    """A strict config with a field of every checked kind."""

    factor: float = Field(1.0, gt=0.0, le=2.0)
    enabled: bool = True
    repeats: int = Field(1, ge=1, le=3)
    label: str = "scaled"
    mode: Literal["all", "linear"] = "all"
    limit: int | None = None


class ScaleWeights(Technique):
    """A well-behaved technique: scales the weights of a trained model."""

    NAME = "scale_weights"
    Config = ScaleConfig

    def apply(self, model, config, context):
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.mul_(config.factor)
        context.notes["scale_factor"] = torch.tensor(config.factor)
        return model


class FineTune(Technique):
    """A well-behaved cacheable technique: fine-tunes for one epoch; restore loads the state dict."""

    NAME = "fine_tune"

    def apply(self, model, config, context):
        return context.trainer.fit(model, context.data, epochs=1)

    def cacheable(self, config):
        return True


def failure_of(technique, config=None, tmp_path=None, **options) -> str:
    """The message of the TechniqueNotConforming that checking ``technique`` raises."""
    with pytest.raises(TechniqueNotConforming) as raised:
        check_technique(technique, config, model="mlp", tmp_path=tmp_path, **options)
    assert isinstance(raised.value, AssertionError)
    return str(raised.value)


def test_a_good_technique_passes(shared_dir):
    """Every check passes or does not apply; the report says which."""
    report = check_technique(ScaleWeights(), {"factor": 0.5}, model="mlp", tmp_path=shared_dir)
    assert isinstance(report, ConformanceReport) and report.ok and report.skip_reason is None
    names = [check.name for check in report.passed]
    assert "config rejects wrong types" in names and "logits" in names and "declares its speedup expectation" in names
    assert [check.name for check in report.not_applicable] == ["cache round trip"]
    assert "cacheable(config) is False" in report.not_applicable[0].detail
    assert "factor (float), enabled (bool), repeats (int), label (str), mode (one of 'all', 'linear'), limit (int)" in str(report)


def test_a_good_cacheable_technique_round_trips(shared_dir):
    """A technique class is accepted too; its cached state restores the same outputs."""
    report = check_technique(FineTune, model="mlp", tmp_path=shared_dir)
    assert report.outcome("cache round trip") == "passed"


class LaxConfig(BaseModel):
    """A plain pydantic model: coerces 1 to True and '2' to 2, ignores unknown keys."""

    enabled: bool = True
    repeats: int = 2


class LaxTechnique(ScaleWeights):
    NAME = "lax_config"
    Config = LaxConfig

    def apply(self, model, config, context):
        return model


def test_a_lax_config_fails(shared_dir):
    """Unknown keys and wrong types must be rejected: the fix is StrictConfig."""
    message = failure_of(LaxTechnique(), tmp_path=shared_dir)
    assert "config rejects unknown keys: LaxConfig accepted the unknown key 'no_such_key'" in message
    assert "enabled (bool) accepted 1; enabled (bool) accepted 'yes'; repeats (int) accepted '2'" in message
    assert message.count("subclass benchharness.StrictConfig") == 2
    assert "2 of 12 checks failed" in message


class ReturnsNone(ScaleWeights):
    NAME = "returns_none"

    def apply(self, model, config, context):
        model.eval()


def test_apply_returning_none_fails(shared_dir):
    message = failure_of(ReturnsNone(), tmp_path=shared_dir)
    assert "apply returns a module: apply() returned NoneType; return an nn.Module" in message
    assert "not applicable (apply() did not return a module): logits, notes are JSON values, measures like a cell" in message


class WrongShape(ScaleWeights):
    NAME = "wrong_shape"

    def apply(self, model, config, context):
        return nn.Sequential(model, nn.Linear(context.data.num_classes, 3))


def test_logits_of_the_wrong_shape_fail(shared_dir):
    message = failure_of(WrongShape(), tmp_path=shared_dir)
    assert "a batch of 1 gave logits of shape (1, 3); expected (1, 10)" in message
    assert "a batch of 16 gave logits of shape (16, 3); expected (16, 10)" in message


class StoresTheModule(FineTune):
    NAME = "stores_the_module"

    def cache_state(self, model, config):
        return {"model": model}

    def restore(self, model, config, context, state):
        return state["model"]


def test_a_cache_state_that_cannot_round_trip_fails(shared_dir):
    message = failure_of(StoresTheModule(), tmp_path=shared_dir)
    assert "cache round trip: what cache_state() returned cannot be loaded with torch.load(weights_only=True)" in message
    assert "Unsupported global: GLOBAL torch.nn.modules.container.Sequential" in message and "not modules or other objects" in message


class ForgetfulRestore(FineTune):
    NAME = "forgetful_restore"

    def cache_state(self, model, config):
        return {"nothing": torch.zeros(1)}

    def restore(self, model, config, context, state):
        return model


def test_a_restore_that_loses_the_result_fails(shared_dir):
    message = failure_of(ForgetfulRestore(), tmp_path=shared_dir)
    assert "restore() from the cached state gives other outputs than apply()" in message


class RaisingReason(ScaleWeights):
    NAME = "raising_reason"

    def unsupported_reason(self, config, device):
        if device.DEVICE != "cpu":
            raise RuntimeError(f"no idea what {device.DEVICE} is")
        return ""


def test_an_unsupported_reason_that_raises_fails(shared_dir):
    message = failure_of(RaisingReason(), tmp_path=shared_dir)
    assert "on device 'cpu' it returned ''" in message
    assert "on device 'cuda' it raised RuntimeError: no idea what cuda is" in message
    assert "never raise" in message


class RaisingCheckSuite(ScaleWeights):
    NAME = "raising_check_suite"

    def check_suite(self, config, suite):
        raise KeyError("teacher")


class RefusingCheckSuite(ScaleWeights):
    NAME = "refusing_check_suite"

    def check_suite(self, config, suite):
        return "this technique refuses every suite"


def test_a_check_suite_that_raises_or_refuses_fails(shared_dir):
    """check_suite returns a problem or None: raising is a failure, and so is refusing the kit's plain one-cell suite."""
    message = failure_of(RaisingCheckSuite(), tmp_path=shared_dir)
    assert "suite loads: " in message and "technique 'raising_check_suite'" in message
    assert "raised in check_suite: KeyError: 'teacher'" in message and "this is a bug in the plugin" in message
    message = failure_of(RefusingCheckSuite(), tmp_path=shared_dir)
    assert "techniques[0].refusing_check_suite: this technique refuses every suite" in message


class Wrapper(nn.Module):
    """A wrapper whose forward runs the model it wraps (standing in for a compiled or autocast mode)."""

    def __init__(self, inner, declared=None):
        super().__init__()
        self.inner = inner
        if declared is not None:
            self.benchharness_speedup = declared

    def forward(self, x):
        return self.inner(x)


class Wraps(ScaleWeights):
    NAME = "wraps"

    def apply(self, model, config, context):
        return Wrapper(model)


class WrapsAndDeclares(ScaleWeights):
    NAME = "wraps_and_declares"

    def apply(self, model, config, context):
        return Wrapper(model, (False, "runs the same float model: no faster"))


class WrapsAndDeclaresBadly(ScaleWeights):
    NAME = "wraps_and_declares_badly"

    def apply(self, model, config, context):
        return Wrapper(model, "fast")


def test_a_wrapper_without_benchharness_speedup_fails(shared_dir):
    message = failure_of(Wraps(), tmp_path=shared_dir)
    assert "apply() returned a Wrapper (from tests.test_testing_kit) that wraps the model (inner)" in message
    assert "has no benchharness_speedup" in message and "self.benchharness_speedup = (expected: bool, reason: str)" in message


def test_a_wrapper_that_declares_its_speedup_passes(shared_dir):
    report = check_technique(WrapsAndDeclares(), model="mlp", tmp_path=shared_dir)
    assert report.outcome("declares its speedup expectation") == "passed"


def test_a_malformed_declaration_fails(shared_dir):
    message = failure_of(WrapsAndDeclaresBadly(), tmp_path=shared_dir)
    assert "has benchharness_speedup = 'fast'" in message


class NotPydantic:
    pass


class NoPydanticConfig(ScaleWeights):
    NAME = "no_pydantic_config"
    Config = NotPydantic


class TakesBaselinesName(ScaleWeights):
    NAME = "baseline"


def test_techniques_that_cannot_register_fail():
    """An unknown name, a Config that is not a pydantic model, a NAME another class took: each says what to fix."""
    assert "no technique named 'prnue': did you mean 'prune'?" in failure_of("prnue")
    assert "its Config is not a pydantic model; subclass benchharness.StrictConfig" in failure_of(NoPydanticConfig())
    assert "NAME 'baseline' is already registered by plugin 'benchharness.plugins.baseline'" in failure_of(TakesBaselinesName())


def test_an_invalid_config_stops_the_checks():
    message = failure_of("prune", {"amount": 2.0})
    assert "config validates: PruneConfig does not accept the config {'amount': 2.0}: amount: Input should be less than 1" in message
    assert "not applicable (the config does not validate): unsupported_reason, suite loads, apply returns a module, logits" in message


@pytest.mark.slow
def test_a_technique_from_a_plugin_file(tmp_path):
    """A registered name found through plugins=[file.py]; its notes are checked as JSON values."""
    plugin = tmp_path / "halve_plugin.py"
    plugin.write_text(textwrap.dedent(PLUGIN_FILE))
    report = check_technique("halve_weights", {"factor": 0.5}, plugins=[plugin], model="mlp", tmp_path=tmp_path)
    assert report.outcome("notes are JSON values") == "passed"
    assert "raised RuntimeError: kaboom from the plugin file" in failure_of("explode", plugins=[plugin], tmp_path=tmp_path)
