"""The artifact cache: keys, integrity, and a second run of an unchanged suite that trains nothing."""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import shutil
import sys
import textwrap
from importlib import metadata

import pytest
import torch
from click.testing import CliRunner

import benchharness
from benchharness.cache import ArtifactCache, CacheWarning, cache_key
from benchharness.cli import cli
from benchharness.host import PluginHost, PluginOptions
from benchharness.matrix import expand
from benchharness.store import RunDir
from benchharness.suite import load_suite_text
from benchharness.worker import CellRun, CellTask

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


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_corrupt_entry_is_removed_not_loaded(tmp_path, damage):
    """A truncated payload, or one whose hash no longer matches, is deleted with a warning and reported absent."""
    cache = ArtifactCache(tmp_path)
    key = cache_key("corrupt")
    cache.save(key, {"state_dict": {"w": torch.ones(100)}}, "x")
    payload = next(tmp_path.glob("*/*/state.pt"))
    data = payload.read_bytes()
    payload.write_bytes(data[:-10] if damage == "truncated" else data[:-10] + bytes(10))
    with pytest.warns(CacheWarning, match="bytes where" if damage == "truncated" else "does not match the SHA-256"):
        assert cache.load(key) is None
    assert cache.scan() == ([], [])


def test_code_in_a_tampered_payload_does_not_run(tmp_path):
    """Payloads are loaded with weights_only=True: a pickled object is refused, not executed."""
    cache = ArtifactCache(tmp_path / "cache")
    key = cache_key("tampered")
    cache.save(key, {"state_dict": {}}, "x")
    rewrite_payload(tmp_path / "cache", key, {"state_dict": {}, "evil": Exploit(tmp_path / "pwned")})
    with pytest.warns(CacheWarning, match="weights_only"):
        assert cache.load(key) is None
    assert not (tmp_path / "pwned").exists()
    buffer = io.BytesIO()
    torch.save(Exploit(tmp_path / "control"), buffer)
    torch.load(io.BytesIO(buffer.getvalue()), weights_only=False)
    assert (tmp_path / "control").exists()


class Exploit:
    """Creates ``target`` when unpickled."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.target),))


def rewrite_payload(cache_dir, key, value) -> None:
    """Replace an entry's payload with ``value``, its meta.json updated to match (hash and size)."""
    folder = cache_dir / key[:2] / key
    buffer = io.BytesIO()
    torch.save(value, buffer)
    (folder / "state.pt").write_bytes(buffer.getvalue())
    meta = json.loads((folder / "meta.json").read_text())
    meta.update(sha256=hashlib.sha256(buffer.getvalue()).hexdigest(), size_bytes=len(buffer.getvalue()))
    (folder / "meta.json").write_text(json.dumps(meta))


def saved_entry(cache_dir, name="entry"):
    """A cache in ``cache_dir`` holding one good entry; returns the cache, the key and the entry's folder."""
    cache = ArtifactCache(cache_dir)
    key = cache_key(name)
    cache.save(key, {"state": {"state_dict": {"w": torch.ones(3)}}, "notes": {}}, f"train of {name}")
    return cache, key, cache_dir / key[:2] / key


BROKEN_META = {
    "a list": lambda meta: [],
    "no key": lambda meta: {name: value for name, value in meta.items() if name != "key"},
    "another entry's key": lambda meta: {**meta, "key": cache_key("another")},
    "a text size": lambda meta: {**meta, "size_bytes": "big"},
    "no hash": lambda meta: {name: value for name, value in meta.items() if name != "sha256"},
}


@pytest.mark.parametrize("damage", BROKEN_META.values(), ids=BROKEN_META.keys())
def test_a_malformed_meta_is_evicted_with_a_warning(tmp_path, damage):
    """A meta.json that is not the object save() writes is a miss: the entry is deleted, a warning says why."""
    cache, key, folder = saved_entry(tmp_path)
    meta_path = folder / "meta.json"
    meta_path.write_text(json.dumps(damage(json.loads(meta_path.read_text()))))
    with pytest.warns(CacheWarning, match="meta.json") as warned:
        assert cache.load(key) is None
    assert str(folder) in str(warned[0].message)
    assert not folder.exists() and cache.evicted == [(key, cache.evicted[0][1])]
    cache.save(key, {"state": {}, "notes": {}}, "rebuilt")
    assert cache.load(key) == {"state": {}, "notes": {}}


