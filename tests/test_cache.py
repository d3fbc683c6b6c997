"""The artifact cache: keys, integrity, and a second run of an unchanged suite that trains nothing."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from benchharness.cache import ArtifactCache, cache_key
from benchharness.cli import cli
from benchharness.store import RunDir

SUITE = """
name = "cached"
models = ["mlp"]
[data]
name = "digits"
[[techniques]]
steps = ["baseline"]
[[techniques]]
name = "channels"
steps = ["prune"]
prune = { method = "channels", amount = 0.5, finetune_epochs = 1 }
[[techniques]]
name = "qat"
steps = ["quantize"]
quantize = { method = "qat", qat_epochs = 1 }
[[techniques]]
name = "pipeline"
steps = ["distill", "prune", "quantize"]
distill = { teacher = "mlp", epochs = 2 }
prune = { method = "magnitude", amount = 0.5, finetune_epochs = 1 }
quantize = { method = "dynamic" }
[train]
epochs = 3
batch_size = 128
optimizer = "adam"
lr = 0.01
[measure]
batch_sizes = [1]
warmup = 1
min_iterations = 3
min_seconds = 0
threads = 1
"""


def test_round_trip_and_keys(tmp_path):
    """A saved state loads back equal; the key depends on every part."""
    cache = ArtifactCache(tmp_path)
    key = cache_key([{"model": "mlp"}, {"step": "train"}])
    assert key != cache_key([{"model": "mlp"}, {"step": "train", "config": {"x": 1}}])
    assert key == cache_key([{"model": "mlp"}, {"step": "train"}])
    assert cache.load(key) is None
    cache.save(key, {"state_dict": {"w": torch.arange(4.0)}}, "train of mlp")
    assert torch.equal(cache.load(key)["state_dict"]["w"], torch.arange(4.0))
    (entry,) = cache.entries()
    assert entry.key == key and entry.description == "train of mlp" and entry.size_bytes > 0


def test_corrupt_entry_is_removed_not_loaded(tmp_path):
    """A payload whose hash no longer matches is deleted and reported absent."""
    cache = ArtifactCache(tmp_path)
    key = cache_key("corrupt")
    cache.save(key, {"state_dict": {"w": torch.ones(100)}}, "x")
    payload = next(tmp_path.glob("*/*/state.pt"))
    payload.write_bytes(payload.read_bytes()[:-10])
    assert cache.load(key) is None
    assert cache.entries() == []


def test_code_in_a_tampered_payload_does_not_run(tmp_path):
    """Payloads are loaded with weights_only=True: a pickled object is refused, not executed."""
    import hashlib
    import io
    import json

    cache = ArtifactCache(tmp_path)
    key = cache_key("tampered")
    cache.save(key, {"state_dict": {}}, "x")
    folder = next(tmp_path.glob("*/*/"))
    buffer = io.BytesIO()
    torch.save({"state_dict": {}, "evil": Exploit()}, buffer)
    (folder / "state.pt").write_bytes(buffer.getvalue())
    meta = json.loads((folder / "meta.json").read_text())
    meta["sha256"] = hashlib.sha256(buffer.getvalue()).hexdigest()
    (folder / "meta.json").write_text(json.dumps(meta))
    assert cache.load(key) is None
    assert not (tmp_path / "pwned").exists()


class Exploit:
    """Writes a file when unpickled."""

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(__file__).parent / "never-created",))


def run_suite(suite, out, cache_dir):
    """Run the suite with the given cache; return its records by cell id."""
    result = CliRunner().invoke(cli, ["run", str(suite), "--out", str(out), "--cache-dir", str(cache_dir)])
    assert result.exit_code == 0, result.output
    (run_path,) = [path for path in out.iterdir() if path.is_dir()]
    return {record["cell"]["id"]: record for record in RunDir(run_path).records()}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The same suite run twice against one cache."""
    root = tmp_path_factory.mktemp("cached")
    suite = root / "cached.toml"
    suite.write_text(SUITE)
    cache_dir = root / "cache"
    first = run_suite(suite, root / "first", cache_dir)
    second = run_suite(suite, root / "second", cache_dir)
    return first, second, suite, cache_dir, root


