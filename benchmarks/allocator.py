"""CPU allocator state vs latency: does a forward's time depend on what the process allocated before?

glibc's malloc adapts its mmap threshold: every freed mmap'ed block raises the
threshold (up to 32 MiB) and the trim threshold with it. So a fresh process
serves a batch's activations with mmap/munmap (or trims the heap after every
forward) and pays page faults on every iteration, while a process that ran
any larger forward or backward first serves the same tensors from a heap it
keeps. This script measures that in fresh processes (one subprocess of this
interpreter per variant per round; the variants are interleaved within each
round, in an order that rotates between rounds) and compares the states a
measuring worker could put itself in:

* glibc default, timed after 10 warm-up iterations at the measured batch;
* glibc default after a "history" (one forward+backward at batch 256 first);
* glibc default with a forward at batch 256 as warm-up before the 10 at batch 32;
* fixed thresholds via ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``, with and without the history;
* the same thresholds set at process start with ``mallopt`` (ctypes), with and without the history;
* jemalloc / tcmalloc by ``LD_PRELOAD`` as ``torch.backends.xeon.run_cpu`` sets them up
  (jemalloc with ``MALLOC_CONF=oversize_threshold:1,background_thread:true,metadata_thp:auto``),
  with and without the history; skipped, and said so, when the library is absent.

Each child waits (up to ``--max-wait`` s) for the machine to be quiet, warms up,
then times in chunks of 0.25 s and leaves out every chunk during which other
processes kept more than ``--max-other-cpu`` cores busy (two torch threads on
two shared cores run many times slower when a third thread competes). It
reports the p50 of the kept iterations and the minor page faults per timed
iteration, the allocator's cost made visible and immune to the noise. A child
that could not collect enough undisturbed timing is repeated up to
``--retries`` times (marked ``*`` in the table when even the last was not enough).

Runtime: about 7 minutes on a quiet two-core machine (resnet18_cifar's children,
with their batch-256 forward+backward, take most of it); much longer while other
processes compete. ``--quick`` (small_cnn and mlp, 2 rounds) takes about 2.

    .venv/bin/python benchmarks/allocator.py [--rounds 3] [--quick] [--models small_cnn,mlp]
                                             [--thresholds 128K:256K,32M:1G] [--threads N] [--save out.json]
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import glob
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Input shapes as the harness's data sets give them: digits are 1x8x8 images with 10
# classes (plugins/datasets.py), CIFAR-10 3x32x32 with 10 classes.
MODELS = {
    "small_cnn": {"shape": (1, 8, 8), "classes": 10},
    "mlp": {"shape": (1, 8, 8), "classes": 10},
    "resnet18_cifar": {"shape": (3, 32, 32), "classes": 10},
}
BATCH = 32
HISTORY_BATCH = 256
WARMUP = 10
# Timed iterations per child: at least ``min``, then until ``seconds`` have passed or ``max`` ran.
# Undisturbed timing a child collects: at least ``min`` iterations and ``seconds`` of them, in
# chunks of CHUNK_S; it gives up after ``limit`` seconds of timing (and the parent repeats it).
ITERATIONS = {
    "small_cnn": {"min": 50, "seconds": 0.75, "limit": 4.0},
    "mlp": {"min": 200, "seconds": 0.5, "limit": 3.0},
    "resnet18_cifar": {"min": 5, "seconds": 1.5, "limit": 8.0},
}
# Rounds per model by default: resnet18_cifar's batch-256 forward+backward (the history) costs
# ~10 s on two cores, so it gets two rounds unless --rounds says otherwise.
DEFAULT_ROUNDS = {"small_cnn": 3, "mlp": 2, "resnet18_cifar": 1}
QUICK_ITERATIONS = {
    "small_cnn": {"min": 30, "seconds": 0.3, "limit": 2.0},
    "mlp": {"min": 100, "seconds": 0.25, "limit": 1.5},
    "resnet18_cifar": {"min": 3, "seconds": 0.5, "limit": 3.0},
}
CHUNK_S = 0.25
CALIBRATION_N = 384  # a 384x384x384 matrix product: ~0.8 ms on two EPYC cores
CALIBRATION_S = 0.03  # calibration time after every chunk

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
# (mmap threshold, trim threshold) pairs tried by default: large values (what the harness sets in
# harness/conditions.py): blocks up to 32 MiB, glibc's own dynamic maximum, stay on the heap, and
# the heap is not trimmed until 1 GiB is free at its top. Other pairs with --thresholds, e.g.
# 128K:256K (glibc's initial values, frozen: every block >= 128 KiB is mmap'ed) or 1G:1G.
DEFAULT_THRESHOLDS = "32M:1G"
REFERENCE_THRESHOLDS = "32M:1G"

JEMALLOC_CONF = "oversize_threshold:1,background_thread:true,metadata_thp:auto"  # as torch.backends.xeon.run_cpu sets it


# ---------------------------------------------------------------------------------------------
# the child: one measurement in a fresh process
# ---------------------------------------------------------------------------------------------


def _system_busy_seconds() -> float:
    """CPU seconds all processes have spent on this machine (from /proc/stat), or NaN elsewhere."""
    try:
        with open("/proc/stat") as f:
            parts = f.readline().split()[1:]
    except OSError:
        return math.nan
    ticks = [int(p) for p in parts]
    busy = sum(ticks) - ticks[3] - (ticks[4] if len(ticks) > 4 else 0)  # all minus idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def _other_cpu(seconds: float) -> float:
    """Cores other processes kept busy over the next ``seconds`` (this process's own CPU time subtracted)."""
    busy0, own0, wall0 = _system_busy_seconds(), _own_cpu_seconds(), time.perf_counter()
    time.sleep(seconds)
    return max(0.0, (_system_busy_seconds() - busy0) - (_own_cpu_seconds() - own0)) / (time.perf_counter() - wall0)


def wait_until_quiet(max_other: float, max_wait: float) -> float:
    """Sleep until other processes use at most ``max_other`` cores (at most ``max_wait`` s); the seconds waited."""
    started = time.perf_counter()
    while _other_cpu(0.25) > max_other and time.perf_counter() - started < max_wait:
        time.sleep(0.25)
    return time.perf_counter() - started


def _apply_mallopt(spec: dict) -> dict:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return {"mallopt": "unavailable"}
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    result = {}
    for name, param in (("mmap", M_MMAP_THRESHOLD), ("trim", M_TRIM_THRESHOLD), ("arena_max", M_ARENA_MAX)):
        if spec.get(name) is not None:
            result[name] = bool(mallopt(param, int(spec[name])))
    return {"mallopt": result}


def _preloaded(names: tuple[str, ...]) -> list[str]:
    try:
        with open("/proc/self/maps") as f:
            maps = f.read()
    except OSError:
        return []
    return sorted({line.split()[-1] for line in maps.splitlines() if any(n in line for n in names) and "/" in line})


def child(spec: dict) -> dict:
    """Build the model, apply the variant, warm up, time; return the numbers as a dict."""
    info = _apply_mallopt(spec["mallopt"]) if spec.get("mallopt") else {}
    import resource

    import torch

    from benchharness.plugins.models import MLP, ResNet18Cifar, SmallCNN

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    family = {"small_cnn": SmallCNN, "mlp": MLP, "resnet18_cifar": ResNet18Cifar}[spec["model"]]
    shape, classes = tuple(MODELS[spec["model"]]["shape"]), MODELS[spec["model"]]["classes"]
    model = family().build(classes, shape)

    if spec["history"]:  # one training step's allocations, as a trained / calibrated cell would have made
        model.train()
        x = torch.randn(HISTORY_BATCH, *shape)
        y = torch.randint(0, classes, (HISTORY_BATCH,))
        torch.nn.functional.cross_entropy(model(x), y).backward()
        model.zero_grad(set_to_none=True)
        del x, y
    model.eval()
    x = torch.randn(spec["batch"], *shape)
    waited = wait_until_quiet(spec["max_other"], spec["max_wait"])  # before the warm-up: that and the timing run back to back
    budget = spec["iterations"]
    clean, clean_s, everything, faults, chunks, disturbed, others, all_others = [], 0.0, [], 0, 0, 0, [], []
    calibration, clean_calibration = [], []
    # The calibration kernel: a fixed matrix product into a preallocated output (no allocation, so
    # no allocator in it), timed right after every chunk on the same threads. The machine's speed
    # drifts by tens of percent from second to second (shared cores, shared host); the ratio of the
    # model's p50 to the kernel's p50 over the same chunks cancels most of that drift.
    ca, cb, cc = torch.randn(CALIBRATION_N, CALIBRATION_N), torch.randn(CALIBRATION_N, CALIBRATION_N), torch.empty(CALIBRATION_N, CALIBRATION_N)
    with torch.inference_mode():
        if spec["big_warmup"]:
            model(torch.randn(HISTORY_BATCH, *shape))
        for _ in range(WARMUP):
            model(x)
        for _ in range(5):
            torch.mm(ca, cb, out=cc)
        started = time.perf_counter()
        # Time in chunks of >= CHUNK_S; a chunk during which other processes kept more than
        # max_other cores busy is not used (two threads on two shared cores slow down many-fold
        # when a third thread competes), and timing goes on until enough undisturbed time is in.
        while True:
            times, kernel = [], []
            faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            busy0, own0, wall0 = _system_busy_seconds(), _own_cpu_seconds(), time.perf_counter()
            while not times or time.perf_counter() - wall0 < CHUNK_S:
                start = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - start)
            faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
            calibration_start = time.perf_counter()
            while len(kernel) < 5 or time.perf_counter() - calibration_start < CALIBRATION_S:
                start = time.perf_counter()
                torch.mm(ca, cb, out=cc)
                kernel.append(time.perf_counter() - start)
            wall = time.perf_counter() - wall0
            other = max(0.0, (_system_busy_seconds() - busy0) - (_own_cpu_seconds() - own0)) / wall
            everything += times
            calibration += kernel
            chunks += 1
            all_others.append(other)
            if other <= spec["max_other"]:
                clean += times
                clean_calibration += kernel
                clean_s += wall
                others.append(other)
            else:
                disturbed += 1
            if len(clean) >= budget["min"] and clean_s >= budget["seconds"]:
                break
            if time.perf_counter() - started >= budget["limit"]:
                break
    enough = len(clean) >= budget["min"]
    return {
        **info,
        "p50_ms": statistics.median(clean if enough else everything) * 1e3,
        "calibration_ms": statistics.median(clean_calibration if enough else calibration) * 1e3,
        "clean": enough,
        "iterations": len(clean) if enough else len(everything),
        "faults_per_iter": faults / len(everything),
        "disturbed_share": disturbed / chunks,
        "other_cpu": statistics.mean(others if enough else all_others),
        "waited_s": waited,
        "preloaded": _preloaded(("jemalloc", "tcmalloc")),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


# ---------------------------------------------------------------------------------------------
# the parent: variants, rounds, table, recommendation
# ---------------------------------------------------------------------------------------------


def parse_size(text: str) -> int:
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


def format_size(n: int) -> str:
    for unit, size in (("G", 2**30), ("M", 2**20), ("K", 2**10)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def find_library(kind: str) -> str | None:
    """The jemalloc / tcmalloc shared library: run_cpu's search path, then the usual system lib dirs."""
    names = {"jemalloc": ["libjemalloc.so", "libjemalloc.so.2"], "tcmalloc": ["libtcmalloc.so", "libtcmalloc.so.4", "libtcmalloc_minimal.so", "libtcmalloc_minimal.so.4"]}[kind]
    dirs = [f"{os.environ[v]}/lib" for v in ("CONDA_PREFIX", "VIRTUAL_ENV") if v in os.environ]
    dirs += [str(Path(sys.prefix) / "lib"), os.path.expanduser("~/.local/lib"), "/usr/local/lib", "/usr/local/lib64", "/usr/lib", "/usr/lib64"]
    dirs += sorted(glob.glob("/usr/lib/*-linux-gnu")) + sorted(glob.glob("/lib/*-linux-gnu")) + ["/opt/homebrew/lib", "/opt/conda/lib"]
    for name in names:
        for d in dirs:
            path = Path(d) / name
            if path.exists():
                return str(path)
    return None


@dataclass
class Variant:
    name: str
    state: str  # the allocator state; "+ history" variants share it with their plain twin
    history: bool = False
    big_warmup: bool = False
    env: dict = field(default_factory=dict)
    mallopt: dict | None = None
    glibc: bool = True  # needs glibc (no preload)


def build_variants(thresholds: list[tuple[int, int]], skipped: list[str]) -> list[Variant]:
    variants = [
        Variant("glibc default", "glibc default"),
        Variant("glibc default + history", "glibc default", history=True),
        Variant("glibc default, warm-up at 256", "glibc default, warm-up at 256", big_warmup=True),
    ]
    for mmap, trim in thresholds:
        label = f"mmap={format_size(mmap)} trim={format_size(trim)}"
        env = {"MALLOC_MMAP_THRESHOLD_": str(mmap), "MALLOC_TRIM_THRESHOLD_": str(trim)}
        for how, kwargs in (("env", {"env": env}), ("mallopt", {"mallopt": {"mmap": mmap, "trim": trim}})):
            state = f"{how} {label}"
            variants.append(Variant(state, state, **kwargs))
            variants.append(Variant(f"{state} + history", state, history=True, **kwargs))
    for kind in ("jemalloc", "tcmalloc"):
        lib = find_library(kind)
        if lib is None:
            skipped.append(f"{kind}: no lib{kind}.so* found in run_cpu's paths or the system lib dirs; skipped")
            continue
        env = {"LD_PRELOAD": lib}
        if kind == "jemalloc":
            env["MALLOC_CONF"] = JEMALLOC_CONF
        state = f"{kind} (LD_PRELOAD)"
        variants.append(Variant(state, state, env=env, glibc=False))
        variants.append(Variant(f"{state} + history", state, history=True, env=env, glibc=False))
    return variants


def run_child(variant: Variant, model: str, threads: int, iterations: dict, max_other: float, max_wait: float) -> dict:
    spec = {
        "model": model,
        "batch": BATCH,
        "threads": threads,
        "history": variant.history,
        "big_warmup": variant.big_warmup,
        "mallopt": variant.mallopt,
        "iterations": iterations,
        "max_other": max_other,
        "max_wait": max_wait,
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "LD_PRELOAD"}
    env.update(variant.env)
    env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
    out = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], env=env, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"{model} / {variant.name} failed (exit {out.returncode}):\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(variant, model, threads, iterations, max_other, retries, max_wait) -> dict:
    """One child, repeated (up to ``retries`` times) while it could not collect enough undisturbed timing."""
    best, failures, attempts = None, 0, 0
    while True:
        try:
            result = run_child(variant, model, threads, iterations, max_other, max_wait)
        except RuntimeError as error:  # a child killed from outside (shared machine): say so, try again once
            print(f"  {error}".rstrip(), flush=True)
            failures += 1
            if failures > 1:
                raise
            continue
        if best is None or (result["clean"], -result["disturbed_share"]) > (best["clean"], -best["disturbed_share"]):
            best = result
        attempts += 1
        if result["clean"] or attempts > retries:
            break
    best["disturbed"] = not best["clean"]
    best["attempts"] = attempts
    return best


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def geomean(values):
    values = [v for v in values if v and v > 0]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else math.nan


def recommend(models, variants, med, noise, reference_state) -> str:
    """Pick the state that is fast and whose latency does not depend on the process's history.

    ``noise[m]`` is model m's noise floor: the median over variants of the spread of the per-round
    p50s, at least 5%. A state is "fast" when its geometric-mean speed (plain, no history, relative to
    the reference) is within the median noise floor of the fastest state's; it is "history-independent"
    when, for every model, plain and "+ history" medians differ by no more than that model's noise
    floor. Among the states that are both, a glibc state set by ``mallopt`` is preferred (a forked
    worker can apply it itself, nothing to preload), then one set by environment, then the rest.
    """
    states = []
    for state in dict.fromkeys(v.state for v in variants):
        plain = next((v for v in variants if v.state == state and not v.history), None)
        hist = next((v for v in variants if v.state == state and v.history), None)
        if plain is None or hist is None:
            continue
        speed = geomean([med[(m, plain.name)] / med[(m, reference_state)] for m in models])
        deps = {m: med[(m, hist.name)] / med[(m, plain.name)] - 1 for m in models}
        excess = max(abs(d) - noise[m] for m, d in deps.items())
        states.append({"state": state, "speed": speed, "deps": deps, "excess": excess, "glibc": plain.glibc})
    floor = statistics.median(noise.values())
    fastest = min(s["speed"] for s in states)
    for s in states:
        s["fast"] = s["speed"] <= fastest * (1 + floor)
        s["independent"] = s["excess"] <= 0

    def preference(s):
        how = 0 if s["state"].startswith("mallopt") else 1 if s["state"].startswith("env") else 2 if s["glibc"] else 3
        return (not (s["fast"] and s["independent"]), how, s["excess"], s["speed"])

    pick = min(states, key=preference)
    default = next((s for s in states if s["state"] == "glibc default"), None)

    def deps_text(s):
        return ", ".join(f"{m} {d * 100:+.0f}%" for m, d in s["deps"].items())

    text = [
        f"Recommendation: '{pick['state']}'"
        + (" (fast and history-independent within the noise)." if pick["fast"] and pick["independent"] else
           " (no state was both fast and history-independent within the noise; this is the closest).")
        + f" Without history it runs at {pick['speed']:.2f}x the reference (geometric mean over {', '.join(models)};"
        f" the fastest state: {fastest:.2f}x) and a batch-{HISTORY_BATCH} forward+backward first changes its p50 by"
        f" {deps_text(pick)} (noise floors: {', '.join(f'{m} {noise[m] * 100:.0f}%' for m in models)})."
    ]
    if default is not None:
        text.append(
            f"glibc's default runs at {default['speed']:.2f}x and moves by {deps_text(default)} with the history"
            + (" - beyond the noise: its latency depends on what the process allocated before." if not default["independent"]
               else " - within the noise on this machine, but only because glibc's dynamic threshold had already adapted.")
        )
    big = next((v for v in variants if v.big_warmup), None)
    if big is not None:
        ratio = geomean([med[(m, big.name)] / med[(m, reference_state)] for m in models])
        text.append(f"A batch-{HISTORY_BATCH} forward as warm-up brings glibc's default to {ratio:.2f}x, but it is one more thing"
                    " every worker must remember and it still leaves glibc adapting to whatever runs next.")
    others = [s for s in states if s is not pick]
    text.append("Other states (speed; history effect): " + "; ".join(
        f"{s['state']}: {s['speed']:.2f}x; {deps_text(s)}" for s in sorted(others, key=lambda s: s["speed"])) + ".")
    return " ".join(text)


def report(header: dict, variants: list[Variant], results: dict, max_other: float, retries: int) -> None:
    """Print the table (median p50 over rounds, spread, ratio to the reference) and the recommendation."""
    models = [m for m in header["models"] if all((m, v.name) in results for v in variants)]
    reference = header["reference"]
    raw = {key: statistics.median(x["p50_ms"] for x in rs) for key, rs in results.items()}
    # Drift-corrected p50: each child's p50 divided by its calibration kernel's p50, times the
    # kernel's median over the whole run (so it reads in ms on the machine's typical speed).
    kernel = statistics.median(x.get("calibration_ms", 1.0) for rs in results.values() for x in rs)

    def corrected(x):
        return x["p50_ms"] / x.get("calibration_ms", 1.0) * kernel

    med = {key: statistics.median(corrected(x) for x in rs) for key, rs in results.items()}
    spreads: dict[str, list[float]] = {m: [] for m in models}
    title = (f"{'model':<15} {'variant':<40} {'p50 ms':>8} {'spread':>7} {'corr ms':>8} {'spread':>7} {'vs ref':>7}"
             f" {'faults/it':>9} {'dropped':>7}  p50 ms per round")
    print()
    print(title)
    print("-" * len(title))
    for m in models:
        for v in variants:
            rs = results[(m, v.name)]
            p50s = [x["p50_ms"] for x in rs]
            fixed = [corrected(x) for x in rs]
            spread = max(p50s) / min(p50s) - 1
            fixed_spread = max(fixed) / min(fixed) - 1
            spreads[m].append(fixed_spread)
            ratio = med[(m, v.name)] / med[(m, reference)]
            faults = statistics.median(x["faults_per_iter"] for x in rs)
            dropped = max(x["disturbed_share"] for x in rs)
            rounds_text = " ".join(f"{p:.3g}{'*' if x['disturbed'] else ''}" for p, x in zip(p50s, rs))
            print(f"{m:<15} {v.name:<40} {raw[(m, v.name)]:>8.3f} {spread * 100:>6.1f}% {med[(m, v.name)]:>8.3f} {fixed_spread * 100:>6.1f}%"
                  f" {ratio:>6.2f}x {faults:>9.1f} {dropped * 100:>6.0f}%  {rounds_text}")
        print()
    for v in variants:
        for (m, name), rs in results.items():
            refused = [x["mallopt"] for x in rs if name == v.name and isinstance(x.get("mallopt"), dict) and not all(x["mallopt"].values())]
            if refused:
                print(f"warning: mallopt refused a setting in {m} / '{v.name}': {refused[0]}")
            if name == v.name and not v.glibc and any(not x["preloaded"] for x in rs):
                print(f"warning: {m} / '{v.name}': the preloaded allocator did not show up in the child's memory map")
    print("p50 ms: median over rounds of each fresh child's p50; spread: max/min - 1 over rounds;")
    print(f"corr ms: the same, each child's p50 first divided by the p50 of a fixed {CALIBRATION_N}^3 matrix product timed between its")
    print(f"  chunks (no allocation in it) and multiplied by that kernel's median over the run ({kernel:.3f} ms): machine drift corrected;")
    print("vs ref: corr ms relative to the reference; faults/it: minor page faults per timed iteration (median over rounds);")
    print(f"dropped: most of a child's timing chunks left out because other processes used more than {max_other} cores;")
    print(f"* = a child that got too little undisturbed timing even after {retries} repeats (its p50 includes disturbed chunks)")
    print()
    if models:
        noise = {m: max(0.05, statistics.median(spreads[m])) for m in models}
        print(recommend(models, variants, med, noise, reference))


def save(path: Path, header: dict, variants: list[Variant], results: dict) -> None:
    data = {**header, "variants": [asdict(v) for v in variants],
            "results": [{"model": m, "variant": name, "rounds": rs} for (m, name), rs in results.items()]}
    path.write_text(json.dumps(data, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=None, help="rounds for every model (default 3, resnet18_cifar 2; --quick 2)")
    parser.add_argument("--quick", action="store_true", help="fewer iterations and rounds, no resnet18_cifar unless --models names it")
    parser.add_argument("--models", default=None, help=f"comma-separated, from {', '.join(MODELS)} (default all; --quick: small_cnn,mlp)")
    parser.add_argument("--thresholds", default=DEFAULT_THRESHOLDS, help=f"mmap:trim pairs to try (default {DEFAULT_THRESHOLDS}); the "
                        f"reference is {REFERENCE_THRESHOLDS} if given, else the last pair, set by environment, without history")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the harness's MeasureSettings().thread_count())")
    parser.add_argument("--max-other-cpu", type=float, default=0.2, help="cores other processes may use while a child times (default 0.2, as the harness)")
    parser.add_argument("--retries", type=int, default=2, help="repeats of a child that got too little undisturbed timing (default 2)")
    parser.add_argument("--max-wait", type=float, default=10.0, help="seconds a child waits for the other processes to go quiet before it warms up (default 10)")
    parser.add_argument("--save", type=Path, help="write every child's result to this JSON file (after every model and round)")
    parser.add_argument("--resume", action="store_true", help="with --save: keep the results already in that file and measure only what is missing")
    parser.add_argument("--load", type=Path, help="measure nothing: print the table and recommendation of a --save file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if args.load:
        data = json.loads(args.load.read_text())
        variants = [Variant(**v) for v in data["variants"]]
        results = {(r["model"], r["variant"]): r["rounds"] for r in data["results"]}
        print(data["environment"])
        report(data, variants, results, data["max_other_cpu"], data["retries"])
        return

    rounds = {m: args.rounds or (2 if args.quick else DEFAULT_ROUNDS[m]) for m in MODELS}
    models = (args.models or ("small_cnn,mlp" if args.quick else ",".join(MODELS))).split(",")
    for m in models:
        if m not in MODELS:
            parser.error(f"unknown model {m!r}")
    iterations = QUICK_ITERATIONS if args.quick else ITERATIONS
    thresholds = [tuple(parse_size(x) for x in pair.split(":")) for pair in args.thresholds.split(",")]
    if args.threads is None:
        from benchharness.suite import MeasureSettings

        threads = MeasureSettings().thread_count()
    else:
        threads = args.threads
    ref_pair = REFERENCE_THRESHOLDS if REFERENCE_THRESHOLDS in args.thresholds.split(",") else args.thresholds.split(",")[-1]
    mmap, trim = (parse_size(x) for x in ref_pair.split(":"))
    reference = f"env mmap={format_size(mmap)} trim={format_size(trim)}"

    skipped: list[str] = []
    variants = build_variants(thresholds, skipped)
    import torch

    environment = (f"torch {torch.__version__}, {threads} threads, CPU: {cpu_model()} ({os.cpu_count()} logical CPUs), "
                   f"libc: {' '.join(platform.libc_ver())}, python {platform.python_version()}")
    print(environment)
    for line in skipped:
        print(line)
    print(f"{len(models)} models x {len(variants)} variants x {'/'.join(str(rounds[m]) for m in models)} rounds, batch {BATCH}, fresh process each; "
          f"reference: '{reference}' (no history)", flush=True)
    header = {"environment": environment, "models": models, "reference": reference, "max_other_cpu": args.max_other_cpu,
              "retries": args.retries, "skipped": skipped}

    results: dict[tuple[str, str], list[dict]] = {}
    if args.resume and args.save and args.save.exists():
        results = {(r["model"], r["variant"]): r["rounds"] for r in json.loads(args.save.read_text())["results"]}
        print(f"resuming: {sum(len(rs) for rs in results.values())} results from {args.save}")
    started = time.perf_counter()
    for r in range(max(rounds[m] for m in models)):
        for i, m in enumerate(models):
            if r >= rounds[m] or all(len(results.get((m, v.name), [])) > r for v in variants):
                continue
            k = (r + i) % len(variants)
            order = variants[k:] + variants[:k]  # rotate, so no variant always runs first or right after another
            t0 = time.perf_counter()
            for v in order:
                if len(results.get((m, v.name), [])) <= r:
                    results.setdefault((m, v.name), []).append(
                        measure(v, m, threads, iterations[m], args.max_other_cpu, args.retries, args.max_wait))
                    if args.save:
                        save(args.save, header, variants, results)
            done = [results[(m, v.name)][r] for v in order]
            print(f"round {r + 1}/{rounds[m]} {m}: {time.perf_counter() - t0:.0f} s (waited for quiet {sum(x['waited_s'] for x in done):.0f} s,"
                  f" {sum(x['attempts'] - 1 for x in done)} repeats, {sum(x['disturbed'] for x in done)} kept disturbed);"
                  f" {time.perf_counter() - started:.0f} s in all", flush=True)
    report(header, variants, results, args.max_other_cpu, args.retries)


if __name__ == "__main__":
    main()
