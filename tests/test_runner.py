"""The runner: every cell isolated in a worker, every outcome recorded, resume runs only what is missing."""

from __future__ import annotations

import json
import os
import platform

import pytest
from click.testing import CliRunner

from benchharness.cli import cli
from benchharness.store import RunDir
from tests.conftest import TEST_PLUGINS

FAULTY = str(TEST_PLUGINS / "faulty.py")
OBSERVER = str(TEST_PLUGINS / "observer.py")

MIXED_SUITE = """
name = "mixed"
models = ["mlp"]
devices = ["cpu", "cuda"]

[data]
name = "digits"

[[techniques]]
steps = ["baseline"]

[[techniques]]
steps = ["explode"]

[[techniques]]
steps = ["abort"]

[[techniques]]
steps = ["hang"]

[[techniques]]
steps = ["segfault"]

[[techniques]]
steps = ["oom"]

[[techniques]]
steps = ["refuse"]

[[techniques]]
steps = ["identity"]

[train]
epochs = 2
batch_size = 128
optimizer = "adam"
lr = 0.01

[measure]
batch_sizes = [1, 4]
warmup = 1
min_iterations = 3
min_seconds = 0.0
threads = 1

[run]
cell_timeout_s = 6

[[exclude]]
technique = "[abhios]*"
device = "cuda"
"""


def records_by_id(run_dir: RunDir) -> dict[str, dict]:
    """The run's records keyed by cell id."""
    return {record["cell"]["id"]: record for record in run_dir.records()}


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory):
    """One real run of a suite whose cells succeed, raise, abort, hang and refuse."""
    root = tmp_path_factory.mktemp("mixed")
    suite = root / "mixed.toml"
    suite.write_text(MIXED_SUITE)
    log = root / "events.jsonl"
    os.environ["BENCHHARNESS_TEST_OBSERVER_LOG"] = str(log)
    try:
        result = CliRunner().invoke(cli, ["run", str(suite), "--out", str(root / "runs"), "--plugin", FAULTY, "--plugin", OBSERVER])
    finally:
        del os.environ["BENCHHARNESS_TEST_OBSERVER_LOG"]
    (run_path,) = (root / "runs").iterdir()
    return result, RunDir(run_path), log


def test_every_cell_has_a_record_and_failures_do_not_stop_the_run(mixed_run):
    """Each cell is recorded with the status and error type its outcome deserves; exit code 1."""
    result, run_dir, _ = mixed_run
    records = records_by_id(run_dir)
    assert result.exit_code == 1, result.output
    assert set(records) == {
        "mlp/baseline/cpu/r0", "mlp/explode/cpu/r0", "mlp/abort/cpu/r0", "mlp/hang/cpu/r0",
        "mlp/refuse/cpu/r0", "mlp/identity/cpu/r0", "mlp/refuse/cuda/r0", "mlp/explode/cuda/r0",
        "mlp/segfault/cpu/r0", "mlp/oom/cpu/r0",
    }
    outcome = {cell: (r["status"], r["error_type"]) for cell, r in records.items()}
    assert outcome["mlp/baseline/cpu/r0"] == ("ok", None)
    assert outcome["mlp/explode/cpu/r0"] == ("failed", "exception")
    assert outcome["mlp/abort/cpu/r0"] == ("failed", "crash")
    assert outcome["mlp/hang/cpu/r0"] == ("timeout", "timeout")
    assert outcome["mlp/segfault/cpu/r0"] == ("failed", "crash")
    assert "SIGSEGV" in records["mlp/segfault/cpu/r0"]["error_message"]
    assert "Segmentation fault" in records["mlp/segfault/cpu/r0"]["traceback"] and "faulty.py" in records["mlp/segfault/cpu/r0"]["traceback"]
    assert outcome["mlp/oom/cpu/r0"] == ("failed", "oom")
    assert outcome["mlp/refuse/cpu/r0"] == ("skipped", "unsupported")
    assert outcome["mlp/identity/cpu/r0"] == ("ok", None)
    assert "boom from the explode technique" in records["mlp/explode/cpu/r0"]["error_message"]
    assert "boom from the explode technique" in records["mlp/explode/cpu/r0"]["traceback"]
    assert "SIGABRT" in records["mlp/abort/cpu/r0"]["error_message"]
    assert "about to abort" in records["mlp/abort/cpu/r0"]["traceback"]
    assert "cell_timeout_s = 6" in records["mlp/hang/cpu/r0"]["error_message"]
    assert "refuses to run on cpu" in records["mlp/refuse/cpu/r0"]["error_message"]


