"""How big the report is and how long it takes to build: self-contained (compressed plotly.js) against plain plotly.js and --cdn.

    python benchmarks/report_size.py [RUN_DIR]     # default: the test fixture run

Prints the file sizes side by side, the ratio to a report that inlines plain plotly.js,
and the median build time of each variant over interleaved repetitions.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from plotly.offline import get_plotlyjs

from benchharness.report.frame import load_run
from benchharness.report.html import build_report

ROOT = Path(__file__).resolve().parents[1]
REPETITIONS = 5


def plain_inline(html: str) -> str:
    """The same report with plotly.js inlined uncompressed, as reports were before."""
    start = html.index("<script type='application/octet-stream' id='plotly-gzip'>")
    end = html.index("</script>", start) + len("</script>")
    return html[:start] + f"<script>{get_plotlyjs()}</script>" + html[end:]


def main() -> None:
    """Build each variant in turn, REPETITIONS times, and print sizes and times."""
    run = load_run(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "tests" / "fixtures" / "run-small")
    build_report(run)  # warm caches (the compressed plotly.js is computed once per process)
    times: dict[str, list[float]] = {"self-contained": [], "cdn": []}
    sizes: dict[str, int] = {}
    for _ in range(REPETITIONS):
        for variant in times:
            start = time.perf_counter()
            html = build_report(run, cdn=variant == "cdn")
            times[variant].append(time.perf_counter() - start)
            sizes[variant] = len(html.encode("utf-8"))
            if variant == "self-contained":
                sizes["plain plotly.js inlined"] = len(plain_inline(html).encode("utf-8"))
    print(f"run: {run.path} ({len(run.records)} records)")
    print(f"{'variant':<26}{'size':>12}{'vs plain':>10}{'build s (median)':>18}")
    plain = sizes["plain plotly.js inlined"]
    for variant in ("plain plotly.js inlined", "self-contained", "cdn"):
        build = f"{statistics.median(times[variant]):.2f}" if variant in times else "-"
        print(f"{variant:<26}{sizes[variant] / 1e6:>10.2f} MB{sizes[variant] / plain:>9.2f}x{build:>18}")


if __name__ == "__main__":
    main()
