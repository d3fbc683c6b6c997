"""The matrix: a suite expanded into cells, in run order, after include and exclude rules."""

from __future__ import annotations

import pytest

from benchharness.matrix import cell_id, expand, group_cells
from benchharness.suite import MatchRule, load_suite_text

HEAD = 'models = ["small_cnn", "mlp"]\ndevices = ["cpu", "cuda"]\n[data]\nname = "digits"\n'
PIPELINES = '[[techniques]]\nsteps = ["baseline"]\n[[techniques]]\nname = "prune-50"\nsteps = ["prune"]\nprune = { amount = 0.5 }\n'


def load(text: str, host):
    """A suite from TOML text."""
    return load_suite_text(text, "matrix.toml", host)


def ids(text: str, host) -> list[str]:
    """The cell ids of a suite's matrix, in order."""
    return [cell.id for cell in expand(load(text, host))]


def test_cell_id_format():
    """A cell id is model/technique/device/r<repeat>."""
    assert cell_id("torchvision:resnet50", "prune-50", "cuda", 3) == "torchvision:resnet50/prune-50/cuda/r3"


def test_expand_order_and_ids(host):
    """Cells run repeat by repeat, then model, then pipeline, then device, as the suite lists them."""
    assert ids(HEAD + PIPELINES, host) == [
        "small_cnn/baseline/cpu/r0",
        "small_cnn/baseline/cuda/r0",
        "small_cnn/prune-50/cpu/r0",
        "small_cnn/prune-50/cuda/r0",
        "mlp/baseline/cpu/r0",
        "mlp/baseline/cuda/r0",
        "mlp/prune-50/cpu/r0",
        "mlp/prune-50/cuda/r0",
    ]


def test_cell_fields_and_steps(host):
    """Each cell carries its model, pipeline label, device, and steps with their validated configs."""
    suite = load(HEAD + PIPELINES, host)
    cell = expand(suite)[3]
    assert (cell.model, cell.technique, cell.device, cell.repeat, cell.seed) == ("small_cnn", "prune-50", "cuda", 0, 0)
    assert [step.technique for step in cell.steps] == ["prune"]
    assert cell.steps[0].config == suite.step_configs[1]["prune"]
    assert cell.steps[0].config["amount"] == 0.5
    assert cell.as_dict()["steps"] == [{"technique": "prune", "config": cell.steps[0].config}]


def test_cell_configs_are_copies(host):
    """Changing one cell's step config changes neither the suite nor another cell."""
    suite = load(HEAD + PIPELINES, host)
    cells = expand(suite)
    cells[2].steps[0].config["amount"] = 0.9
    assert suite.step_configs[1]["prune"]["amount"] == 0.5
    assert cells[3].steps[0].config["amount"] == 0.5
    assert expand(suite)[2].steps[0].config["amount"] == 0.5


def test_pipeline_steps_keep_their_order(host):
    """A multi-step pipeline becomes steps in the order written, each with its own config."""
    text = 'models = ["mlp"]\n[data]\nname = "digits"\n[[techniques]]\nsteps = ["prune", "quantize"]\nquantize = { method = "dynamic" }\n'
    [cell] = expand(load(text, host))
    assert cell.technique == "prune+quantize"
    assert [step.technique for step in cell.steps] == ["prune", "quantize"]
    assert cell.steps[1].config["method"] == "dynamic"


def test_repeats_and_seeds(host):
    """Repeat r of every cell has seed = seed + r, and repeats are the outermost loop."""
    cells = expand(load("seed = 7\nrepeats = 3\n" + HEAD, host))
    assert len(cells) == 3 * 2 * 2
    assert [cell.repeat for cell in cells] == [0] * 4 + [1] * 4 + [2] * 4
    assert all(cell.seed == 7 + cell.repeat for cell in cells)
    assert [cell.id for cell in cells[4:8]] == ["small_cnn/baseline/cpu/r1", "small_cnn/baseline/cuda/r1", "mlp/baseline/cpu/r1", "mlp/baseline/cuda/r1"]
    assert len({cell.id for cell in cells}) == len(cells)


@pytest.mark.parametrize(
    "rules, expected",
    [
        ('[[include]]\ntechnique = "prune*"\n', ["small_cnn/prune-50/cpu/r0", "small_cnn/prune-50/cuda/r0", "mlp/prune-50/cpu/r0", "mlp/prune-50/cuda/r0"]),
        ('[[include]]\nmodel = "small_*"\ndevice = "cpu"\n', ["small_cnn/baseline/cpu/r0", "small_cnn/prune-50/cpu/r0"]),
        ('[[include]]\nmodel = "mlp"\ntechnique = "base*"\n[[include]]\ndevice = "cu?a"\ntechnique = "prune-50"\n',
         ["small_cnn/prune-50/cuda/r0", "mlp/baseline/cpu/r0", "mlp/baseline/cuda/r0", "mlp/prune-50/cuda/r0"]),
    ],
)
def test_include_rules_keep_only_matching_cells(host, rules, expected):
    """With include rules, a cell runs when every key of some rule matches it (glob patterns)."""
    assert ids(HEAD + PIPELINES + rules, host) == expected


