"""torch.compile as a technique: the model runs as a compiled graph, timed like any other cell.

The compiled model is a :class:`Compiled` wrapper around the eager model. It compiles
lazily, on its first forward pass in each process, so it can be saved whole and timed in
fresh processes like every other cell (a compiled callable cannot be pickled). The building
worker records what compiling cost and what dynamo saw; the timing worker counts the graphs
compiled while a cell was timed (they would be in its latency). Inductor caches compiled
graphs on disk, so a timing process compiles the same graphs quickly.
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Literal

from pydantic import Field

from benchharness import StrictConfig, Technique, hookimpl

MAX_BREAK_REASONS = 5
RECOMPILE_LIMIT = 64


class CompileConfig(StrictConfig):
    """Parameters of the compile technique."""

    mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = Field(
        "default", description="torch.compile's mode: reduce-overhead uses CUDA graphs on GPUs; max-autotune benchmarks kernel choices (slow to compile)."
    )
    backend: str = Field("inductor", min_length=1, description="torch.compile's backend (inductor, or any name in torch._dynamo.list_backends()).")
    dynamic: bool = Field(False, description="Compile for dynamic shapes; off: one graph per batch size, each specialised to it.")
    fullgraph: bool = Field(False, description="Fail on the first graph break instead of running the break in Python.")


def __getattr__(name: str):
    """``Compiled`` is built on first use, so importing this plugin does not import torch (pickle finds it here)."""
    if name == "Compiled":
        return _compiled_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def raise_recompile_limit() -> None:
    """Let dynamo keep a graph per (model, batch size) of every compiled model a process times, instead of falling back to eager after 8."""
    import torch._dynamo

    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(RECOMPILE_LIMIT, getattr(torch._dynamo.config, name)))
            return


@lru_cache(maxsize=1)
def _compiled_class():
    import torch
    from torch import nn
    from torch._dynamo.utils import counters

    def graphs_compiled() -> int:
        """Graphs dynamo has compiled in this process so far (read on every call: no import in the timed path)."""
        return counters["stats"]["unique_graphs"]

    class Compiled(nn.Module):
        """The eager model ``inner`` run through ``torch.compile``, compiled on the first forward pass in each process.

        ``compilations`` counts the graphs compiled by its own calls, ``shapes`` the input shapes
        it has seen: compilations beyond one per shape are recompilations.
        """

        def __init__(self, inner: nn.Module, options: dict):
            super().__init__()
            self.inner = inner
            self.options = dict(options)
            self.benchharness_speedup = (
                True,
                f"compiled graph ({options.get('backend', 'inductor')}, mode {options.get('mode') or 'default'}): fuses elementwise work and "
                "removes Python overhead; Linear/Conv run the same kernels, so the gain is bounded by the time spent outside them",
            )
            self._reset_process_state()

        @property
        def benchharness_eager(self) -> nn.Module:
            """The eager model that is compiled."""
            return self.inner

        def _reset_process_state(self) -> None:
            self.__dict__["_compiled"] = None
            self.compilations = 0
            self.shapes: set[tuple] = set()

        def __getstate__(self):
            state = dict(self.__dict__)
            state["_compiled"] = None
            return state

        def __setstate__(self, state):
            self.__dict__.update(state)
            self._reset_process_state()

        def _callable(self):
            if self.__dict__["_compiled"] is None:
                raise_recompile_limit()
                options = {key: value for key, value in self.options.items() if not (key == "mode" and value == "default")}
                self.__dict__["_compiled"] = torch.compile(self.inner, **options)
            return self.__dict__["_compiled"]

        def forward(self, x):
            before = graphs_compiled()
            output = self._callable()(x)
            self.compilations += graphs_compiled() - before
            self.shapes.add(tuple(x.shape))
            return output

        def benchharness_compilations(self) -> int:
            """Graphs compiled by this model's calls in this process."""
            return self.compilations

        def recompilations(self) -> int:
            """Compilations beyond the first graph of each input shape (0 when every shape compiled once)."""
            return max(0, self.compilations - len(self.shapes))

    Compiled.__module__, Compiled.__qualname__ = __name__, "Compiled"
    return Compiled


def compile_module(model, config: CompileConfig):
    """``model`` wrapped to run through ``torch.compile`` with ``config``'s options."""
    return _compiled_class()(model, {"mode": config.mode, "backend": config.backend, "dynamic": config.dynamic, "fullgraph": config.fullgraph})


def graph_breaks(model, sample) -> dict:
    """What dynamo makes of ``model`` on ``sample``: graphs, graph breaks and the first reasons, via ``torch._dynamo.explain``."""
    import torch

    explained = torch._dynamo.explain(model)(sample)
    reasons = [f"{getattr(reason, 'reason', reason)}".splitlines()[0] for reason in explained.break_reasons]
    torch._dynamo.reset()
    return {"graphs": explained.graph_count, "graph_breaks": explained.graph_break_count, "break_reasons": reasons[:MAX_BREAK_REASONS]}


class Compile(Technique):
    """Runs the model through torch.compile (an execution mode: any step may come before it)."""

    NAME = "compile"
    DESCRIPTION = "torch.compile (inductor by default): compile time, graph breaks and recompilations recorded beside the latency"
    Config = CompileConfig

    def unsupported_reason(self, config, device):
        import torch

        if config.backend not in torch._dynamo.list_backends(exclude_tags=()):
            return f"torch.compile has no backend {config.backend!r} here (it has {', '.join(torch._dynamo.list_backends())})"
        if config.mode == "reduce-overhead" and device.DEVICE == "cpu":
            return "mode reduce-overhead captures CUDA graphs: it changes nothing on CPU; use mode = \"default\" there"
        return None

    def apply(self, model, config, context):
        import torch

        if isinstance(model, _compiled_class()):
            model = model.inner
        sample = context.data.x_test[: context.suite.spec.measure.eval_batch_size]
        model.eval()
        context.notes.update({f"compile_{key}": value for key, value in graph_breaks(model, sample[:1]).items()})
        with torch.inference_mode():
            started = time.perf_counter()
            model(sample)
            context.device.synchronize()
            eager_s = time.perf_counter() - started
            compiled = compile_module(model, config)
            started = time.perf_counter()
            compiled(sample)
            context.device.synchronize()
            first_call_s = time.perf_counter() - started
        context.notes["compile_s"] = max(0.0, first_call_s - eager_s)
        context.notes["compile_mode"] = config.mode
        context.notes["compile_backend"] = config.backend
        return compiled


@hookimpl
def register_techniques(register):
    """Register the compile technique."""
    register(Compile())