def test_cuda_cells_are_skipped_without_a_gpu(mixed_run):
    """Without a GPU a cuda cell is skipped with the probe's reason, never crashed."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    record = records_by_id(mixed_run[1])["mlp/explode/cuda/r0"]
    assert (record["status"], record["error_type"]) == ("skipped", "unsupported")
    assert "device 'cuda' unavailable" in record["error_message"]


def test_ok_record_holds_every_measurement(mixed_run):
    """An ok record carries accuracy, size, params, FLOPs, memory, training time and latency per batch size."""
    record = records_by_id(mixed_run[1])["mlp/baseline/cpu/r0"]
    metrics = record["metrics"]
    assert metrics["accuracy_top1"] > 0.8
    assert metrics["params"] == metrics["params_nonzero"] > 0
    assert metrics["size_bytes"] > metrics["params"] * 4
    assert metrics["flops"] > 0
    assert metrics["inference_peak_method"] == "tensor_tracking"
    assert metrics["params"] * 4 <= metrics["inference_peak_bytes"] < metrics["process_peak_rss_bytes"]
    assert metrics["accuracy_samples"] == 360 and len(metrics["accuracy_correct_bits"]) == 60
    assert metrics["train_s"] > 0
    assert record["threads"] == 1
    assert [(entry["batch_size"], entry["threads"]) for entry in record["latency"]] == [(1, 1), (4, 1)]
    for entry in record["latency"]:
        assert "threads_oversubscribed" not in entry and "thread_speedup_p50" not in entry
        assert len(entry["samples_ms"]) == entry["iterations"] >= 3
        assert entry["latency_p50_ci95_low_ms"] <= entry["latency_p50_ms"] <= entry["latency_p50_ci95_high_ms"]
        assert entry["throughput_sps"] > 0
    assert record["node"]["hostname"] == platform.node() and "isa" in record["node"]["device"]
    assert record["node"]["timed_on"] == [platform.node()]


def test_pipeline_without_training_step_is_trained_first(mixed_run):
    """A pipeline whose first step does not train gets a 'train' step, measured like every step."""
    record = records_by_id(mixed_run[1])["mlp/identity/cpu/r0"]
    assert [step["step"] for step in record["steps"]] == ["train", "identity"]
    assert record["steps"][0]["metrics"]["accuracy_top1"] == record["metrics"]["accuracy_top1"]
    assert "latency" not in record["steps"][0], "only the final model is timed, in rounds"


def test_cells_are_timed_in_interleaved_rounds_with_the_reference(mixed_run):
    """Ok cells of a group share rounds; the speedup and its CI come from them; the reference carries the A/A control."""
    run_dir = mixed_run[1]
    records = records_by_id(run_dir)
    baseline, identity = records["mlp/baseline/cpu/r0"], records["mlp/identity/cpu/r0"]
    assert baseline["measurement"] == identity["measurement"]
    measurement = identity["measurement"]
    assert measurement["reference_cell"] == "mlp/baseline/cpu/r0"
    assert 3 <= measurement["rounds"] <= 10 and measurement["stopped_by"] in {"target_ci", "max_rounds", "max_seconds"}
    for entry in identity["latency"]:
        assert entry["speedup_ci95_low"] <= entry["speedup_p50"] <= entry["speedup_ci95_high"]
        assert 0.5 < entry["speedup_p50"] < 2.0, "the identity pipeline times the baseline's own model"
        assert len(entry["round_p50_ms"]) == entry["rounds"] <= entry["rounds_timed"] == measurement["rounds"]
    for entry in baseline["latency"]:
        assert "speedup_p50" not in entry and entry["aa_speedup_ci95_low"] <= entry["aa_speedup"] <= entry["aa_speedup_ci95_high"]
    assert isinstance(identity["noisy"], bool) and (identity["noise_reason"] is None) != identity["noisy"]
    assert identity["plugins"]["benchharness.plugins.prune"] is not None
    assert not list((run_dir.path / "models").glob("*.pt")), "saved models are removed once their group is recorded"


def test_cells_run_in_other_processes(mixed_run):
    """A technique runs in a worker process, not in the runner."""
    record = records_by_id(mixed_run[1])["mlp/identity/cpu/r0"]
    assert record["notes"]["identity_saw_pid"] != os.getpid()


def test_run_json_describes_the_run(mixed_run):
    """run.json holds the suite as run, its hash, the environment and every probe."""
    info = mixed_run[1].read_info()
    assert info["suite"]["text"] == MIXED_SUITE
    assert len(info["suite"]["sha256"]) == 64
    assert info["environment"]["torch"]
    assert info["environment"]["python"].count(".") == 2
    assert "isa" in info["probes"]["cpu"]
    assert "available" in info["probes"]["cuda"]
    assert info["plugin_options"]["extra"] == [FAULTY, OBSERVER]
    assert len(info["cells"]) == 10
    assert info["executor"] == {"name": "local", "options": {}}


def test_hooks_observe_every_cell(mixed_run):
    """before_cell and after_cell are called for every cell, skipped ones included."""
    events = [json.loads(line) for line in mixed_run[2].read_text().splitlines()]
    after = {event["cell"]: event["status"] for event in events if event["event"] == "after_cell"}
    before = [event["cell"] for event in events if event["event"] == "before_cell"]
    assert len(before) == 10
    assert after["mlp/hang/cpu/r0"] == "timeout"


def test_resume_runs_only_missing_cells(mixed_run, tmp_path):
    """--resume runs exactly the cells that have no record, and nothing twice."""
    source = mixed_run[1]
    copy = RunDir(tmp_path / "copy")
    copy.path.mkdir()
    (copy.path / "run.json").write_text(source.run_path.read_text())
    lines = source.results_path.read_text().splitlines()
    kept = [line for line in lines if json.loads(line)["cell"]["id"] not in ("mlp/baseline/cpu/r0", "mlp/refuse/cuda/r0")]
    copy.results_path.write_text("\n".join(kept) + "\n")
    result = CliRunner().invoke(cli, ["run", "--resume", str(copy.path)])
    assert result.exit_code == 0, result.output
    ids = [record["cell"]["id"] for record in copy.records()]
    assert sorted(ids) == sorted(json.loads(line)["cell"]["id"] for line in lines)
    assert ids[-2:] == ["mlp/baseline/cpu/r0", "mlp/refuse/cuda/r0"]


NOTE_CELLS = 5
HARDENING_SUITE = """
name = "hardening"
models = ["mlp"]

