"""Techniques whose checks raise: a bug in a plugin that must cost one cell (or be a suite problem), never the run."""

from benchharness import Technique, hookimpl


class RaisingSuiteCheck(Technique):
    """check_suite raises."""

    NAME = "raising-suite-check"

    def check_suite(self, config, suite):
        raise KeyError("teacher")

    def apply(self, model, config, context):
        return model


class RaisingDeviceCheck(Technique):
    """unsupported_reason raises."""

    NAME = "raising-device-check"

    def unsupported_reason(self, config, device):
        raise AttributeError("no attribute 'DEVICE_TYPE'")

    def apply(self, model, config, context):
        return model


@hookimpl
def register_techniques(register):
    """Register both."""
    register(RaisingSuiteCheck())
    register(RaisingDeviceCheck())
