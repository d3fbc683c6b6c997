"""benchharness: what does technique X do to model Y on device Z?

Plugin authors import :data:`hookimpl` and the base classes exported here.
"""

from __future__ import annotations

from importlib import metadata

import pluggy

from benchharness.api import (
    Cell,
    CellContext,
    Data,
    Dataset,
    ModelFamily,
    NoConfig,
    Probe,
    Step,
    StrictConfig,
    Technique,
)

hookimpl = pluggy.HookimplMarker("benchharness")

try:
    __version__ = metadata.version("benchharness")
except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare source tree
    __version__ = "0.0.0"

__all__ = [
    "Cell",
    "CellContext",
    "Data",
    "Dataset",
    "ModelFamily",
    "NoConfig",
    "Probe",
    "Step",
    "StrictConfig",
    "Technique",
    "hookimpl",
    "__version__",
]
