"""Public types that plugin authors subclass or receive.

A plugin registers instances of these classes through the registry hooks in
:mod:`benchharness.hookspecs`. Every class names itself with ``NAME`` and
describes itself with ``DESCRIPTION``; configurable ones declare a pydantic
``Config`` whose fields are validated when a suite is loaded.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    import torch
    from torch import nn

    from benchharness.suite import Suite
    from benchharness.train import Trainer


class StrictConfig(BaseModel):
    """Base for every plugin config: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoConfig(StrictConfig):
    """The config of something that takes no parameters."""


class Technique:
    """An optimization technique: one step of a technique pipeline.

    A *transform* (``KIND = "transform"``) returns a new model; an *execution
    mode* (``KIND = "mode"``) changes how training and inference run.
    ``TRAINS = True`` means ``apply`` trains the model itself (from scratch);
    when the first step of a pipeline does not train, the harness trains the
    model with the suite's budget before that step.
    """

    NAME: ClassVar[str]
    DESCRIPTION: ClassVar[str] = ""
    KIND: ClassVar[str] = "transform"
    TRAINS: ClassVar[bool] = False
    CACHE_AS: ClassVar[str | None] = None
    Config: ClassVar[type[StrictConfig]] = NoConfig

    def check_suite(self, config: StrictConfig, suite: "Suite") -> str | None:
        """Return a problem with ``config`` in the context of ``suite`` (e.g. an unknown teacher), or None."""
        return None

    def unsupported_reason(self, config: StrictConfig, device: "Probe") -> str | None:
        """Return why this step cannot run on ``device`` (the cell is then skipped), or None."""
        return None

    def apply(self, model: "nn.Module", config: StrictConfig, context: "CellContext") -> "nn.Module":
        """Apply the technique and return the resulting model (which may be ``model`` itself).

        The result must be an ``nn.Module``: anything else (None, a state dict) fails the cell
        with a message naming the technique. A result whose weights or outputs are NaN or
        infinite fails the cell as ``diverged``.
        """
        raise NotImplementedError

    def cacheable(self, config: StrictConfig) -> bool:
        """Whether the result is worth caching (it trains); cached results are restored instead of recomputed."""
        return False

    def cache_state(self, model: "nn.Module", config: StrictConfig) -> dict[str, Any]:
        """What to store in the artifact cache: tensors and plain values only (loaded with weights_only=True)."""
        return {"state_dict": model.state_dict()}

    def restore(self, model: "nn.Module", config: StrictConfig, context: "CellContext", state: dict[str, Any]) -> "nn.Module":
        """Rebuild the result of :meth:`apply` on ``model`` from ``state`` without training.

        The default loads the state dict into ``model``; a technique that changes the architecture
        first redoes its (deterministic, cheap) structural change, then loads. It must return an
        ``nn.Module``; when it raises, the cache entry is evicted and the step applied again.
        """
        model.load_state_dict(state["state_dict"])
        return model


class ModelFamily:
    """A model architecture, or a family of them addressed as ``NAME:variant``."""

    NAME: ClassVar[str]
    DESCRIPTION: ClassVar[str] = ""

    def variants(self) -> list[str] | None:
        """Names accepted after ``NAME:``, or None when the family takes no variant."""
        return None

    def build(self, num_classes: int, input_shape: tuple[int, ...], variant: str | None = None) -> "nn.Module":
        """Return a freshly initialised model for inputs of ``input_shape`` (without the batch dimension)."""
        raise NotImplementedError


