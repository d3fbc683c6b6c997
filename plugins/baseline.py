"""The baseline technique: train with the suite's budget, change nothing else."""

from __future__ import annotations

from benchharness import Technique, hookimpl


class Baseline(Technique):
    """Trains the model with the suite's training budget; every other cell is compared with it."""

    NAME = "baseline"
    DESCRIPTION = "train with the suite's budget and evaluate; the reference for every other technique"
    TRAINS = True
    CACHE_AS = "train"

    def apply(self, model, config, context):
        context.trainer.fit(model, context.data)
        return model

    def cacheable(self, config):
        return True


@hookimpl
def register_techniques(register):
    """Register the baseline technique."""
    register(Baseline())