@pytest.mark.parametrize(
    "payload, reason",
    [([1, 2], "holds list"), ({"state": {}}, "'notes'"), ({"state": [], "notes": {}}, "'state'")],
    ids=["not a dict", "no notes", "state not a dict"],
)
def test_a_payload_of_the_wrong_shape_is_evicted(tmp_path, payload, reason):
    """A payload that is not a dict, or lacks a field the caller requires, is evicted, not returned."""
    cache, key, folder = saved_entry(tmp_path)
    rewrite_payload(tmp_path, key, payload)
    with pytest.warns(CacheWarning, match=reason):
        assert cache.load(key, fields={"state": dict, "notes": dict}) is None
    assert not folder.exists()


def test_a_wrong_shaped_state_dict_is_evicted_by_its_restorer(tmp_path):
    """A state dict that does not fit the model fails on restore; evict() deletes it and warns with the reason."""
    cache = ArtifactCache(tmp_path)
    key = cache_key("linear")
    cache.save(key, {"state": {"state_dict": torch.nn.Linear(3, 2).state_dict()}, "notes": {}}, "train of linear")
    entry = cache.load(key, fields={"state": dict, "notes": dict})
    with pytest.raises(RuntimeError, match="size mismatch") as failure:
        torch.nn.Linear(4, 2).load_state_dict(entry["state"]["state_dict"])
    with pytest.warns(CacheWarning, match="size mismatch"):
        cache.evict(key, f"its state does not fit the model: {failure.value}")
    assert cache.load(key) is None and cache.entries() == []


def test_a_key_that_is_not_a_digest_is_refused(tmp_path):
    """A key is a SHA-256 hex digest: anything else, which could name a path outside the cache, is an error."""
    cache = ArtifactCache(tmp_path / "cache")
    for key in ["../../outside", "x" * 64, cache_key("k")[:-1] + "/"]:
        with pytest.raises(ValueError, match="cache_key"):
            cache.save(key, {"state": {}}, "x")
        with pytest.raises(ValueError, match="cache_key"):
            cache.load(key)
    assert not (tmp_path / "outside").exists()


def test_an_entry_that_cannot_be_written_is_a_warning_not_a_failure(tmp_path):
    """A cache directory that cannot hold entries (here a file) costs the cache, never the cell: save() warns."""
    (tmp_path / "cache").write_text("not a directory")
    cache = ArtifactCache(tmp_path / "cache")
    key = cache_key("unwritable")
    with pytest.warns(CacheWarning, match="not cached"):
        cache.save(key, {"state": {}, "notes": {}}, "x")
    assert cache.load(key) is None and cache.scan() == ([], [])
    assert cache.clear() == 0 and (tmp_path / "cache").read_text() == "not a directory"


def test_a_linked_entry_is_unusable_and_its_target_survives(tmp_path):
    """An entry folder that is a symbolic link is not read through: it is evicted (the link, not its target)."""
    _, key, folder = saved_entry(tmp_path / "elsewhere")
    cache = ArtifactCache(tmp_path / "cache")
    (tmp_path / "cache" / key[:2]).mkdir(parents=True)
    (tmp_path / "cache" / key[:2] / key).symlink_to(folder)
    assert [entry.reason for entry in cache.scan()[1]] == ["not an entry folder"]
    with pytest.warns(CacheWarning, match="not an entry folder"):
        assert cache.load(key) is None
    assert not (tmp_path / "cache" / key[:2] / key).is_symlink() and (folder / "state.pt").exists()
    cache.save(key, {"state": {}, "notes": {}}, "rebuilt")
    assert cache.load(key) == {"state": {}, "notes": {}}


