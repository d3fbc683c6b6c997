"""Training recipes as a matrix axis, named models with options, the schedules, optimizers and augmentation of the training loop, and learning curves."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from benchharness.api import Data
from benchharness.cli import cli
from benchharness.errors import SuiteError
from benchharness.matrix import expand, group_cells
from benchharness.store import RunDir
from benchharness.suite import TrainBudget, load_suite, load_suite_text
from benchharness.train import LrSchedule, Trainer, augmentation_problem, crop_flip, make_optimizer

CPU = torch.device("cpu")
BASE = """
models = ["small_cnn", "cnn-dropout"]
[data]
name = "digits"
[named_models.cnn-dropout]
model = "small_cnn"
dropout = 0.3
batchnorm = false
[train]
epochs = 2
batch_size = 64
optimizer = "adam"
lr = 0.005
[[recipes]]
name = "adam"
[[recipes]]
name = "sgd-step"
optimizer = "sgd"
lr = 0.05
schedule = "step"
lr_step_epochs = 1
lr_gamma = 0.5
[[techniques]]
steps = ["baseline"]
[[techniques]]
name = "int8"
steps = ["quantize"]
"""


def problems_of(text: str, host) -> list[str]:
    """The problems' texts of a suite that must not load."""
    with pytest.raises(SuiteError) as caught:
        load_suite_text(text, "suite.toml", host)
    return [str(problem) for problem in caught.value.problems]


@pytest.fixture(scope="module")
def digits(host) -> Data:
    """The digits data set."""
    dataset = host.datasets["digits"]
    return dataset.load(dataset.Config())


def test_recipes_cross_with_models_and_techniques(host):
    """Every model x recipe x technique is a cell whose id names the recipe; groups pair a cell with the reference pipeline of its own recipe."""
    suite = load_suite_text(BASE, "suite.toml", host)
    cells = expand(suite)
    assert [cell.id for cell in cells[:4]] == [
        "small_cnn/adam/baseline/cpu/r0", "small_cnn/adam/int8/cpu/r0", "small_cnn/sgd-step/baseline/cpu/r0", "small_cnn/sgd-step/int8/cpu/r0",
    ]
    assert len(cells) == 8 and {cell.recipe for cell in cells} == {"adam", "sgd-step"}
    groups = group_cells(cells, suite)
    assert [group.label for group in groups] == ["small_cnn/adam/cpu/r0", "small_cnn/sgd-step/cpu/r0", "cnn-dropout/adam/cpu/r0", "cnn-dropout/sgd-step/cpu/r0"]
    assert groups[1].reference == "small_cnn/sgd-step/baseline/cpu/r0"
    assert cells[0].as_dict()["recipe"] == "adam"


def test_a_recipe_overrides_only_its_own_keys(host):
    """A recipe's budget is [train] with its keys replaced; a suite without recipes has cells without one."""
    suite = load_suite_text(BASE, "suite.toml", host)
    sgd = suite.budget("sgd-step")
    assert (sgd.optimizer, sgd.schedule, sgd.lr_step_epochs, sgd.lr_gamma, sgd.epochs) == ("sgd", "step", 1, 0.5, 2)
    assert suite.budget("adam") == suite.spec.train
    plain = load_suite_text('models = ["mlp"]\n[data]\nname = "digits"\n', "plain.toml", host)
    assert [cell.id for cell in expand(plain)] == ["mlp/baseline/cpu/r0"] and expand(plain)[0].recipe is None


def test_include_and_exclude_match_recipes(host):
    """A rule's recipe pattern selects cells of matching recipes; it never matches a suite without recipes."""
    suite = load_suite_text(BASE + '[[exclude]]\nrecipe = "sgd*"\nmodel = "cnn-dropout"\n', "suite.toml", host)
    ids = [cell.id for cell in expand(suite)]
    assert "cnn-dropout/sgd-step/baseline/cpu/r0" not in ids and "small_cnn/sgd-step/baseline/cpu/r0" in ids
    with pytest.raises(SuiteError, match="empty"):
        load_suite_text('models = ["mlp"]\n[data]\nname = "digits"\n[[include]]\nrecipe = "adam"\n', "suite.toml", host)


