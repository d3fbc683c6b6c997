"""A test plugin that implements the observing hooks, accepting fewer arguments than the specs declare."""

from __future__ import annotations

import json
import os

import click

from benchharness import hookimpl

LOG_ENV = "BENCHHARNESS_TEST_OBSERVER_LOG"


def _log(event: str, **fields) -> None:
    path = os.environ.get(LOG_ENV)
    if path:
        with open(path, "a") as file:
            file.write(json.dumps({"event": event, **fields}) + "\n")


@hookimpl
def before_cell(cell):
    """Log the cell about to run (takes only ``cell``)."""
    _log("before_cell", cell=cell.id)


@hookimpl
def after_cell(cell, record):
    """Log each record's status."""
    _log("after_cell", cell=cell.id, status=record["status"])


@hookimpl
def register_commands(cli):
    """Add a `hello` command."""

    @cli.command()
    def hello():
        """Say hello from a plugin."""
        click.echo("hello from the observer plugin")


@hookimpl
def register_report_sections(register):
    """Register one report section."""
    register("Observer", lambda frame: f"<p>{len(frame)} rows</p>")