def damaged_cache(cache_dir):
    """A cache with one good entry and four unusable ones; returns the good key and the unusable folders."""
    _, good, _ = saved_entry(cache_dir, "good")
    broken = []
    for name, content in [("list", "[]"), ("keyless", '{"description": "x"}'), ("not-json", "{")]:
        _, key, folder = saved_entry(cache_dir, name)
        (folder / "meta.json").write_text(content)
        broken.append(folder)
    _, key, folder = saved_entry(cache_dir, "truncated")
    (folder / "state.pt").write_bytes((folder / "state.pt").read_bytes()[:10])
    broken.append(folder)
    return good, broken


def test_entries_and_clear_survive_unusable_entries(tmp_path):
    """entries() lists the usable entries only, scan() names the others, clear() removes them all."""
    good, broken = damaged_cache(tmp_path)
    cache = ArtifactCache(tmp_path)
    assert [entry.key for entry in cache.entries()] == [good]
    usable, unusable = cache.scan()
    assert [entry.key for entry in usable] == [good]
    assert sorted(entry.path for entry in unusable) == sorted(broken)
    assert all(entry.reason for entry in unusable)
    assert cache.clear() == 5
    assert cache.scan() == ([], []) and not any(tmp_path.iterdir())


def test_cache_commands_do_not_crash_on_unusable_entries(tmp_path):
    """`cache list` shows the usable entries and `cache clear` removes every entry, usable or not."""
    good, broken = damaged_cache(tmp_path)
    listed = CliRunner().invoke(cli, ["cache", "list", "--cache-dir", str(tmp_path)], terminal_width=200)
    assert listed.exit_code == 0, listed.output
    assert good[:12] in listed.output and "train of good" in listed.output
    cleared = CliRunner().invoke(cli, ["cache", "clear", "--cache-dir", str(tmp_path)])
    assert cleared.exit_code == 0, cleared.output
    assert "removed 5 entries" in cleared.output and not any(tmp_path.iterdir())


def test_cache_list_names_unusable_entries(tmp_path):
    """`cache list` counts the unusable entries and names each with its reason."""
    _, broken = damaged_cache(tmp_path)
    listed = CliRunner().invoke(cli, ["cache", "list", "--cache-dir", str(tmp_path)], terminal_width=400)
    assert listed.exit_code == 0, listed.output
    assert "4 unusable" in listed.output
    assert all(str(folder) in listed.output for folder in broken)


RESTORE_SUITE = """
name = "restore"
models = ["mlp"]
[data]
name = "digits"
[[techniques]]
steps = ["baseline"]
[train]
epochs = 1
batch_size = 128
[measure]
batch_sizes = [1]
warmup = 1
min_iterations = 3
min_seconds = 0
threads = 1
"""


def execute_baseline(workdir, cache_dir) -> dict:
    """Run the restore suite's baseline cell in this process against ``cache_dir``; return its result."""
    options = PluginOptions(entry_points=False, disabled=())
    suite = load_suite_text(RESTORE_SUITE, "restore.toml", PluginHost(options))
    return CellRun(CellTask(expand(suite)[0], suite, options, workdir, cache_dir=cache_dir)).execute()


@pytest.fixture(scope="module")
def trained_baseline(tmp_path_factory):
    """The restore suite's baseline cell run once: its result, its cache and the key and payload of its entry."""
    root = tmp_path_factory.mktemp("trained")
    first = execute_baseline(root, root / "cache")
    (entry,) = ArtifactCache(root / "cache").entries()
    payload = torch.load(root / "cache" / entry.key[:2] / entry.key / "state.pt", weights_only=True)
    return first, root / "cache", entry.key, payload


def misfit_state(payload):
    """The payload with a state dict that does not fit: its first tensor fits (and is copied before the others fail)."""
    state_dict = payload["state"]["state_dict"]
    first = next(iter(state_dict))
    return {**payload, "state": {"state_dict": {name: torch.full_like(value, 0.5) if name == first else torch.zeros(1) for name, value in state_dict.items()}}}