[data]
name = "digits"

[[techniques]]
steps = ["baseline"]

[[techniques]]
steps = ["return-none"]

[[techniques]]
steps = ["return-state-dict"]

[[techniques]]
steps = ["cpu-oom"]

[[techniques]]
steps = ["nan-weights"]
nan-weights = { parameter = "3.weight" }

[[techniques]]
steps = ["inf-outputs"]

[[techniques]]
steps = ["bad-note"]
""" + "".join(f"""
[[techniques]]
name = "notes-{index}"
steps = ["tensor-notes"]
""" for index in range(NOTE_CELLS)) + """
[train]
epochs = 1
batch_size = 256
optimizer = "adam"
lr = 0.01

[measure]
batch_sizes = [1]
warmup = 1
min_iterations = 3
min_seconds = 0.0
min_rounds = 2
max_rounds = 2
threads = 1
"""


@pytest.fixture(scope="module")
def hardening_run(tmp_path_factory):
    """One real run of cells whose techniques misbehave without raising: bad return values, NaN, odd notes."""
    root = tmp_path_factory.mktemp("hardening")
    suite = root / "hardening.toml"
    suite.write_text(HARDENING_SUITE)
    result = CliRunner().invoke(cli, ["run", str(suite), "--out", str(root / "runs"), "--plugin", FAULTY])
    (run_path,) = (root / "runs").iterdir()
    return result, records_by_id(RunDir(run_path))


@pytest.mark.parametrize("technique, returned", [("return-none", "NoneType"), ("return-state-dict", "OrderedDict")])
def test_apply_must_return_a_module(hardening_run, technique, returned):
    """A technique whose apply() returns no nn.Module fails its cell with a message naming the technique and the type."""
    record = hardening_run[1][f"mlp/{technique}/cpu/r0"]
    assert (record["status"], record["error_type"]) == ("failed", "exception")
    assert f"technique '{technique}' returned {returned}; apply() must return an nn.Module" in record["error_message"]


def test_cpu_out_of_memory_is_oom(hardening_run):
    """torch's CPU allocator running out of memory is recorded as oom, not as an exception."""
    record = hardening_run[1]["mlp/cpu-oom/cpu/r0"]
    assert (record["status"], record["error_type"]) == ("failed", "oom")
    assert "DefaultCPUAllocator" in record["error_message"]


