"""A plugin whose register hook raises after registering one valid technique; the host must skip all of it."""

from benchharness import Technique, hookimpl


class HalfRegistered(Technique):
    """Registered just before the hook raises; must not survive."""

    NAME = "half_registered"


@hookimpl
def register_techniques(register):
    """Register one technique, then fail."""
    register(HalfRegistered())
    raise RuntimeError("register_techniques of raising_register fails on purpose")