UNUSABLE_PAYLOADS = [
    pytest.param(misfit_state, "size mismatch", id="misfit state dict"),
    pytest.param(lambda payload: [payload["state"]], "holds list", id="not a dict"),
    pytest.param(lambda payload: {"notes": payload["notes"]}, "state", id="no state"),
    pytest.param(lambda payload: {**payload, "notes": ["trained_on"]}, "notes", id="notes not a dict"),
]


@pytest.mark.parametrize("damage, reason", UNUSABLE_PAYLOADS)
def test_an_unusable_cached_state_is_rebuilt(tmp_path, trained_baseline, damage, reason):
    """A cell whose cached state cannot be restored evicts it and trains again from the untouched model, then reuses it."""
    first, trained_cache, key, payload = trained_baseline
    cache_dir = tmp_path / "cache"
    shutil.copytree(trained_cache, cache_dir)
    rewrite_payload(cache_dir, key, damage(payload))
    with pytest.warns(CacheWarning, match=reason):
        second = execute_baseline(tmp_path, cache_dir)
    assert second["status"] == "ok" and second["cache_hits"] == []
    assert second["metrics"]["train_samples"] == first["metrics"]["train_samples"] > 0
    assert second["metrics"]["accuracy_top1"] == first["metrics"]["accuracy_top1"]
    third = execute_baseline(tmp_path, cache_dir)
    assert third["cache_hits"] and third["metrics"]["train_samples"] == 0
    assert third["metrics"]["accuracy_top1"] == first["metrics"]["accuracy_top1"]


def run_dir(suite, out, cache_dir, *options) -> RunDir:
    """Run the suite with the given cache (and further ``run`` options); return its run directory."""
    result = CliRunner().invoke(cli, ["run", str(suite), "--out", str(out), "--cache-dir", str(cache_dir), *options])
    assert result.exit_code == 0, result.output
    (run_path,) = [path for path in out.iterdir() if path.is_dir()]
    return RunDir(run_path)


def run_suite(suite, out, cache_dir, *options):
    """Run the suite with the given cache; return its records by cell id."""
    return {record["cell"]["id"]: record for record in run_dir(suite, out, cache_dir, *options).records()}


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


VERSIONED_MODULE = """
from benchharness import Technique, hookimpl


class VersionedTechnique(Technique):
    NAME = "versioned_technique"

    def apply(self, model, config, context):
        return model


@hookimpl
def register_techniques(register):
    register(VersionedTechnique())
"""

VERSIONED_SUITE = """
models = ["mlp"]
[data]
name = "digits"
[[techniques]]
steps = ["versioned_technique"]
"""


def write_dist_info(root, version, previous=None):
    """Write the dist-info of distribution 'versioned-dist' at ``version`` (renaming the one of ``previous``)."""
    info = root / f"versioned_dist-{version}.dist-info"
    if previous is None:
        info.mkdir()
        (info / "entry_points.txt").write_text("[benchharness]\nversioned = versioned_dist_plugin\n")
    else:
        (root / f"versioned_dist-{previous}.dist-info").rename(info)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: versioned-dist\nVersion: {version}\n")
    importlib.invalidate_caches()
    metadata.MetadataPathFinder().invalidate_caches()  # a plain method on Python 3.11
    sys.modules.pop("versioned_dist_plugin", None)


def versioned_step_key(workdir) -> tuple[str, PluginHost]:
    """The cache key of a 'versioned_technique' step, from the worker's own lineage, and the host that loaded it."""
    options = PluginOptions(entry_points=True, disabled=())
    suite = load_suite_text(VERSIONED_SUITE, "versioned.toml", PluginHost(options))
    run = CellRun(CellTask(expand(suite)[0], suite, options, workdir))
    technique = run.host.techniques["versioned_technique"]
    _, lineage = run.apply_step(torch.nn.Identity(), technique, technique.Config(), run.context(), [run.lineage_root("mlp")], "versioned")
    return cache_key(lineage), run.host


