"""A plugin whose technique hook is misspelt (``register_technique``); the host must skip all of it."""

from benchharness import ModelFamily, Technique, hookimpl


class Misspelt(Technique):
    """Never registered: its hook has the wrong name."""

    NAME = "misspelt_technique"


class SiblingModel(ModelFamily):
    """Registered through a correct hook of the same plugin; skipped with the rest of it."""

    NAME = "misspelt_sibling_model"


@hookimpl
def register_technique(register):
    """Misspelt: the hook is ``register_techniques``."""
    register(Misspelt())


@hookimpl
def register_models(register):
    """A correct hook of the broken plugin."""
    register(SiblingModel())