@pytest.mark.parametrize(
    "change, expected",
    [
        (("lr_step_epochs = 1", "lr_step_epoch = 1"), "recipes[1].lr_step_epoch: unknown key; did you mean 'lr_step_epochs'?"),
        (('optimizer = "sgd"', 'optimizer = "sgdm"'), "recipes[1].optimizer: expected: input should be"),
        (('name = "sgd-step"', 'name = "adam"'), "recipes[1]: duplicate recipe 'adam'"),
        (("dropout = 0.3", "dropout = 1.5"), "named_models.cnn-dropout.dropout: expected: input should be less than 1"),
        (("batchnorm = false", "batchnorm = 0"), "named_models.cnn-dropout.batchnorm: expected: input should be a valid boolean"),
        (('model = "small_cnn"', 'model = "small_cn"'), "named_models.cnn-dropout.model: unknown model 'small_cn'"),
        (("[named_models.cnn-dropout]", "[named_models.mlp]"), "named_models.mlp: 'mlp' is the name of a registered model"),
        (('models = ["small_cnn", "cnn-dropout"]', 'models = ["small_cnn", "cnn-dropot"]'), "named models: cnn-dropout"),
    ],
)
def test_bad_recipes_and_named_models_name_the_key(host, change, expected):
    """Mistakes in recipes and named models are suite errors at their key path, with a hint."""
    problems = problems_of(BASE.replace(*change), host)
    assert any(expected in problem for problem in problems), problems


def test_a_named_model_is_built_with_its_options(host, digits):
    """small_cnn with dropout and without batch normalisation has a Dropout and no BatchNorm; the defaults keep the original layers."""
    family = host.models["small_cnn"]
    plain = family.build_with(10, (1, 8, 8), None, {})
    options = family.build_with(10, (1, 8, 8), None, {"dropout": 0.3, "batchnorm": False})
    kinds = lambda model: {type(module).__name__ for module in model.modules()}  # noqa: E731
    assert "BatchNorm2d" in kinds(plain) and "Dropout" not in kinds(plain)
    assert "BatchNorm2d" not in kinds(options) and "Dropout" in kinds(options)
    mlp = host.models["mlp"].build_with(10, (1, 8, 8), None, {"batchnorm": True, "dropout": 0.2})
    assert {"BatchNorm1d", "Dropout"} <= kinds(mlp)
    assert "BatchNorm1d" not in kinds(host.models["mlp"].build(10, (1, 8, 8)))


def learning_rates(budget: TrainBudget, epochs: int, steps_per_epoch: int, losses: list[float] | None = None) -> list[float]:
    """The learning rate at the start of every epoch under ``budget``'s schedule."""
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = make_optimizer(torch.nn.Linear(1, 1), budget)
    optimizer = torch.optim.SGD([parameter], lr=budget.lr)
    schedule = LrSchedule(optimizer, budget, steps_per_epoch, epochs)
    rates = []
    for epoch in range(epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        for _ in range(steps_per_epoch):
            optimizer.step()
            schedule.after_batch()
        schedule.after_epoch((losses or [1.0] * epochs)[epoch])
    return rates


def test_schedules_follow_their_definitions():
    """step, exponential, linear and plateau change the rate as documented; constant never does."""
    base = dict(lr=1.0, epochs=4)
    assert learning_rates(TrainBudget(schedule="constant", **base), 4, 3) == [1.0] * 4
    assert learning_rates(TrainBudget(schedule="step", lr_step_epochs=2, lr_gamma=0.5, **base), 4, 3) == pytest.approx([1.0, 1.0, 0.5, 0.5])
    assert learning_rates(TrainBudget(schedule="exponential", **base), 4, 3) == pytest.approx([1.0, 0.8, 0.64, 0.512])
    assert learning_rates(TrainBudget(schedule="linear", lr_end_factor=0.2, **base), 4, 5) == pytest.approx([1.0, 0.8, 0.6, 0.4])
    stalled = learning_rates(TrainBudget(schedule="plateau", plateau_patience=1, **base), 4, 2, losses=[1.0, 1.0, 1.0, 1.0])
    assert stalled == pytest.approx([1.0, 1.0, 1.0, 0.1])
    improving = learning_rates(TrainBudget(schedule="plateau", plateau_patience=1, **base), 4, 2, losses=[1.0, 0.5, 0.25, 0.1])
    assert improving == [1.0] * 4


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "adagrad", "rmsprop"])
def test_every_optimizer_is_the_named_torch_optimizer(optimizer):
    """Each optimizer name builds its torch optimizer with the budget's rate."""
    built = make_optimizer(torch.nn.Linear(2, 2), TrainBudget(optimizer=optimizer, lr=0.01))
    assert type(built).__name__.lower() == optimizer
    assert built.param_groups[0]["lr"] == 0.01


def test_crop_flip_keeps_shapes_and_moves_pixels():
    """Augmented images keep their shape; each is its padded original shifted and possibly mirrored, and the batch changes."""
    generator = torch.Generator().manual_seed(0)
    batch = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).reshape(2, 3, 32, 32)
    augmented = crop_flip(batch, generator)
    assert augmented.shape == batch.shape
    assert not torch.equal(augmented, batch)
    padded = torch.nn.functional.pad(batch, (4, 4, 4, 4))
    for index in range(2):
        found = any(
            torch.equal(candidate, augmented[index])
            for dy in range(9) for dx in range(9)
            for window in [padded[index, :, dy : dy + 32, dx : dx + 32]]
            for candidate in (window, window.flip(2))
        )
        assert found


