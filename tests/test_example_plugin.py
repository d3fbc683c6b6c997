"""The example third-party package in examples/ registers through its entry point like any installed plugin."""

from __future__ import annotations

import tomllib

import torch

from benchharness.host import PluginHost, PluginOptions
from tests.conftest import ROOT

EXAMPLE = ROOT / "examples" / "benchharness-weight-noise"


def test_example_declares_the_entry_point():
    """Its pyproject puts the module in the 'benchharness' entry-point group."""
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["benchharness"] == {"weight_noise": "benchharness_weight_noise"}


def test_example_plugin_registers_and_perturbs(monkeypatch):
    """Loaded by module name, it registers weight_noise, which changes weights by the asked relative amount."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    host = PluginHost(PluginOptions(extra=("benchharness_weight_noise",), entry_points=False, disabled=()))
    technique = host.techniques["weight_noise"]
    assert host.techniques.entries["weight_noise"].plugin == "benchharness_weight_noise"
    torch.manual_seed(0)
    model = torch.nn.Linear(100, 100)
    before = model.weight.detach().clone()

    class Context:
        notes: dict = {}

    technique.apply(model, technique.Config(relative_std=0.1), Context())
    change = (model.weight.detach() - before).std() / before.std()
    assert 0.08 < float(change) < 0.12
    assert Context.notes["weight_noise_relative_std"] == 0.1
