"""Model parallelism: the model split into pipeline stages across processes (work in progress)."""

from __future__ import annotations

from benchharness import hookimpl


@hookimpl
def register_techniques(register):
    """Register the pipeline technique (none yet)."""
