"""A plugin that loads fine but whose hooks called later all raise: commands, report sections, before and after a cell."""

from benchharness import Technique, hookimpl


class StillHere(Technique):
    """Registered normally: only the later hooks of this plugin fail."""

    NAME = "still_here"


@hookimpl
def register_techniques(register):
    """A working register hook."""
    register(StillHere())


@hookimpl
def register_commands(cli):
    """Fails while the CLI is being built."""
    raise RuntimeError("register_commands of raising_runtime fails on purpose")


@hookimpl
def register_report_sections(register):
    """Fails while a report is being built."""
    raise RuntimeError("register_report_sections of raising_runtime fails on purpose")


@hookimpl
def before_cell(cell):
    """Fails before every cell."""
    raise RuntimeError("before_cell of raising_runtime fails on purpose")


@hookimpl
def after_cell(cell, record):
    """Fails after every cell."""
    raise RuntimeError("after_cell of raising_runtime fails on purpose")
