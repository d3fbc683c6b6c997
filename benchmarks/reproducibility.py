"""Reproducibility: the quick suite twice on a quiet machine, then once beside a process that keeps a core busy.

Prints, for the CPU cells compared with their reference (a row per cell and
batch size):

- how many speedup CIs of the two quiet runs overlap (target: at least 90%);
- the median CI half-width (target: at most 5%);
- how many cells with ``speedup_expected = false`` have a CI containing 1.0
  or a speedup within 3% of 1.0 (target: at least 90%);
- in the loaded run: how many cells were flagged noisy (target: at least one),
  and how many unflagged cells' speedups differ from the first quiet run by
  more than their CI (target: none);
- each run's wall time (target for the quick suite: at most 90 s).

The runs share an artifact cache, so only the first one trains.

    .venv/bin/python benchmarks/reproducibility.py [--suite suites/quick.toml] [--skip-loaded]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchharness.processes import die_with_parent

ROOT = Path(__file__).resolve().parent.parent
BUSY = "import time\nend = time.time() + 3600\nwhile time.time() < end: pass\n"


def run_suite(suite: Path, out: Path, cache: Path) -> tuple[Path, float]:
    """Run ``suite`` with the real CLI; its run directory and wall time."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "benchharness.cli", "run", str(suite), "--out", str(out), "--cache-dir", str(cache)], check=False)
    wall = time.perf_counter() - started
    return max(out.iterdir(), key=lambda path: path.stat().st_mtime), wall


def compared_rows(run_path: Path):
    """The ok CPU rows compared with a reference: cell id, batch size -> row."""
    from benchharness.report.frame import add_comparisons, load_run, tidy_frame

    run = load_run(run_path)
    frame = add_comparisons(tidy_frame(run.records), run.reference)
    rows = frame[(frame["status"] == "ok") & (frame["device"] == "cpu") & frame["speedup_ci95_low"].notna()]
    return {(row["cell_id"], int(row["batch_size"])): row for _, row in rows.iterrows()}


def half_width(row) -> float:
    return (row["speedup_ci95_high"] - row["speedup_ci95_low"]) / 2.0 / row["speedup_p50"]


def overlap(a, b) -> bool:
    return a["speedup_ci95_low"] <= b["speedup_ci95_high"] and b["speedup_ci95_low"] <= a["speedup_ci95_high"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", type=Path, default=ROOT / "suites" / "quick.toml")
    parser.add_argument("--skip-loaded", action="store_true", help="leave out the run beside a busy process")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="reproducibility-"))
    cache = work / "cache"
    first, first_wall = run_suite(args.suite, work / "quiet-1", cache)
    second, second_wall = run_suite(args.suite, work / "quiet-2", cache)
    a, b = compared_rows(first), compared_rows(second)
    keys = sorted(set(a) & set(b))
    overlapping = [key for key in keys if overlap(a[key], b[key])]
    widths = [half_width(row) for run in (a, b) for row in (run[key] for key in keys)]
    unexpected = [key for key in keys if a[key]["speedup_expected"] is False or a[key]["speedup_expected"] == False]  # noqa: E712
    near_one = [
        key for key in unexpected
        if all(run[key]["speedup_ci95_low"] <= 1.0 <= run[key]["speedup_ci95_high"] or abs(run[key]["speedup_p50"] - 1.0) <= 0.03 for run in (a, b))
    ]
    print(f"\nquiet runs: {first_wall:.1f} s and {second_wall:.1f} s (quick suite target: at most 90 s; the first one trains)")
    print(f"{'cell':<42}{'batch':>6}{'run 1':>24}{'run 2':>24}  overlap")
    for key in keys:
        cells = [f"{run[key]['speedup_p50']:.3f} ({run[key]['speedup_ci95_low']:.3f}-{run[key]['speedup_ci95_high']:.3f})" for run in (a, b)]
        print(f"{key[0]:<42}{key[1]:>6}{cells[0]:>24}{cells[1]:>24}  {'yes' if key in overlapping else 'NO'}")
    print(f"CIs overlap: {len(overlapping)} of {len(keys)} = {len(overlapping) / max(len(keys), 1):.0%} (target: at least 90%)")
    print(f"median CI half-width: {statistics.median(widths):.2%} (target: at most 5%)")
    print(f"speedup_expected = false with CI containing 1 or within 3% of 1, in both runs: {len(near_one)} of {len(unexpected)} (target: at least 90%)")
    noisy_quiet = sum(bool(row["noisy"]) for run in (a, b) for row in run.values())
    print(f"rows flagged noisy in the quiet runs: {noisy_quiet} of {2 * len(keys)}")
    if args.skip_loaded:
        return
    busy = subprocess.Popen([sys.executable, "-c", BUSY], preexec_fn=die_with_parent)  # gone even if this script is killed
    try:
        loaded, loaded_wall = run_suite(args.suite, work / "loaded", cache)
    finally:
        busy.kill()
        busy.wait()
    c = compared_rows(loaded)
    flagged = sorted({key[0] for key, row in c.items() if row["noisy"]})
    unflagged = [key for key, row in c.items() if not row["noisy"] and key in a]
    wrong = [key for key in unflagged if not (c[key]["speedup_ci95_low"] <= a[key]["speedup_p50"] <= c[key]["speedup_ci95_high"])]
    print(f"\nbeside a busy process: {loaded_wall:.1f} s; {len(flagged)} cells flagged noisy (target: at least 1)")
    for key in unflagged:
        print(f"  unflagged {key[0]} batch {key[1]}: {c[key]['speedup_p50']:.3f} ({c[key]['speedup_ci95_low']:.3f}-{c[key]['speedup_ci95_high']:.3f}), quiet run {a[key]['speedup_p50']:.3f}")
    print(f"unflagged rows whose speedup differs from the quiet run by more than their CI: {len(wrong)} of {len(unflagged)} (target: 0)")
    print(f"run directories under {work}")


if __name__ == "__main__":
    main()