def test_second_run_trains_nothing(two_runs):
    """Every cell of the second run restores its trained models and gets the same accuracy."""
    first, second, *_ = two_runs
    assert set(first) == set(second) and len(first) == 4
    for cell_id, record in second.items():
        assert record["status"] == "ok", record.get("error_message")
        assert first[cell_id]["metrics"]["train_samples"] > 0
        assert record["metrics"]["train_samples"] == 0, cell_id
        assert record["metrics"]["accuracy_top1"] == first[cell_id]["metrics"]["accuracy_top1"], cell_id
    assert second["mlp/pipeline/cpu/r0"]["cache_hits"] == ["distill", "prune"]
    assert second["mlp/pipeline/cpu/r0"]["notes"] == first["mlp/pipeline/cpu/r0"]["notes"]
    assert "distill_gain_top1" in second["mlp/pipeline/cpu/r0"]["notes"]
    assert second["mlp/qat/cpu/r0"]["cache_hits"] == ["train", "quantize"]


def test_baseline_and_implicit_training_share_one_entry(two_runs):
    """The baseline cell, the training before 'prune' and the teacher are one cached model."""
    first, *_ = two_runs
    assert first["mlp/baseline/cpu/r0"]["cache_hits"] == []
    assert first["mlp/channels/cpu/r0"]["cache_hits"] == ["train"]
    assert first["mlp/channels/cpu/r0"]["steps"][0]["metrics"]["accuracy_top1"] == first["mlp/baseline/cpu/r0"]["metrics"]["accuracy_top1"]


def test_pipeline_records_every_step(two_runs):
    """A distill -> prune -> quantize pipeline has metrics after each step."""
    record = two_runs[0]["mlp/pipeline/cpu/r0"]
    assert [step["step"] for step in record["steps"]] == ["distill", "prune", "quantize"]
    sparsity = [step["metrics"]["sparsity"] for step in record["steps"]]
    assert sparsity[0] < 0.01 and sparsity[1] == pytest.approx(0.5, abs=0.02)
    assert record["steps"][2]["metrics"]["quantized_modules"] > 0
    assert record["steps"][2]["metrics"]["size_bytes"] < record["steps"][1]["metrics"]["size_bytes"]
    assert record["steps"][2]["metrics"]["flops"] == record["steps"][1]["metrics"]["flops"]
    assert record["metrics"]["speedup_expected"] is True


def test_no_cache_trains_again(two_runs):
    """--no-cache neither reads nor writes the cache."""
    *_, suite, cache_dir, root = two_runs
    before = len(ArtifactCache(cache_dir).entries())
    result = CliRunner().invoke(cli, ["run", str(suite), "--out", str(root / "nocache"), "--cache-dir", str(cache_dir), "--no-cache"])
    assert result.exit_code == 0, result.output
    (run_path,) = (root / "nocache").iterdir()
    assert all(record["metrics"]["train_samples"] > 0 and not record["cache_hits"] for record in RunDir(run_path).records())
    assert len(ArtifactCache(cache_dir).entries()) == before


def test_cache_list_and_clear(two_runs):
    """`cache list` shows the entries; `cache clear` removes them."""
    *_, cache_dir, _ = two_runs
    listed = CliRunner().invoke(cli, ["cache", "list", "--cache-dir", str(cache_dir)], terminal_width=200)
    assert listed.exit_code == 0 and "train of mlp on digits" in listed.output
    count = len(ArtifactCache(cache_dir).entries())
    cleared = CliRunner().invoke(cli, ["cache", "clear", "--cache-dir", str(cache_dir)])
    assert cleared.exit_code == 0 and f"removed {count} entries" in cleared.output
    assert ArtifactCache(cache_dir).entries() == []