@pytest.mark.parametrize(
    "rules, expected",
    [
        ('[[exclude]]\ndevice = "cuda"\n', ["small_cnn/baseline/cpu/r0", "small_cnn/prune-50/cpu/r0", "mlp/baseline/cpu/r0", "mlp/prune-50/cpu/r0"]),
        ('[[exclude]]\nmodel = "small_cnn"\ntechnique = "prune*"\n',
         ["small_cnn/baseline/cpu/r0", "small_cnn/baseline/cuda/r0", "mlp/baseline/cpu/r0", "mlp/baseline/cuda/r0", "mlp/prune-50/cpu/r0", "mlp/prune-50/cuda/r0"]),
        ('[[exclude]]\nmodel = "mlp"\n[[exclude]]\ndevice = "cuda"\n', ["small_cnn/baseline/cpu/r0", "small_cnn/prune-50/cpu/r0"]),
    ],
)
def test_exclude_rules_drop_matching_cells(host, rules, expected):
    """A cell matching every key of any exclude rule is dropped."""
    assert ids(HEAD + PIPELINES + rules, host) == expected


def test_include_and_exclude_combined(host):
    """Include first narrows the matrix; exclude then drops from what is left."""
    rules = '[[include]]\nmodel = "mlp"\n[[exclude]]\ntechnique = "baseline"\ndevice = "cuda"\n'
    assert ids(HEAD + PIPELINES + rules, host) == ["mlp/baseline/cpu/r0", "mlp/prune-50/cpu/r0", "mlp/prune-50/cuda/r0"]


def test_rules_apply_to_every_repeat(host):
    """Include and exclude filter every repeat alike."""
    rules = '[[include]]\ndevice = "cpu"\n[[exclude]]\ntechnique = "prune*"\n'
    assert ids("repeats = 2\n" + HEAD + PIPELINES + rules, host) == [
        "small_cnn/baseline/cpu/r0",
        "mlp/baseline/cpu/r0",
        "small_cnn/baseline/cpu/r1",
        "mlp/baseline/cpu/r1",
    ]


def test_quick_suite_excludes_self_distillation(host):
    """The quick suite drops distillation into small_cnn (its own teacher), its DDP, pipeline, compile and torchao cells and its bf16 CPU cell, and keeps everything else."""
    from tests.conftest import ROOT

    suite = load((ROOT / "suites" / "quick.toml").read_text(), host)
    cells = expand(suite)
    spec = suite.spec
    assert len(cells) == len(spec.models) * len(spec.techniques) * len(spec.devices) - 6 * len(spec.devices) - 1
    for technique in ("compile", "ao-int8-compiled"):
        assert [cell.id for cell in cells if cell.technique == technique] == [f"mlp/{technique}/cpu/r0", f"mlp/{technique}/cuda/r0"]
    assert [cell.id for cell in cells if cell.technique == "amp-bf16"] == ["small_cnn/amp-bf16/cuda/r0", "mlp/amp-bf16/cpu/r0", "mlp/amp-bf16/cuda/r0"]
    assert [cell.id for cell in cells if cell.technique == "ddp-2"] == ["mlp/ddp-2/cpu/r0", "mlp/ddp-2/cuda/r0"]
    assert [cell.id for cell in cells if cell.technique == "pipeline-2"] == ["mlp/pipeline-2/cpu/r0", "mlp/pipeline-2/cuda/r0"]
    assert not [cell for cell in cells if cell.model == "small_cnn" and cell.technique.startswith("distill")]
    assert [cell.id for cell in cells if cell.model == "mlp" and cell.technique.startswith("distill")] == [
        "mlp/distill-from-cnn/cpu/r0",
        "mlp/distill-from-cnn/cuda/r0",
        "mlp/distill-prune-int8/cpu/r0",
        "mlp/distill-prune-int8/cuda/r0",
    ]


@pytest.mark.parametrize(
    "rule, matches",
    [
        (MatchRule(), True),
        (MatchRule(model="mlp"), True),
        (MatchRule(model="MLP"), False),
        (MatchRule(model="m*", technique="prune-[0-9]*"), True),
        (MatchRule(model="m*", technique="prune-[0-9]*", device="cuda"), False),
        (MatchRule(technique="prune"), False),
    ],
)
def test_match_rule(rule, matches):
    """A rule matches when every given pattern matches (case-sensitive globs); absent keys match anything."""
    assert rule.matches("mlp", "prune-50", "cpu") is matches


def test_groups_put_the_reference_first(host):
    """Cells are timed in groups of one model on one device, the reference first; every cell is recorded."""
    suite = load(HEAD + PIPELINES, host)
    groups = group_cells(expand(suite), suite)
    assert [group.label for group in groups] == ["small_cnn/cpu/r0", "small_cnn/cuda/r0", "mlp/cpu/r0", "mlp/cuda/r0"]
    first = groups[0]
    assert [cell.id for cell in first.cells] == ["small_cnn/baseline/cpu/r0", "small_cnn/prune-50/cpu/r0"]
    assert first.reference == "small_cnn/baseline/cpu/r0" and first.to_record == {cell.id for cell in first.cells}


def test_a_resumed_group_times_its_recorded_reference_again_without_recording_it(host):
    """On --resume the reference takes part in the rounds even when it already has a record."""
    suite = load(HEAD + PIPELINES, host)
    todo = [cell for cell in expand(suite) if cell.id == "mlp/prune-50/cpu/r0"]
    (group,) = group_cells(todo, suite)
    assert [cell.id for cell in group.cells] == ["mlp/baseline/cpu/r0", "mlp/prune-50/cpu/r0"]
    assert group.to_record == {"mlp/prune-50/cpu/r0"}


def test_a_group_whose_reference_is_excluded_has_none(host):
    """When the rules exclude the reference cell, the group is timed without one."""
    suite = load(HEAD + PIPELINES + '[[exclude]]\ntechnique = "baseline"\nmodel = "mlp"\n', host)
    mlp_cpu = [group for group in group_cells(expand(suite), suite) if group.label == "mlp/cpu/r0"][0]
    assert mlp_cpu.reference is None and [cell.id for cell in mlp_cpu.cells] == ["mlp/prune-50/cpu/r0"]