def test_non_finite_weights_and_outputs_diverge(hardening_run):
    """NaN weights or infinite outputs fail the cell as diverged, naming the layer; never an ok record at chance accuracy."""
    records = hardening_run[1]
    nan = records["mlp/nan-weights/cpu/r0"]
    assert (nan["status"], nan["error_type"]) == ("failed", "diverged")
    assert "non-finite weights in layer '3.weight'" in nan["error_message"]
    inf = records["mlp/inf-outputs/cpu/r0"]
    assert (inf["status"], inf["error_type"]) == ("failed", "diverged")
    assert "non-finite outputs" in inf["error_message"]


def test_notes_become_json_values_and_never_crash_a_cell(hardening_run):
    """Tensors, arrays, numpy scalars and paths in notes reach the record as JSON values, in every one of several cells."""
    result, records = hardening_run
    expected = {
        "tensor": [0.0, 1.0, 2.0],
        "scalar_tensor": 2.5,
        "array": [0, 1, 2, 3],
        "numpy_float": 0.5,
        "numpy_int": 7,
        "path": "/tmp/somewhere",
        "nested": {"inner": [[1, 1], [1, "a"]], "3": True},
    }
    for index in range(NOTE_CELLS):
        record = records[f"mlp/notes-{index}/cpu/r0"]
        assert (record["status"], record["error_type"]) == ("ok", None), record.get("error_message")
        notes = record["notes"]
        assert {name: notes[name] for name in expected} == expected
        assert isinstance(notes["weights_sum"], float)
    assert result.exit_code == 1, result.output


def test_a_note_that_is_no_json_value_fails_its_cell_clearly(hardening_run):
    """A note that cannot be converted fails the cell with a message naming it, instead of crashing the worker."""
    record = hardening_run[1]["mlp/bad-note/cpu/r0"]
    assert (record["status"], record["error_type"]) == ("failed", "exception")
    assert "note 'handle' is a lock; notes must be JSON values" in record["error_message"]


