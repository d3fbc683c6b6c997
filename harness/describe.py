"""What a run records about where it ran: ``run.json``'s environment, conditions, probes and plugins.

Describing torch and the probes imports torch, so the runner asks a worker for it
(:class:`benchharness.tasks.DescribeTask`) rather than importing torch itself.
"""

from __future__ import annotations

from typing import Any

from benchharness.host import PluginHost


def run_info(suite: Any, host: PluginHost, probes: dict[str, Any] | None = None) -> dict[str, Any]:
    """The contents of ``run.json``: the suite as run, the environment, every probe and plugin (with its version).

    ``probes`` is :func:`describe_probes`'s result when the caller already has it.
    """
    from benchharness import conditions
    from benchharness.store import environment

    measure = suite.spec.measure
    return {
        **preliminary_info(suite, host),
        "conditions": conditions.describe(measure.cpus, measure.thread_count()),
        "environment": environment(suite.source),
        "probes": describe_probes(host) if probes is None else probes,
        "plugins": [{**info.as_dict(), "source": host.sources.get(info.name, info.origin)} for info in host.plugin_infos()],
        "described": True,
    }


def preliminary_info(suite: Any, host: PluginHost) -> dict[str, Any]:
    """What ``--resume`` needs, written before the workers start so a run stopped at any moment can be resumed.

    ``described`` is False until :func:`run_info`'s full description replaces it.
    """
    from benchharness.matrix import expand
    from benchharness.store import now_iso

    return {
        "suite": {"name": suite.name, "source": suite.source, "sha256": suite.sha256, "text": suite.text, "overrides": suite.overrides},
        "created_at": now_iso(),
        "plugin_options": {"extra": list(host.options.extra)},
        "cells": [cell.id for cell in expand(suite)],
        "described": False,
    }


def describe_probes(host: PluginHost) -> dict[str, Any]:
    """Every probe's description, or why it is unavailable."""
    return describe_probes_and_devices(host)[0]


def describe_probes_and_devices(host: PluginHost) -> tuple[dict[str, Any], dict[str, str]]:
    """Every probe's description, and why each device probe is unavailable ('' when it is available).

    Each probe's ``unavailable_reason`` is asked once (for the CUDA probe it starts NVML).
    """
    described, reasons = {}, {}
    for name in host.probes.names():
        probe = host.probes[name]
        try:
            reason = probe.unavailable_reason()
        except Exception as error:
            reason = f"probe failed: {type(error).__name__}: {error}"
            facts = {"available": False, "reason": reason}
        else:
            try:
                facts = probe.describe()
                facts.setdefault("available", reason is None)
                if reason:
                    facts.setdefault("reason", reason)
            except Exception as error:
                facts = {"available": False, "reason": f"probe failed: {type(error).__name__}: {error}"}
        described[name] = facts
        if getattr(probe, "DEVICE", None):
            reasons[name] = reason or ""
    return described, reasons