def test_key_changes_with_an_installed_plugins_version_and_source(tmp_path, monkeypatch):
    """Bumping a third-party distribution's version, or editing its module without a bump, changes the key."""
    module = tmp_path / "versioned_dist_plugin.py"
    module.write_text(VERSIONED_MODULE)
    write_dist_info(tmp_path, "1.0")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        first, host = versioned_step_key(tmp_path)
        assert host.plugin_versions()["versioned"] == "1.0"
        assert host.techniques.entries["versioned_technique"].fingerprint()["version"] == "1.0"
        assert first == versioned_step_key(tmp_path)[0]
        write_dist_info(tmp_path, "1.1", previous="1.0")
        bumped, host = versioned_step_key(tmp_path)
        assert host.plugin_versions()["versioned"] == "1.1"
        assert bumped != first
        module.write_text(VERSIONED_MODULE.replace("return model", "return model.eval()"))
        sys.modules.pop("versioned_dist_plugin", None)
        edited, host = versioned_step_key(tmp_path)
        assert host.plugin_versions()["versioned"] == "1.1"
        assert edited not in (first, bumped)
    finally:
        sys.modules.pop("versioned_dist_plugin", None)


def test_builtin_fingerprints_hash_their_module(host):
    """A built-in's fingerprint carries the benchharness version and its own module's hash; models and data sets too."""
    import hashlib

    import benchharness.plugins.prune as prune

    fingerprint = host.techniques.entries["prune"].fingerprint()
    assert fingerprint == {
        "plugin": "benchharness.plugins.prune",
        "distribution": "benchharness (built-in)",
        "version": benchharness.__version__,
        "source_sha256": hashlib.sha256(open(prune.__file__, "rb").read()).hexdigest(),
    }
    assert host.models.entries["mlp"].fingerprint()["source_sha256"]
    assert host.datasets.entries["digits"].fingerprint()["source_sha256"]
    assert set(host.plugin_versions().values()) == {benchharness.__version__}


TRAINING_PLUGIN = """
from benchharness import Technique, hookimpl


class Retrain(Technique):
    NAME = "retrain"
    TRAINS = True

    def apply(self, model, config, context):
        return context.trainer.fit(model, context.data)

    def cacheable(self, config):
        return True


@hookimpl
def register_techniques(register):
    register(Retrain())
"""

RETRAIN_SUITE = """
name = "retrain"
models = ["mlp"]
[data]
name = "digits"
[[techniques]]
steps = ["retrain"]
[train]
epochs = 1
batch_size = 128
[measure]
batch_sizes = [1]
warmup = 1
min_iterations = 3
min_seconds = 0
threads = 1
"""


@pytest.mark.slow
def test_editing_a_plugin_file_invalidates_its_entries(tmp_path):
    """A --plugin technique's result is cached; once its source is edited, the next run trains again."""
    plugin = tmp_path / "retrain_plugin.py"
    plugin.write_text(TRAINING_PLUGIN)
    suite = tmp_path / "retrain.toml"
    suite.write_text(RETRAIN_SUITE)
    cache_dir = tmp_path / "cache"
    runs = []
    for index in range(3):
        if index == 2:
            plugin.write_text(TRAINING_PLUGIN + "\n# fixed\n")
        runs.append(run_dir(suite, tmp_path / f"run{index}", cache_dir, "--plugin", str(plugin)))
    records = [next(iter(run.records())) for run in runs]
    assert [record["status"] for record in records] == ["ok"] * 3, [record.get("error_message") for record in records]
    assert [record["cache_hits"] for record in records] == [[], ["retrain"], []]
    assert [record["metrics"]["train_samples"] > 0 for record in records] == [True, False, True]
    plugins = {entry["name"]: entry for entry in runs[0].read_info()["plugins"]}
    assert plugins[str(plugin)] == {
        "name": str(plugin), "source": f"--plugin {plugin}", "version": None, "distribution": None, "origin": "--plugin",
        "status": "loaded", "registered": {"technique": ["retrain"]}, "problem": None,
    }
    assert plugins["benchharness.plugins.prune"]["version"] == benchharness.__version__
    assert all("version" in entry for entry in plugins.values())
