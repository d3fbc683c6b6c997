"""Reports: a tidy pandas frame of a run, plotly figures, one self-contained HTML file, and run comparison."""

from benchharness.report.html import build_report, write_report

__all__ = ["build_report", "write_report"]
