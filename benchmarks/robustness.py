"""Adversarial inputs, counted: malformed suites, overrides, plugins and run files; kill -9 and full-disk trials.

Every input runs through the real command line in a fresh process with a time limit. An input
passes when the command ends with the expected exit code (2 for bad input) and prints no
traceback. The trials kill or starve a real run, resume it, and count records lost or duplicated.

    .venv/bin/python benchmarks/robustness.py [--kills 5]

Prints one line per input that did not pass, then the counts: inputs tried, clean exit 2,
other expected outcomes, failures (traceback, wrong code, hang), and records lost.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "suites" / "quick.toml"
OFFLINE = ROOT / "tests" / "plugins" / "offline_device.py"
BAD_CORPUS = ROOT / "tests" / "suites" / "bad"
TIME_LIMIT_S = 30
MINIMAL = 'models = ["mlp"]\n[data]\nname = "digits"\n'
OFFLINE_SUITE = 'name = "trial"\nmodels = ["mlp"]\ndevices = ["offline"]\nrepeats = {repeats}\n[data]\nname = "digits"\n'

BAD_OVERRIDES = [
    "train.epochs=-1", "train.epochs=1e9", "train.epochs=abc", "train.lr=0", "train.lr=nan", "train.batch_size=0",
    "measure.batch_sizes=[]", "measure.batch_sizes=[0]", "measure.batch_sizes=[-4]", "measure.warmup=-1",
    "measure.max_rounds=0", "measure.target_ci=2", "seed=-1", "seed=99999999999", "repeats=0", "repeats=100000",
    "name=../../escaped", "name=", "name=a/b", "models=[]", "models=[\"nope\"]", "devices=[\"tpu\"]",
    "data.name=imagenet", "techniques[0].steps=[]", "techniques[99].name=x", "techniques[0].prune.amount=2",
    "nokey", "=1", "train..epochs=1", "train.epochs", "bogus.key=1", "train.bogus=1", "run.cell_timeout_s=-5",
    "measure.threads=0", "measure.interleave_ms=-1", "data.dir=/nonexistent", "[x]=1",
]


@dataclass
class Outcome:
    """What one input did."""

    name: str
    expected: int
    code: int | None
    output: str

    @property
    def passed(self) -> bool:
        """The expected exit code and no traceback."""
        return self.code == self.expected and "Traceback" not in self.output


def cli(args: list[str], cwd: Path, timeout: float = TIME_LIMIT_S, **options) -> tuple[int | None, str]:
    """Run `benchharness ARGS` in a fresh process; (exit code or None on a hang, output)."""
    command = [sys.executable, "-m", "benchharness.cli", *args]
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, errors="replace", timeout=timeout, env={**os.environ, "COLUMNS": "200"}, **options)
    except subprocess.TimeoutExpired:
        return None, "hang"
    return done.returncode, done.stdout + done.stderr


def suite_inputs(work: Path) -> list[tuple[str, list[str], int]]:
    """(name, arguments, expected exit code) for every malformed suite file."""
    inputs = [(f"corpus/{path.stem}", ["validate", str(path)], 2) for path in sorted(BAD_CORPUS.glob("*.toml"))]
    generated = {
        "deep-arrays": "x = " + "[" * 500 + "]" * 500 + "\n" + MINIMAL,
        "deep-tables": "x = " + "{a = " * 500 + "1" + "}" * 500 + "\n" + MINIMAL,
        "many-unknown-keys": MINIMAL + "".join(f"k{index} = 1\n" for index in range(600_000)),
        "nul-in-name": 'name = "a\\u0000b"\n' + MINIMAL,
        "newline-in-name": 'name = "a\\nb"\n' + MINIMAL,
        "long-name": f'name = "{"n" * 300}"\n' + MINIMAL,
        "empty-name": 'name = ""\n' + MINIMAL,
        "absolute-name": 'name = "/tmp/escaped"\n' + MINIMAL,
        "nul-in-technique": MINIMAL + '[[techniques]]\nname = "a\\u0000"\nsteps = ["baseline"]\n',
        "seed-2-to-the-40": "seed = 1099511627776\n" + MINIMAL,
        "shape-negative": 'models = ["mlp"]\n[data]\nname = "synthetic"\nshape = [-1]\n',
        "shape-zero": 'models = ["mlp"]\n[data]\nname = "synthetic"\nshape = [0, 8, 8]\n',
        "empty-file": "",
        "binary-garbage": None,
    }
    for name, text in generated.items():
        path = work / f"{name}.toml"
        if text is None:
            path.write_bytes(bytes(random.Random(0).randrange(256) for _ in range(4096)))
        else:
            path.write_text(text)
        inputs.append((f"generated/{name}", ["validate", str(path)], 2))
    fifo = work / "fifo.toml"
    os.mkfifo(fifo)
    inputs += [("generated/fifo", ["validate", str(fifo)], 2), ("generated/fifo-run", ["run", str(fifo), "--out", str(work / "runs")], 2)]
    inputs += [("generated/directory", ["validate", str(work)], 2), ("generated/missing", ["validate", str(work / "missing.toml")], 2)]
    return inputs


def override_inputs() -> list[tuple[str, list[str], int]]:
    """(name, arguments, expected exit code) for every malformed --set."""
    return [(f"--set {text}", ["validate", str(QUICK), "--set", text], 2) for text in BAD_OVERRIDES]


def plugin_inputs(work: Path) -> list[tuple[str, list[str], int]]:
    """Broken plugins: skipped with a warning (exit 0) when the suite does not need them; exit 2 when it does."""
    broken = {
        "misspelt-hook": "from benchharness import hookimpl\n@hookimpl\ndef register_technique(register):\n    pass\n",
        "wrong-argument": "from benchharness import hookimpl\n@hookimpl\ndef register_techniques(registrar):\n    pass\n",
        "raises-on-import": "raise RuntimeError('broken on purpose')\n",
        "exits-on-import": "raise SystemExit(3)\n",
        "nameless-technique": (
            "from benchharness import Technique, hookimpl\nclass T(Technique):\n    pass\n"
            "@hookimpl\ndef register_techniques(register):\n    register(T)\n"
        ),
        "raising-register": "from benchharness import hookimpl\n@hookimpl\ndef register_techniques(register):\n    raise ValueError('no')\n",
    }
    needs = work / "needs-broken.toml"
    needs.write_text(MINIMAL + '[[techniques]]\nsteps = ["binarize"]\n')
    inputs = []
    for name, text in broken.items():
        path = work / f"plugin_{name.replace('-', '_')}.py"
        path.write_text(text)
        inputs.append((f"plugin/{name}", ["validate", str(QUICK), "--plugin", str(path)], 0))
        inputs.append((f"plugin/{name}-needed", ["validate", str(needs), "--plugin", str(path)], 2))
        inputs.append((f"plugin/{name}-help", ["--help"], 0))
    return inputs


def finished_run(work: Path, repeats: int) -> Path:
    """A finished run of skipped cells on the offline test device (no workers; small records)."""
    suite = work / "trial.toml"
    suite.write_text(OFFLINE_SUITE.format(repeats=repeats))
    code, output = cli(["run", str(suite), "--out", str(work / "finished"), "--plugin", str(OFFLINE)], work, timeout=120)
    assert code == 0, output
    (path,) = (work / "finished").iterdir()
    return path


def run_file_inputs(work: Path, finished: Path) -> list[tuple[str, list[str], int]]:
    """Damaged copies of a finished run, reported and resumed."""
    damage = {
        "torn-tail": lambda run: run.joinpath("results.jsonl").write_bytes(run.joinpath("results.jsonl").read_bytes()[:-40]),
        "empty-object-line": lambda run: _insert(run, b"{}\n"),
        "number-line": lambda run: _insert(run, b"42\n"),
        "non-utf8-line": lambda run: _insert(run, b"\xff\xfe\xfd\n"),
        "garbage-line": lambda run: _insert(run, b"{\"cell\": [\n"),
    }
    unusable_info = {"run-json-empty": "", "run-json-garbage": "nope", "run-json-list": "[]", "run-json-no-suite": "{}"}
    inputs = []
    for name, apply in damage.items():
        run = Path(shutil.copytree(finished, work / f"damaged-{name}"))
        apply(run)
        inputs.append((f"run-files/{name}-report", ["report", str(run), "-o", str(work / f"{name}.html")], 0))
        inputs.append((f"run-files/{name}-resume", ["run", "--resume", str(run)], 0))
    for name, text in unusable_info.items():
        run = Path(shutil.copytree(finished, work / f"damaged-{name}"))
        run.joinpath("run.json").write_text(text)
        inputs.append((f"run-files/{name}-report", ["report", str(run)], 2))
        inputs.append((f"run-files/{name}-resume", ["run", "--resume", str(run)], 2))
    return inputs


def _insert(run: Path, line: bytes) -> None:
    lines = run.joinpath("results.jsonl").read_bytes().splitlines(keepends=True)
    run.joinpath("results.jsonl").write_bytes(b"".join(lines[:2] + [line] + lines[2:]))


def records_lost(run: Path, repeats: int) -> int:
    """Cells of the run without exactly one usable record."""
    ids = []
    for line in run.joinpath("results.jsonl").read_bytes().splitlines():
        try:
            ids.append(json.loads(line)["cell"]["id"])
        except (ValueError, KeyError, TypeError):
            continue
    return sum(1 for index in range(repeats) if ids.count(f"mlp/baseline/offline/r{index}") != 1)


def kill_trials(work: Path, trials: int, repeats: int = 200) -> tuple[int, int]:
    """Kill -9 a run at a random moment, resume it; (trials, records lost or duplicated)."""
    suite = work / "kill.toml"
    suite.write_text(OFFLINE_SUITE.format(repeats=repeats))
    lost = 0
    chooser = random.Random(1)
    for trial in range(trials):
        out = work / f"kill-{trial}"
        command = [sys.executable, "-m", "benchharness.cli", "run", str(suite), "--out", str(out), "--plugin", str(OFFLINE)]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        while not list(out.glob("*/results.jsonl")) and process.poll() is None:
            time.sleep(0.01)
        time.sleep(chooser.uniform(0.0, 0.5))
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        (run,) = out.iterdir()
        code, output = cli(["run", "--resume", str(run)], work, timeout=120)
        lost += records_lost(run, repeats) + (code != 0)
    return trials, lost


def disk_full_trial(work: Path, repeats: int = 60) -> int:
    """Fill the 'disk' (a file size limit) mid-run, then resume without it; records lost or duplicated."""
    suite = work / "full.toml"
    suite.write_text(OFFLINE_SUITE.format(repeats=repeats))

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    code, output = cli(["run", str(suite), "--out", str(work / "full"), "--plugin", str(OFFLINE)], work, timeout=120, preexec_fn=limit)
    (run,) = (work / "full").iterdir()
    stopped_cleanly = code == 1 and "disk full at" in output and "Traceback" not in output
    code, output = cli(["run", "--resume", str(run)], work, timeout=120)
    return records_lost(run, repeats) + (not stopped_cleanly) + (code != 0)


def main() -> None:
    """Run every input and trial, print the failures and the counts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=5, help="kill -9 trials")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="robustness-") as directory:
        work = Path(directory)
        finished = finished_run(work, repeats=30)
        inputs = suite_inputs(work) + override_inputs() + plugin_inputs(work) + run_file_inputs(work, finished)
        outcomes = []
        for name, args, expected in inputs:
            started = time.monotonic()
            code, output = cli(args, work)
            outcomes.append(Outcome(name, expected, code, output))
            if not outcomes[-1].passed:
                tail = " | ".join(output.strip().splitlines()[-3:])[:300]
                print(f"FAIL {name}: exit {code} (expected {expected}) in {time.monotonic() - started:.1f} s: {tail}")
        trials, lost = kill_trials(work, options.kills)
        full_lost = disk_full_trial(work)
    clean_exit_2 = sum(1 for outcome in outcomes if outcome.passed and outcome.expected == 2)
    other = sum(1 for outcome in outcomes if outcome.passed and outcome.expected != 2)
    failed = sum(1 for outcome in outcomes if not outcome.passed)
    print(f"inputs tried: {len(outcomes)}; clean exit 2: {clean_exit_2} of {sum(o.expected == 2 for o in outcomes)}; "
          f"other expected outcomes: {other}; failures: {failed}")
    print(f"kill -9 and --resume: {trials} trials, {lost} records lost or duplicated; full disk and --resume: {full_lost} records lost")


if __name__ == "__main__":
    main()
