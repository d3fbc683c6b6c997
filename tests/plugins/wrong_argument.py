"""A plugin whose hook implementation asks for an argument the hook does not pass (``reg`` for ``register``)."""

from benchharness import Technique, hookimpl


class WrongArgument(Technique):
    """Never registered: its hook asks for the wrong argument."""

    NAME = "wrong_argument_technique"


@hookimpl
def register_techniques(reg):
    """The argument must be called ``register``."""
    reg(WrongArgument())