def test_augment_is_refused_for_tiny_images_and_the_curve_says_so(digits):
    """Digits (8x8) are not augmented; the learning curve's notes say why."""
    budget = TrainBudget(epochs=1, batch_size=64, optimizer="adam", lr=0.005, augment=True)
    assert "8x8" not in (augmentation_problem(budget, (3, 32, 32)) or "")
    assert "does nothing" in augmentation_problem(budget, tuple(digits.input_shape))
    trainer = Trainer(budget, CPU)
    torch.manual_seed(0)
    trainer.fit(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)), digits)
    assert "skipped" in trainer.curves[0]["notes"]["augment"]


def test_fit_records_a_learning_curve(digits):
    """Every epoch adds its mean training loss and test accuracy; the loss falls and the accuracy rises on digits."""
    budget = TrainBudget(epochs=3, batch_size=64, optimizer="adam", lr=0.005, weight_decay=0.0)
    trainer = Trainer(budget, CPU)
    trainer.label = "baseline"
    torch.manual_seed(0)
    trainer.fit(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)), digits)
    (curve,) = trainer.curves
    assert curve["label"] == "baseline" and [point["epoch"] for point in curve["epochs"]] == [1, 2, 3]
    losses = [point["train_loss"] for point in curve["epochs"]]
    assert losses[0] > losses[-1] > 0
    assert 0.8 < curve["epochs"][-1]["test_accuracy"] <= 1.0
    quiet = Trainer(budget.model_copy(update={"learning_curve": False, "epochs": 1}), CPU)
    quiet.fit(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)), digits)
    assert quiet.curves[0]["epochs"][0]["test_accuracy"] is None


def test_a_cells_recipe_reaches_its_training_and_its_curves_survive_the_cache(run_cell):
    """The cell trains with its recipe (one step-decay epoch of SGD), records the curve, and a cache hit restores the curve marked cached."""
    recipe = {"recipes": [{"name": "sgd-fast", "optimizer": "sgd", "lr": 0.05, "schedule": "step", "epochs": 2}]}
    first = run_cell("baseline", suite=recipe)
    assert first["status"] == "ok", first.get("error_message")
    assert first["cell"]["recipe"] == "sgd-fast" and first["cell"]["id"] == "mlp/sgd-fast/baseline/cpu/r0"
    (curve,) = first["curves"]
    assert curve["label"] == "baseline" and len(curve["epochs"]) == 2
    assert first["metrics"]["accuracy_top1"] == pytest.approx(curve["epochs"][-1]["test_accuracy"])
    second = run_cell("baseline", suite=recipe)
    assert second["cache_hits"] == ["baseline"]
    assert second["curves"][0]["epochs"] == curve["epochs"] and second["curves"][0]["notes"]["cached"] is True


def test_recipes_suite_runs_end_to_end(tmp_path, host):
    """A two-recipe suite runs both recipes, their records name them, and the named model's cell trains the optioned model."""
    suite_path = tmp_path / "recipes.toml"
    suite_path.write_text(
        BASE.replace('[[techniques]]\nname = "int8"\nsteps = ["quantize"]\n', "")
        + "[measure]\nbatch_sizes = [8]\nmin_rounds = 2\nmax_rounds = 2\nmin_iterations = 5\nmin_seconds = 0.01\naa_control = false\n"
        + '[[include]]\nmodel = "cnn-dropout"\n'
    )
    assert len(expand(load_suite(suite_path, host))) == 2
    result = CliRunner().invoke(cli, ["run", str(suite_path), "--out", str(tmp_path / "runs"), "--no-cache"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (run_path,) = (tmp_path / "runs").iterdir()
    records = RunDir(run_path).records()
    assert sorted(record["cell"]["recipe"] for record in records) == ["adam", "sgd-step"]
    assert all(record["status"] == "ok" and record["curves"][0]["epochs"] for record in records)
    assert all(record["metrics"]["accuracy_top1"] > 0.15 for record in records), [record["metrics"]["accuracy_top1"] for record in records]
    info = json.loads((run_path / "run.json").read_text())
    assert "named_models" in info["suite"]["text"]


def test_ddp_ranks_train_with_the_cells_recipe(run_cell):
    """DDP processes get the cell's recipe (here one epoch instead of the suite's two) and report their learning curve."""
    recipe = {"train": {"epochs": 2}, "recipes": [{"name": "one-epoch", "epochs": 1, "optimizer": "adam", "lr": 0.005}]}
    record = run_cell("ddp", {"ddp": {"world_size": 1, "compare_single_process": False}}, suite=recipe, cache=False)
    assert record["status"] == "ok", record.get("error_message")
    (curve,) = [curve for curve in record["curves"] if curve["label"] == "ddp"]
    assert [point["epoch"] for point in curve["epochs"]] == [1]
    assert record["metrics"]["train_samples"] == 1437
