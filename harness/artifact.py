"""A built cell's final model, saved whole so that a fresh process can time it.

``torch.save`` of a whole module works for most models, but two things in torch
stop a quantized FX model from coming back: its ``GraphModule`` is rebuilt by
re-tracing while it is being unpickled, and quantized modules restore only
their own fields from ``__setstate__``, without the ``nn.Module`` internals
(``_modules``, hooks) that the trace walks. The pickler here rebuilds every
``GraphModule`` through :func:`rebuild_graph_module`, which first completes its
submodules, and drops its state-dict hooks (they refer back to the module
itself and loading a state dict is not part of timing). A module's own
``extra_repr`` (torchao binds one to each quantized layer, through a
``functools.partial`` that cannot be pickled) is dropped too: it only prints.
"""

from __future__ import annotations

import os
import pickle
import types
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.fx import GraphModule
from torch.fx.graph_module import reduce_graph_module

STATE_DICT_HOOKS = ("_load_state_dict_pre_hooks", "_load_state_dict_post_hooks", "_state_dict_hooks", "_state_dict_pre_hooks")


def complete_module(module: Any) -> None:
    """Give a module, and its submodules, the ``nn.Module`` internals its ``__setstate__`` left out."""
    if not isinstance(module, nn.Module):
        return
    defaults = nn.Module().__dict__
    for key, value in defaults.items():
        module.__dict__.setdefault(key, value)
    for child in module.__dict__["_modules"].values():
        complete_module(child)


def rebuild_graph_module(body: dict[str, Any], import_block: str) -> GraphModule:
    """Rebuild a pickled GraphModule once its submodules are complete."""
    for child in body.get("_modules", {}).values():
        complete_module(child)
    return reduce_graph_module(body, import_block)


class TimingPickler(pickle.Pickler):
    """A pickler whose GraphModules come back through :func:`rebuild_graph_module`, and whose modules lose an instance ``extra_repr``."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, GraphModule):
            _, (body, import_block) = obj.__reduce__()
            body = {key: value for key, value in body.items() if key not in STATE_DICT_HOOKS}
            return rebuild_graph_module, (body, import_block)
        if isinstance(obj, nn.Module) and "extra_repr" in obj.__dict__:
            reduced = list(obj.__reduce_ex__(pickle.HIGHEST_PROTOCOL))
            reduced[2] = {key: value for key, value in reduced[2].items() if key != "extra_repr"}
            return tuple(reduced)
        return NotImplemented


PICKLE_MODULE = types.SimpleNamespace(Pickler=TimingPickler, Unpickler=pickle.Unpickler, __name__="benchharness.artifact")


def save_model(model: nn.Module, inputs: torch.Tensor, path: Path) -> None:
    """Save ``model`` whole with the ``inputs`` it is timed on, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(".tmp")
    torch.save({"model": model, "inputs": inputs}, staging, pickle_module=PICKLE_MODULE)
    os.replace(staging, path)


def load_model(path: Path, device: str | None) -> tuple[nn.Module, torch.Tensor]:
    """The model and inputs saved by :func:`save_model` (a file this harness wrote: it is unpickled in full)."""
    saved = torch.load(path, weights_only=False, map_location=device)
    complete_module(saved["model"])
    return saved["model"], saved["inputs"]
