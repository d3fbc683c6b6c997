"""A device no machine has: every cell on it is recorded as skipped at once, so a whole run takes no time."""

from benchharness import Probe, hookimpl


class Nowhere(Probe):
    """Never available."""

    NAME = "nowhere"
    DESCRIPTION = "a test device that is never available"
    DEVICE = "nowhere"

    def unavailable_reason(self) -> str:
        """Always unavailable."""
        return "the nowhere device exists on no machine"


@hookimpl
def register_probes(register):
    """Register the nowhere device."""
    register(Nowhere)
