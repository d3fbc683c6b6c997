"""Test-only technique that starts a process in a new session, as a launcher would, then hangs."""

from __future__ import annotations

import subprocess
import sys
import time

from pydantic import Field

from benchharness import StrictConfig, Technique, hookimpl

BUSY_LOOP = "import time\nwhile True:\n    time.sleep(0.05)\n"


class SpawnConfig(StrictConfig):
    """How long to hang after starting the child."""

    seconds: float = Field(3600.0, gt=0, description="Seconds to sleep after starting the child.")


class Spawn(Technique):
    """Starts a Python loop with ``start_new_session=True``, writes its pid to ``spawned.pid`` in the run directory, and sleeps."""

    NAME = "spawn"
    DESCRIPTION = "starts a child in a new session, then sleeps"
    TRAINS = True  # so that no training step runs before it
    Config = SpawnConfig

    def apply(self, model, config, context):
        child = subprocess.Popen([sys.executable, "-c", BUSY_LOOP], start_new_session=True)
        (context.workdir / "spawned.pid").write_text(str(child.pid))
        time.sleep(config.seconds)
        return model


@hookimpl
def register_techniques(register):
    """Register the spawn test technique."""
    register(Spawn())