def test_a_cached_state_that_cannot_be_restored_is_rebuilt(tmp_path):
    """A cached state dict of the wrong shapes is not a failed cell: the model is trained again and the entry replaced."""
    import torch

    from benchharness.cache import ArtifactCache

    suite = tmp_path / "cached.toml"
    suite.write_text(HARDENING_SUITE.split("[[techniques]]")[0] + '[[techniques]]\nsteps = ["baseline"]\n' + HARDENING_SUITE[HARDENING_SUITE.index("[train]"):])
    cache = ArtifactCache(tmp_path / "cache")

    def run(out: str) -> dict:
        CliRunner().invoke(cli, ["run", str(suite), "--out", str(tmp_path / out), "--cache-dir", str(cache.root), "--plugin", FAULTY])
        (run_path,) = (tmp_path / out).iterdir()
        record = records_by_id(RunDir(run_path))["mlp/baseline/cpu/r0"]
        record["log"] = RunDir(run_path).log_path("mlp/baseline/cpu/r0").read_text()
        return record

    first = run("first")
    (entry,) = cache.entries()
    state = cache.load(entry.key)
    good_shapes = {name: tensor.shape for name, tensor in state["state"]["state_dict"].items()}
    state["state"]["state_dict"] = {name: torch.zeros(2, 2) for name in good_shapes}
    cache.save(entry.key, state, entry.description)
    second = run("second")
    assert (second["status"], second["error_type"]) == ("ok", None), second.get("error_message")
    assert second["cache_hits"] == [] and second["metrics"]["accuracy_top1"] == first["metrics"]["accuracy_top1"]
    assert "unusable cache entry evicted" in second["log"] and "size mismatch" in second["log"]
    restored = cache.load(entry.key)
    assert {name: tensor.shape for name, tensor in restored["state"]["state_dict"].items()} == good_shapes
    assert run("third")["cache_hits"] == ["baseline"]


def test_torn_last_line_is_ignored(tmp_path):
    """A record cut short by a kill is ignored with a warning; complete ones are kept."""
    run_dir = RunDir(tmp_path)
    cell = {"id": "a", "model": "mlp", "technique": "explode", "device": "cpu", "repeat": 0, "steps": []}
    run_dir.append({"cell": cell, "status": "failed"})
    with open(run_dir.results_path, "a") as file:
        file.write('{"cell": {"id": "b"}, "sta')
    assert run_dir.finished_cell_ids() == {"a"}
    with pytest.warns(UserWarning, match="incomplete last record"):
        assert [record["cell"]["id"] for record in run_dir.records()] == ["a"]


