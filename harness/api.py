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

    from benchharness.suite import Suite, SuiteSpec
    from benchharness.train import Trainer


class StrictConfig(BaseModel):
    """Base for every plugin config: unknown keys and values of the wrong type are errors.

    Validation is strict: ``1`` or ``"yes"`` is not a bool and ``"2"`` is not an int (an int is
    accepted for a float). The harness validates a suite's values strictly when it loads the
    suite; configs it has already validated are rebuilt with :func:`rebuild_config`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    """pydantic's settings: unknown keys are errors, instances are frozen, values are validated strictly."""


def rebuild_config(config_type: type[BaseModel], values: dict[str, Any]) -> BaseModel:
    """``config_type`` from ``values`` that were validated before and dumped as JSON (a tuple came back as a list)."""
    return config_type.model_validate(values, strict=False)


class NoConfig(StrictConfig):
    """The config of something that takes no parameters."""


class Technique:
    """An optimization technique: one step of a technique pipeline.

    ``apply`` gets a model and returns the model the technique makes of it
    (the same one changed in place, a new one, or a wrapper that changes how
    inference runs). When the first step of a pipeline does not train
    (``TRAINS = False``), the harness first trains the model with the suite's
    budget; ``context.model_trained`` tells ``apply`` which case it is in.

    Caching: when ``cacheable(config)`` is true, the result of ``apply`` is
    stored as ``cache_state(model, config)`` under a key made of everything
    before it (model, data, training budget, seed, earlier steps, library
    versions, and the code of the model family, the data set and each step's technique); the next run with the same key calls
    ``restore`` instead of ``apply``.
    """

    NAME: ClassVar[str]
    """The name suites use in ``steps``; unique among techniques."""
    DESCRIPTION: ClassVar[str] = ""
    """One line shown by ``benchharness list techniques``."""
    TRAINS: ClassVar[bool] = False
    """True when ``apply`` trains the model itself from scratch when it is a pipeline's first step (baseline, distill, amp, ddp)."""
    CACHE_AS: ClassVar[str | None] = None
    """The step name of cache entries, when not ``NAME``: techniques with the same ``CACHE_AS`` share them (baseline's ``"train"`` is the implicit train step's)."""
    Config: ClassVar[type[StrictConfig]] = NoConfig
    """The pydantic model of the step's parameters (a :class:`StrictConfig`); validated when the suite is loaded."""

    def check_suite(self, config: StrictConfig, suite: "SuiteSpec") -> str | None:
        """Return a problem with ``config`` in the context of the suite as written (e.g. a teacher that is not one of ``suite.models``), or None.

        Called by ``validate`` and ``run`` when the suite is loaded, before any cell runs.
        """
        return None

    def unsupported_reason(self, config: StrictConfig, device: "Probe") -> str | None:
        """Return why this step cannot run on ``device`` (the cell is then skipped with that reason), or None.

        Called before a cell starts, for every registered device; it must not raise, and should
        return a reason for a device type it does not know rather than fail later in ``apply``.
        """
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
    """The name suites use in ``models`` (``NAME`` or ``NAME:variant``)."""
    DESCRIPTION: ClassVar[str] = ""
    """One line shown by ``benchharness list models``."""
    Config: ClassVar[type[StrictConfig]] = NoConfig
    """The pydantic model of the family's options (e.g. ``dropout``), given in a suite's ``[named_models.<name>]`` table."""

    def variants(self) -> list[str] | None:
        """Names accepted after ``NAME:``, or None when the family takes no variant."""
        return None

    def build(self, num_classes: int, input_shape: tuple[int, ...], variant: str | None = None, config: StrictConfig | None = None) -> "nn.Module":
        """Return a freshly initialised model for inputs of ``input_shape`` (without the batch dimension).

        ``config`` is an instance of ``Config`` when the suite names the model with options, else None
        (build the defaults); a family without a ``Config`` may leave the parameter out.
        """
        raise NotImplementedError

    def build_with(self, num_classes: int, input_shape: tuple[int, ...], variant: str | None, options: dict[str, Any]) -> "nn.Module":
        """:meth:`build` with ``options`` (validated JSON values of ``Config``): passed as ``config`` only when there are any."""
        if not options:
            return self.build(num_classes, input_shape, variant)
        return self.build(num_classes, input_shape, variant, config=rebuild_config(self.Config, options))


