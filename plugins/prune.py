"""Pruning: unstructured magnitude pruning (torch.nn.utils.prune) and structural channel pruning (Torch-Pruning)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from benchharness import StrictConfig, Technique, hookimpl

PRELOAD = ("torch.nn.utils.prune", "torch_pruning")


class PruneConfig(StrictConfig):
    """Parameters of the prune technique."""

    method: Literal["magnitude", "channels"] = Field(
        "magnitude", description="'magnitude': zero the smallest weights (unstructured); 'channels': remove whole channels/filters (structural)."
    )
    amount: float = Field(0.5, ge=0.0, lt=1.0, description="Share of weights (magnitude) or of channels per layer (channels) to prune.")
    scope: Literal["global", "layer"] | None = Field(
        None,
        description="Rank across all layers ('global') or prune each layer by the same ratio ('layer'); default: global for magnitude, layer for channels.",
    )
    importance: Literal["l1", "l2", "random"] = Field("l1", description="channels: the criterion ranking channels (magnitude norms or random).")
    finetune_epochs: int = Field(0, ge=0, le=10_000, description="Epochs of fine-tuning after pruning, with the suite's budget otherwise.")


def prunable_layers(model):
    """Conv and Linear modules whose weights magnitude pruning considers."""
    from torch import nn

    return [module for module in model.modules() if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))]


def classifier_layers(model, num_classes: int):
    """Output layers (Linear with ``num_classes`` outputs) that channel pruning must keep intact."""
    from torch import nn

    return [module for module in model.modules() if isinstance(module, nn.Linear) and module.out_features == num_classes]


class Prune(Technique):
    """Magnitude (unstructured, masks made permanent) or channel (structural, Torch-Pruning) pruning."""

    NAME = "prune"
    DESCRIPTION = "magnitude: unstructured L1 zeros via torch.nn.utils.prune; channels: removes filters with Torch-Pruning"
    Config = PruneConfig

    def cacheable(self, config):
        return config.finetune_epochs > 0

    def apply(self, model, config, context):
        if config.method == "magnitude":
            return self._magnitude(model, config, context)
        model = self._remove_channels(model, config, context)
        if config.finetune_epochs:
            context.trainer.fit(model, context.data, epochs=config.finetune_epochs)
        return model

    def restore(self, model, config, context, state):
        if config.method == "channels":
            model = self._remove_channels(model, config, context)
        model.load_state_dict(state["state_dict"])
        return model

    def _magnitude(self, model, config, context):
        from torch.nn.utils import prune

        targets = [(module, "weight") for module in prunable_layers(model)]
        if config.scope in (None, "global"):
            prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=config.amount)
        else:
            for module, name in targets:
                prune.l1_unstructured(module, name, amount=config.amount)
        if config.finetune_epochs:
            context.trainer.fit(model, context.data, epochs=config.finetune_epochs)
        for module, name in targets:
            prune.remove(module, name)
        return model

    def _remove_channels(self, model, config, context):
        import torch
        import torch_pruning as tp

        importance = (
            tp.importance.RandomImportance()
            if config.importance == "random"
            else tp.importance.GroupMagnitudeImportance(p=1 if config.importance == "l1" else 2)
        )
        torch.manual_seed(context.cell.seed)
        model.eval()
        example = context.data.x_train[:1].to(context.torch_device)
        pruner = tp.pruner.BasePruner(
            model,
            example,
            importance=importance,
            pruning_ratio=config.amount,
            global_pruning=config.scope == "global",
            ignored_layers=classifier_layers(model, context.data.num_classes),
        )
        pruner.step()
        return model


@hookimpl
def register_techniques(register):
    """Register the prune technique."""
    register(Prune())
