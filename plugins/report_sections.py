"""The report's built-in sections, registered through ``register_report_sections`` like any plugin's.

A plugin replaces one by registering a section under the same ``name`` (a ``render`` of
None removes it) and places its own with ``order``; the built-ins use 100 (answers) to 910
(the suite), and plugin sections default to 500, between the figures and the problems.
The sections themselves live in ``benchharness.report.builtin``, imported only when a
report is written (workers never pay for plotly).
"""

from benchharness import hookimpl


@hookimpl
def register_report_sections(register):
    """The built-in sections: answers, results, figures, noisy cells, failures, environment and the suite."""
    from benchharness.report.builtin import register_builtin_sections

    register_builtin_sections(register)