@dataclass
class Data:
    """A loaded data set: tensors of a train and a test split."""

    name: str
    """The data set's registered name."""
    x_train: "torch.Tensor"
    """Training inputs, one sample per row of the first dimension (images: N x C x H x W, float32)."""
    y_train: "torch.Tensor"
    """Training labels: class indices (int64), one per sample."""
    x_test: "torch.Tensor"
    """Test inputs, shaped like ``x_train``."""
    y_test: "torch.Tensor"
    """Test labels (int64)."""
    num_classes: int
    """How many classes the labels range over (0 to ``num_classes - 1``)."""

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
    """The name suites use in ``[data] name``."""
    DESCRIPTION: ClassVar[str] = ""
    """One line shown by ``benchharness list datasets``."""
    Config: ClassVar[type[StrictConfig]] = NoConfig
    """The pydantic model of the ``[data]`` table's other keys."""

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
    """The probe's name (``benchharness probe`` and ``run.json`` list its facts under it)."""
    DESCRIPTION: ClassVar[str] = ""
    """One line shown by ``benchharness list probes``."""
    DEVICE: ClassVar[str | None] = None
    """A torch device type (``"cpu"``, ``"cuda"``) that suites can name in ``devices``, or None for a probe that is not a device."""
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
    """The technique's name."""
    config: dict[str, Any] = field(default_factory=dict)
    """Its validated parameters, as JSON values (rebuild the config with ``technique.Config``)."""


@dataclass
class Cell:
    """One (model, technique pipeline, device, repeat) of a suite's matrix."""

    id: str
    """``model/technique/device/rREPEAT`` (``model/recipe/technique/device/rREPEAT`` with recipes): unique in a run."""
    model: str
    """The model's name as the suite gives it."""
    technique: str
    """The pipeline's label (its ``name``, or its steps joined by ``+``)."""
    steps: list[Step]
    """The pipeline's steps, in order (without the implicit train step)."""
    device: str
    """The device's name."""
    repeat: int
    """Which repeat of the suite this is, from 0."""
    seed: int
    """The seed of models and training: the suite's ``seed`` plus ``repeat``."""
    recipe: str | None = None
    """The training recipe's name (a ``[[recipes]]`` entry), or None in a suite without recipes."""

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
            "recipe": self.recipe,
        }


@dataclass
class CellContext:
    """What a technique sees while a cell runs in its worker.

    ``notes`` end up in the cell's record. After every step they are converted to JSON values
    (tensors and numpy arrays to numbers or lists, numpy scalars to numbers, paths to strings,
    recursively); a value that cannot be converted fails the cell with an error naming the note.
    """

    cell: Cell
    """The cell being run: its model, technique label, steps, device, repeat and seed."""
    suite: "Suite"
    """The loaded suite; ``suite.spec`` holds its sections (``spec.train``, ``spec.measure``, ``spec.models``, ...)."""
    data: Data
    """Both splits of the suite's data set, already on the cell's device."""
    device: Probe
    """The probe of the cell's device (``device.DEVICE`` is its torch device type)."""
    torch_device: "torch.device"
    """The torch device the cell runs on."""
    trainer: "Trainer"
    """The shared training loop with the suite's budget; train with ``trainer.fit`` instead of writing a loop."""
    build_model: Callable[[str], "nn.Module"]
    """``build_model(name)``: a freshly initialised, untrained model of the suite, seeded like the cell, on the device."""
    trained_model: Callable[[str], "nn.Module"]
    """``trained_model(name)``: that model trained with the suite's budget (the same cached artifact as its baseline cell), in eval mode."""
    notes: dict[str, Any] = field(default_factory=dict)
    """Values copied into the cell's record (``record["notes"]``) and the report frame; name them after your plugin."""
    workdir: Path | None = None
    """A directory of the run for the cell's own files (launch specs, logs), or None outside a run."""
    plugin_options: Any = None
    """The :class:`~benchharness.host.PluginOptions` the cell's worker loaded plugins with, for processes a technique starts."""
    model_trained: bool = True
    """Whether the model handed to ``apply`` is trained already: False only for a pipeline's first step when that technique ``TRAINS``."""

    def evaluate(self, model: "nn.Module") -> float:
        """Top-1 accuracy of ``model`` on the test split, in the suite's evaluation batch size (raises ``Diverged`` on NaN outputs)."""
        from benchharness.train import evaluate_accuracy

        return evaluate_accuracy(model, self.data, self.suite.spec.measure.eval_batch_size, self.torch_device)

    def calibration_batches(self, count: int, batch_size: int | None = None) -> list["torch.Tensor"]:
        """The first ``count`` training batches (inputs only), e.g. to calibrate quantization."""
        size = batch_size or self.trainer.budget.batch_size
        inputs = self.data.x_train
        return [inputs[start : start + size] for start in range(0, min(count * size, inputs.shape[0]), size)]
