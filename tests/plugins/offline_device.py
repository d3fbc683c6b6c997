"""A device that is never available: its cells are recorded as skipped at once, without a worker.

Run-file tests use it to write many small records quickly.
"""

from benchharness import Probe, hookimpl


class OfflineDevice(Probe):
    """A device that no machine has."""

    NAME = "offline"
    DESCRIPTION = "a test device that is never available"
    DEVICE = "offline"

    def unavailable_reason(self) -> str:
        """Always unavailable."""
        return "this test device is never available"


@hookimpl
def register_probes(register):
    """Register the offline device."""
    register(OfflineDevice)
