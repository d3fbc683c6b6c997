"""A plugin that registers a technique class without ``NAME`` beside valid items; the host must skip all of them."""

from benchharness import Dataset, Technique, hookimpl


class Sibling(Technique):
    """Valid, but its plugin is broken, so it must not be registered."""

    NAME = "nameless_sibling"


class Nameless(Technique):
    """Has no NAME."""

    DESCRIPTION = "forgot its NAME"


class SiblingData(Dataset):
    """A valid data set of the broken plugin."""

    NAME = "nameless_sibling_data"


@hookimpl
def register_datasets(register):
    """Registered before the techniques, and still skipped."""
    register(SiblingData())


@hookimpl
def register_techniques(register):
    """One valid technique, then one without a NAME."""
    register(Sibling())
    register(Nameless)
