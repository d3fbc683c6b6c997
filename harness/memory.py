"""The model's own inference memory: weights, input and live activations at their peak during one forward pass.

On a device whose allocator counts tensors (CUDA) the allocator's peak is read; elsewhere
(CPU, where the only figure the system gives is the process's high-water mark, mostly torch
itself) a dispatch mode tracks every storage that the forward pass's operators return.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from benchharness.api import Probe

TRACKING_METHOD = "tensor_tracking"
REASON_CHARS = 200


def _storage_of(tensor: torch.Tensor) -> torch.UntypedStorage | None:
    """The untyped storage behind ``tensor``, or None for tensors without one (sparse, MKL-DNN, empty)."""
    try:
        storage = tensor.untyped_storage()
    except (RuntimeError, NotImplementedError, TypeError):
        return None
    return storage if storage.data_ptr() != 0 else None


def _storage_key(storage: torch.UntypedStorage) -> tuple[str, int]:
    return str(storage.device), storage.data_ptr()


def _kind(tensor: torch.Tensor) -> str:
    """What a tensor without a storage is, for an error message."""
    if tensor.is_mkldnn:
        return "mkldnn"
    return str(tensor.layout).replace("torch.", "") if tensor.layout != torch.strided else type(tensor).__name__


def _tensors_in(value: Any) -> list[torch.Tensor]:
    """Every tensor in ``value`` and in the tuples, lists and dicts it holds."""
    leaves, _ = tree_flatten(value)
    return [leaf for leaf in leaves if isinstance(leaf, torch.Tensor)]


def resident_tensors(model: torch.nn.Module) -> list[torch.Tensor]:
    """The model's parameters and buffers, and the tensors of its state dict.

    The state dict adds what parameters and buffers miss: the weights inside packed int8
    parameters (torchbind objects), which their modules unpack into the state dict.
    """
    tensors = [*model.parameters(), *model.buffers()]
    with torch.no_grad():
        tensors += _tensors_in(list(model.state_dict(keep_vars=True).values()))
    return tensors


class TensorMemoryTracker(TorchDispatchMode):
    """Counts the bytes of live storages while operators run under it, and their peak.

    Each storage is counted once (by its device and data pointer) from the operator that returns it until
    it is freed; views and in-place results share a counted storage and add nothing. Tensors
    given to :meth:`hold` (weights, the input) count from the start. Memory that kernels use
    internally without returning it (workspaces, packed copies of weights) is not seen.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[tuple[str, int], tuple[int, object]] = {}
        self.current_bytes = 0
        self.peak_bytes = 0
        self.untracked: set[str] = set()
        self._finalizers: list[weakref.finalize] = []

    def hold(self, tensors: list[torch.Tensor]) -> None:
        """Count these tensors' storages (once each) as alive from now on."""
        for tensor in tensors:
            self._track(tensor)
        self.peak_bytes = max(self.peak_bytes, self.current_bytes)

    def _track(self, tensor: torch.Tensor) -> None:
        storage = _storage_of(tensor)
        if storage is None:
            if tensor.numel() > 0:
                self.untracked.add(_kind(tensor))
            return
        key = _storage_key(storage)
        if key in self.live:
            return
        token = object()
        nbytes = storage.nbytes()
        self.live[key] = (nbytes, token)
        self.current_bytes += nbytes
        self._finalizers.append(weakref.finalize(storage, self._release, key, token))

    def _release(self, key: tuple[str, int], token: object) -> None:
        entry = self.live.get(key)
        if entry is not None and entry[1] is token:
            del self.live[key]
            self.current_bytes -= entry[0]

    def __exit__(self, *exc):
        for finalizer in self._finalizers:
            finalizer.detach()
        self._finalizers.clear()
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for tensor in _tensors_in(result):
            self._track(tensor)
        self.peak_bytes = max(self.peak_bytes, self.current_bytes)
        return result


@torch.inference_mode()
def tracked_peak_bytes(model: torch.nn.Module, batch: torch.Tensor) -> int:
    """Peak bytes of the weights, ``batch`` and live activations during one forward pass of ``model`` on ``batch``.

    Raises ``RuntimeError`` when the forward pass made tensors whose memory cannot be tracked
    (no storage: MKL-DNN, sparse), since the peak would then be too low.
    """
    model.eval()
    resident = resident_tensors(model) + [batch]
    tracker = TensorMemoryTracker()
    with tracker:
        tracker.hold(resident)
        model(batch)
    if tracker.untracked:
        raise RuntimeError(f"tensors without a storage ({', '.join(sorted(tracker.untracked))}) cannot be tracked")
    return tracker.peak_bytes


def resident_bytes(tensors: list[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors``."""
    sizes = {}
    for tensor in tensors:
        storage = _storage_of(tensor)
        if storage is not None:
            sizes[_storage_key(storage)] = storage.nbytes()
    return sum(sizes.values())


@torch.inference_mode()
def allocator_peak_bytes(model: torch.nn.Module, batch: torch.Tensor, probe: Probe) -> int:
    """Weights and ``batch`` plus the allocator's peak above what was allocated before one forward pass.

    What else the device holds (the data set, other models) is left out, so that the figure is
    the model's own, comparable with :func:`tracked_peak_bytes`.
    """
    model.eval()
    probe.synchronize()
    probe.reset_peak_memory()
    before = probe.peak_memory_bytes()
    output = model(batch)
    probe.synchronize()
    peak = probe.peak_memory_bytes()
    del output
    return resident_bytes(resident_tensors(model) + [batch]) + max(peak - before, 0)


def inference_memory(model: torch.nn.Module, batch: torch.Tensor, probe: Probe) -> dict[str, Any]:
    """The memory metrics of one inference forward pass of ``model`` on ``batch``, on ``probe``'s device.

    ``inference_peak_bytes``: weights and buffers, the input and live activations at their peak
    (None when it cannot be measured); ``inference_peak_method``: how (the probe's
    ``PEAK_MEMORY_METHOD``, ``"tensor_tracking"``, or ``"unavailable: <reason>"``);
    ``process_peak_rss_bytes``: the process's high-water mark over the same pass, where the
    probe's peak memory is that (CPU), else None. Failing to track never raises; the forward
    pass itself may (e.g. out of memory).
    """
    batch = batch.clone()
    allocator = probe.PEAK_MEMORY_METHOD
    if allocator is None:
        probe.reset_peak_memory()
    try:
        if allocator is not None:
            peak, method = allocator_peak_bytes(model, batch, probe), allocator
        else:
            peak, method = tracked_peak_bytes(model, batch), TRACKING_METHOD
    except Exception as error:  # a forward pass that fails untracked too raises below, as it should
        reason = (str(error).strip().splitlines() or [""])[0][:REASON_CHARS]
        peak, method = None, f"unavailable: {type(error).__name__}: {reason}"
        with torch.inference_mode():
            model.eval()(batch)
    probe.synchronize()
    process_peak = probe.peak_memory_bytes() if allocator is None else None
    return {"inference_peak_bytes": peak, "inference_peak_method": method, "process_peak_rss_bytes": process_peak}

