"""Test-only techniques that fail on purpose: raise, abort the worker, hang, refuse the device, or misbehave subtly."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

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



class ReturnNone(Technique):
    """Forgets to return the model."""

    NAME = "return-none"
    DESCRIPTION = "apply() returns None"

    def apply(self, model, config, context):
        model.eval()


class ReturnStateDict(Technique):
    """Returns the model's state dict instead of the model."""

    NAME = "return-state-dict"
    DESCRIPTION = "apply() returns a state dict"

    def apply(self, model, config, context):
        return model.state_dict()


class CpuOutOfMemory(Technique):
    """Asks torch's CPU allocator for a pebibyte: a real RuntimeError from DefaultCPUAllocator."""

    NAME = "cpu-oom"
    DESCRIPTION = "allocates 1 PiB on the CPU"

    def apply(self, model, config, context):
        import torch

        torch.empty(1 << 50, dtype=torch.uint8)
        return model


class NanWeightsConfig(StrictConfig):
    """Which parameter to poison."""

    parameter: str = Field(description="Name of the parameter filled with NaN, as in named_parameters().")


class NanWeights(Technique):
    """Fills one parameter with NaN, as a diverged fine-tuning would."""

    NAME = "nan-weights"
    DESCRIPTION = "sets one parameter to NaN"
    Config = NanWeightsConfig

    def apply(self, model, config, context):
        import torch

        with torch.no_grad():
            dict(model.named_parameters())[config.parameter].fill_(float("nan"))
        return model


def _overflow_class():
    from torch import nn

    class Overflow(nn.Module):
        """Multiplies by infinity: finite weights, non-finite outputs."""

        def forward(self, x):
            return x * float("inf")

    return Overflow


class InfOutputs(Technique):
    """Appends a layer whose outputs are infinite (it has no weights to check)."""

    NAME = "inf-outputs"
    DESCRIPTION = "outputs become infinite"

    def apply(self, model, config, context):
        from torch import nn

        return nn.Sequential(model, _overflow_class()())


class TensorNotes(Technique):
    """Records tensors, arrays, numpy scalars and paths in its notes, nested too."""

    NAME = "tensor-notes"
    DESCRIPTION = "notes hold torch and numpy values"

    def apply(self, model, config, context):
        import numpy as np
        import torch

        context.notes.update(
            tensor=torch.arange(3.0),
            scalar_tensor=torch.tensor(2.5),
            weights_sum=next(model.parameters()).detach().sum(),
            array=np.arange(4),
            numpy_float=np.float32(0.5),
            numpy_int=np.int64(7),
            path=Path("/tmp/somewhere"),
            nested={"inner": [torch.ones(2, dtype=torch.int64), (np.int64(1), "a")], 3: np.bool_(True)},
        )
        return model


class BadNote(Technique):
    """Records a value that is no JSON value and cannot be pickled."""

    NAME = "bad-note"
    DESCRIPTION = "notes hold a lock"

    def apply(self, model, config, context):
        context.notes["handle"] = threading.Lock()
        return model


@hookimpl
def register_techniques(register):
    """Register the faulty test techniques."""
    techniques = (
        Explode, Abort, Segfault, OutOfMemory, Hang, Refuse, Identity, ReturnNone, ReturnStateDict, CpuOutOfMemory,
        NanWeights, InfOutputs, TensorNotes, BadNote,
    )
    for technique in techniques:
        register(technique())