@dataclass
class Data:
    """A loaded data set: tensors of a train and a test split."""

    name: str
    x_train: "torch.Tensor"
    y_train: "torch.Tensor"
    x_test: "torch.Tensor"
    y_test: "torch.Tensor"
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one sample, without the batch dimension."""
        return tuple(self.x_train.shape[1:])

    def to(self, device: "torch.device | str") -> "Data":
        """Return a copy whose tensors live on ``device``."""
        return Data(
            self.name,
            self.x_train.to(device),
            self.y_train.to(device),
            self.x_test.to(device),
            self.y_test.to(device),
            self.num_classes,
        )


class Dataset:
    """A data set that a suite can name in its ``[data]`` table."""

    NAME: ClassVar[str]
    DESCRIPTION: ClassVar[str] = ""
    Config: ClassVar[type[StrictConfig]] = NoConfig

    def problem(self, config: StrictConfig) -> str | None:
        """Return why the data set cannot be loaded with ``config`` (e.g. missing files), or None."""
        return None

    def load(self, config: StrictConfig) -> Data:
        """Load both splits into memory."""
        raise NotImplementedError


class Probe:
    """A hardware probe. A probe with a ``DEVICE`` is also a device that suites can name.

    The device-specific parts of measuring (synchronisation, peak memory,
    background sampling) live here, so the core never branches on a device's name.
    """

    NAME: ClassVar[str]
    DESCRIPTION: ClassVar[str] = ""
    DEVICE: ClassVar[str | None] = None
    PEAK_MEMORY_METHOD: ClassVar[str | None] = None
    """What :meth:`peak_memory_bytes` counts. None: the process's high-water mark (resident memory,
    torch's own included), so a model's inference memory is found by tracking its tensors instead.
    A name (e.g. ``"cuda_max_memory_allocated"``): the device allocator's peak of tensor memory,
    which is then used for a model's inference memory and recorded as ``inference_peak_method``."""

    def unavailable_reason(self) -> str | None:
        """Return why this probe (and its device) cannot be used here, or None when it can."""
        return None

    def describe(self) -> dict[str, Any]:
        """Static facts about the hardware, recorded in every run."""
        return {}

    def synchronize(self) -> None:
        """Wait until queued work on the device has finished (a no-op on synchronous devices)."""

    def reset_peak_memory(self) -> None:
        """Start a new window for :meth:`peak_memory_bytes`.

        With a ``PEAK_MEMORY_METHOD``, the peak right after a reset is what is allocated then.
        """

    def peak_memory_bytes(self) -> int | None:
        """Peak memory used since the last reset (what ``PEAK_MEMORY_METHOD`` says), or None when unknown."""
        return None

    @contextmanager
    def sample(self) -> Iterator[dict[str, Any]]:
        """Sample the hardware (power, clocks, utilisation, energy) while the block runs.

        Yields a dict that is filled with the aggregated samples when the block ends; empty
        for probes that cannot sample.
        """
        yield {}


@dataclass
class Step:
    """One step of a technique pipeline: the technique's name and its validated config."""

    technique: str
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class Cell:
    """One (model, technique pipeline, device, repeat) of a suite's matrix."""

    id: str
    model: str
    technique: str
    steps: list[Step]
    device: str
    repeat: int
    seed: int

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form of the cell."""
        return {
            "id": self.id,
            "model": self.model,
            "technique": self.technique,
            "steps": [{"technique": s.technique, "config": s.config} for s in self.steps],
            "device": self.device,
            "repeat": self.repeat,
            "seed": self.seed,
        }


@dataclass
class CellContext:
    """What a technique sees while a cell runs in its worker.

    ``notes`` end up in the cell's record. After every step they are converted to JSON values
    (tensors and numpy arrays to numbers or lists, numpy scalars to numbers, paths to strings,
    recursively); a value that cannot be converted fails the cell with an error naming the note.
    """

    cell: Cell
    suite: "Suite"
    data: Data
    device: Probe
    torch_device: "torch.device"
    trainer: "Trainer"
    build_model: Callable[[str], "nn.Module"]
    trained_model: Callable[[str], "nn.Module"]
    notes: dict[str, Any] = field(default_factory=dict)
    workdir: Path | None = None
    plugin_options: Any = None

    def calibration_batches(self, count: int, batch_size: int | None = None) -> list["torch.Tensor"]:
        """The first ``count`` training batches (inputs only), e.g. to calibrate quantization."""
        size = batch_size or self.suite.spec.train.batch_size
        inputs = self.data.x_train
        return [inputs[start : start + size] for start in range(0, min(count * size, inputs.shape[0]), size)]
