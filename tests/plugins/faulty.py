"""Test-only techniques that fail on purpose: raise, abort the worker, hang, or refuse the device."""

from __future__ import annotations

import os
import time

from pydantic import Field

from benchharness import StrictConfig, Technique, hookimpl


class Explode(Technique):
    """Raises inside apply."""

    NAME = "explode"
    DESCRIPTION = "raises RuntimeError"

    def apply(self, model, config, context):
        raise RuntimeError("boom from the explode technique")


class Abort(Technique):
    """Kills its own worker with SIGABRT, as a segfaulting extension would."""

    NAME = "abort"
    DESCRIPTION = "calls os.abort()"

    def apply(self, model, config, context):
        print("about to abort", flush=True)
        os.abort()


class Segfault(Technique):
    """Dereferences a null pointer: the worker dies from SIGSEGV."""

    NAME = "segfault"
    DESCRIPTION = "reads address 0"

    def apply(self, model, config, context):
        import ctypes

        ctypes.string_at(0)


class OutOfMemory(Technique):
    """Runs out of memory the way an oversized allocation does."""

    NAME = "oom"
    DESCRIPTION = "raises torch.OutOfMemoryError"

    def apply(self, model, config, context):
        import torch

        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")


class HangConfig(StrictConfig):
    """How long to hang."""

    seconds: float = Field(3600.0, gt=0, description="Seconds to sleep.")


class Hang(Technique):
    """Sleeps far past any sensible cell timeout."""

    NAME = "hang"
    DESCRIPTION = "sleeps"
    Config = HangConfig

    def apply(self, model, config, context):
        time.sleep(config.seconds)
        return model


class Refuse(Technique):
    """Says it cannot run on any device."""

    NAME = "refuse"
    DESCRIPTION = "always unsupported"

    def unsupported_reason(self, config, device):
        return f"refuses to run on {device.NAME}"

    def apply(self, model, config, context):
        raise AssertionError("never applied")


class Identity(Technique):
    """Returns the trained model unchanged; records a note."""

    NAME = "identity"
    DESCRIPTION = "does nothing"

    def apply(self, model, config, context):
        context.notes["identity_saw_pid"] = os.getpid()
        return model


@hookimpl
def register_techniques(register):
    """Register the faulty test techniques."""
    for technique in (Explode, Abort, Segfault, OutOfMemory, Hang, Refuse, Identity):
        register(technique())