def test_quick_suite_is_the_default_and_learns_digits(tmp_path):
    """`benchharness run` with no suite runs the bundled quick suite; baselines are well above 90%."""
    result = CliRunner().invoke(cli, ["run", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (run_path,) = tmp_path.iterdir()
    assert run_path.name.startswith("quick-")
    records = RunDir(run_path).records()
    ok = [record for record in records if record["status"] == "ok"]
    assert {record["cell"]["model"] for record in ok} == {"small_cnn", "mlp"}
    for record in ok:
        assert record["metrics"]["accuracy_top1"] > 0.93, record["cell"]["id"]
    by_id = {record["cell"]["id"]: record for record in records}
    compiled, torchao = by_id["mlp/compile/cpu/r0"], by_id["mlp/ao-int8-compiled/cpu/r0"]
    for record in (compiled, torchao):
        assert record["status"] == "ok", record.get("error_message")
        assert record["notes"]["compile_graph_breaks"] == 0 and record["notes"]["compile_s"] > 0
        assert [entry["recompilations"] for entry in record["latency"]] == [0, 0], "every graph compiled before it was timed"
        assert record["metrics"]["speedup_expected"] and record["metrics"]["speedup_reason"].startswith("compiled graph (inductor")
    layers = torchao["notes"]["quantize_int8_dynamic_linear_layers"]
    assert layers.split(" of ")[0] == layers.split(" of ")[1] != "0" and "torchao" in torchao["metrics"]["speedup_reason"]
    assert 8 < torchao["metrics"]["bits_per_weight"] < 10
    flat = result.output.replace("\n", "")
    assert f"results: {run_path / 'results.jsonl'}" in flat
    assert f"report:  {run_path / 'report.html'}" in flat
    assert (run_path / "report.html").stat().st_size > 1_000_000 and (run_path / "report.csv").is_file()


def test_a_raising_check_suite_is_a_suite_problem_naming_the_plugin():
    """A plugin's check_suite that raises fails validation with a problem naming the technique and the plugin, not a traceback."""
    from benchharness.errors import SuiteError
    from benchharness.host import PluginHost, PluginOptions
    from benchharness.suite import load_suite_text

    path = str(TEST_PLUGINS / "raising_checks.py")
    host = PluginHost(PluginOptions(extra=(path,), entry_points=False))
    text = 'models = ["mlp"]\n[data]\nname = "digits"\n[[techniques]]\nsteps = ["raising-suite-check"]\n'
    with pytest.raises(SuiteError) as raised:
        load_suite_text(text, "raising.toml", host)
    assert f"technique 'raising-suite-check' (plugin {path!r}) raised in check_suite: KeyError: 'teacher'" in str(raised.value)


@pytest.mark.slow
def test_a_raising_unsupported_reason_fails_its_cell_only(run_cell):
    """A plugin's unsupported_reason that raises fails that cell with the error; the run goes on and ends normally."""
    record = run_cell("raising-device-check", plugins=(str(TEST_PLUGINS / "raising_checks.py"),))
    assert record["status"] == "failed" and record["error_type"] == "exception"
    assert record["error_message"].startswith("deciding whether the cell can run raised AttributeError: no attribute 'DEVICE_TYPE'")


THREADS_SUITE = """
name = "threads"
models = ["mlp"]

[data]
name = "digits"

[[techniques]]
steps = ["baseline"]

[[techniques]]
steps = ["identity"]

[train]
epochs = 1
batch_size = 256

[measure]
batch_sizes = [1, 8]
warmup = 2
min_iterations = 10
min_seconds = 0.02
min_rounds = 2
max_rounds = 2
"""


@pytest.mark.slow
def test_latency_is_timed_at_every_thread_count(tmp_path):
    """--set measure.threads=[1,2]: every cell gets an entry per (threads, batch size), compared with the reference at the same count."""
    suite = tmp_path / "threads.toml"
    suite.write_text(THREADS_SUITE)
    result = CliRunner().invoke(cli, ["run", str(suite), "--out", str(tmp_path / "runs"), "--plugin", FAULTY, "--set", "measure.threads=[1, 2]", "--no-cache"])
    assert result.exit_code == 0, result.output
    (run_path,) = (tmp_path / "runs").iterdir()
    records = records_by_id(RunDir(run_path))
    baseline, identity = records["mlp/baseline/cpu/r0"], records["mlp/identity/cpu/r0"]
    for record in (baseline, identity):
        assert record["status"] == "ok" and record["threads"] == 2, "cells are built with the largest count"
        assert [(entry["threads"], entry["batch_size"]) for entry in record["latency"]] == [(1, 1), (1, 8), (2, 1), (2, 8)]
        for entry in record["latency"]:
            assert 0.001 < entry["latency_p50_ms"] < 100 and len(entry["samples_ms"]) >= 10 * entry["rounds"]
        assert all(entry["thread_speedup_p50"] > 0 and entry["thread_speedup_base_threads"] == 1 for entry in record["latency"][2:])
        assert all("thread_speedup_p50" not in entry for entry in record["latency"][:2])
    for entry in identity["latency"]:
        assert 0.5 < entry["speedup_p50"] < 2.0, "the identity pipeline times the baseline's own model, at the same thread count"
    assert all(entry["aa_speedup_ci95_low"] <= entry["aa_speedup"] <= entry["aa_speedup_ci95_high"] for entry in baseline["latency"])
    assert "at batch 8 at 2 threads" in " ".join(result.output.split())
