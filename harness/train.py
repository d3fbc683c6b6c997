"""The one training loop that every technique reuses.

Data stay on the cell's device as tensors; batches are index slices of a
shuffled permutation, and the loss is checked for NaN/inf once per epoch (the
outputs once per evaluation), so the loop never waits on the host between steps.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import torch
from torch import nn

from benchharness.api import Data
from benchharness.correctness import decode_correct_bits, encode_correct_bits  # noqa: F401  (re-exported)
from benchharness.errors import Diverged
from benchharness.suite import TrainBudget

LEARNING_CURVE_BATCH = 512

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def make_optimizer(model: nn.Module, budget: TrainBudget) -> torch.optim.Optimizer:
    """The optimizer the budget names, over the model's trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    lr, decay = budget.lr, budget.weight_decay
    if budget.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=budget.momentum, nesterov=budget.momentum > 0, weight_decay=decay)
    if budget.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=decay)
    if budget.optimizer == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=decay)
    if budget.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=decay)


class LrSchedule:
    """The budget's learning-rate schedule: call :meth:`after_batch` after every optimizer step and :meth:`after_epoch` after every epoch.

    onecycle, cosine and linear change the rate every batch; step, exponential and plateau once
    per epoch (plateau: by ``lr_gamma`` when the epoch's mean training loss has not improved for
    ``plateau_patience`` epochs); constant never.
    """

    PER_BATCH = ("onecycle", "cosine", "linear")

    def __init__(self, optimizer: torch.optim.Optimizer, budget: TrainBudget, steps_per_epoch: int, epochs: int):
        self.budget = budget
        """The training budget whose ``schedule`` and parameters this follows."""
        total = max(steps_per_epoch * epochs, 1)
        name = budget.schedule
        gamma = budget.schedule_gamma()
        if name == "onecycle":
            self._scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=budget.lr, total_steps=total)
        elif name == "cosine":
            self._scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
        elif name == "linear":
            end = budget.lr_end_factor
            self._scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - (1.0 - end) * min(step, total) / total)
        elif name == "step":
            self._scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=budget.lr_step_epochs, gamma=gamma)
        elif name == "exponential":
            self._scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma)
        elif name == "plateau":
            self._scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=gamma, patience=budget.plateau_patience)
        else:
            self._scheduler = None

    def after_batch(self) -> None:
        """Advance a per-batch schedule."""
        if self._scheduler is not None and self.budget.schedule in self.PER_BATCH:
            self._scheduler.step()

    def after_epoch(self, mean_loss: float) -> None:
        """Advance a per-epoch schedule; plateau compares ``mean_loss`` (the epoch's mean training loss) with the best so far."""
        if self._scheduler is None or self.budget.schedule in self.PER_BATCH:
            return
        if self.budget.schedule == "plateau":
            self._scheduler.step(mean_loss)
        else:
            self._scheduler.step()


def make_schedule(optimizer: torch.optim.Optimizer, budget: TrainBudget, total_steps: int) -> LrSchedule:
    """The budget's schedule for ``total_steps`` batches in one epoch (prefer :class:`LrSchedule` with the real epoch count)."""
    return LrSchedule(optimizer, budget, max(total_steps, 1), 1)


AUGMENT_MIN_SIDE = 16
AUGMENT_PADDING = 4


def augmentation_problem(budget: TrainBudget, input_shape: tuple[int, ...]) -> str | None:
    """Why the budget's ``augment`` does nothing for inputs of ``input_shape``, or None when it applies (or is off)."""
    if not budget.augment:
        return None
    if len(input_shape) != 3 or min(input_shape[1:]) < AUGMENT_MIN_SIDE:
        return f"augment does nothing for inputs of shape {tuple(input_shape)}: random crop and flip apply to images of at least {AUGMENT_MIN_SIDE}x{AUGMENT_MIN_SIDE} pixels"
    return None


def crop_flip(batch: torch.Tensor, generator: torch.Generator, padding: int = AUGMENT_PADDING) -> torch.Tensor:
    """A random crop of every image after zero padding by ``padding`` pixels, and a horizontal flip of half of them (on the batch's device)."""
    count, _, height, width = batch.shape
    padded = torch.nn.functional.pad(batch, (padding, padding, padding, padding))
    shifts = torch.randint(0, 2 * padding + 1, (2, count), generator=generator).to(batch.device)
    rows = shifts[0][:, None] + torch.arange(height, device=batch.device)[None, :]
    cols = shifts[1][:, None] + torch.arange(width, device=batch.device)[None, :]
    samples = torch.arange(count, device=batch.device)[:, None, None]
    cropped = padded.permute(0, 2, 3, 1)[samples, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    flip = (torch.rand(count, generator=generator) < 0.5).to(batch.device)
    return torch.where(flip[:, None, None, None], cropped.flip(3), cropped)


class Trainer:
    """Trains models with the suite's budget on one device; techniques get it as ``context.trainer``.

    It counts the time and samples of all training in a cell (recorded as ``train_s`` and
    ``train_samples``); training done elsewhere (other processes) is added with :meth:`add_training`.
    """

    def __init__(self, budget: TrainBudget, device: torch.device, seed: int = 0, synchronize: Callable[[], None] = lambda: None):
        self.budget = budget
        """The suite's ``[train]`` section: epochs, batch size, optimizer, schedule, ..."""
        self.device = device
        """The torch device models are trained on."""
        self.seed = seed
        """The seed of each fit's shuffling: the cell's."""
        self.synchronize = synchronize
        """Waits for the device's queued work (the probe's ``synchronize``), so that times are whole."""
        self.label = "train"
        """The name of the training in learning curves: the step being applied (the worker sets it)."""
        self._autocast_dtype: torch.dtype | None = None
        self._train_seconds = 0.0
        self._samples_seen = 0
        self._curves: list[dict[str, Any]] = []

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The dtype forward passes run in under torch.autocast during :meth:`fit`, or None (full precision)."""
        return self._autocast_dtype

    @property
    def train_seconds(self) -> float:
        """Seconds spent training in this cell so far, all fits and :meth:`add_training` together."""
        return self._train_seconds

    @property
    def samples_seen(self) -> int:
        """Training samples processed in this cell so far (epochs times samples, summed)."""
        return self._samples_seen

    @property
    def curves(self) -> list[dict[str, Any]]:
        """One learning curve per fit of this cell, in order: ``{"label", "epochs": [{"epoch", "train_loss", "test_accuracy"}, ...]}``.

        ``test_accuracy`` is None when the budget's ``learning_curve`` is off. Stored in the record as ``curves``.
        """
        return [dict(curve, epochs=list(curve["epochs"])) for curve in self._curves]

    def add_curve(self, label: str, epochs: list[dict[str, Any]], notes: dict[str, Any] | None = None) -> None:
        """Add a learning curve of training done outside :meth:`fit` (e.g. in processes a technique started).

        ``epochs`` holds one ``{"epoch", "train_loss", "test_accuracy"}`` per epoch, from 1.
        """
        curve = {"label": label, "epochs": [dict(epoch) for epoch in epochs]}
        if notes:
            curve["notes"] = dict(notes)
        self._curves.append(curve)

    def set_autocast(self, dtype: torch.dtype | None) -> None:
        """Run later fits' forward passes under torch.autocast in ``dtype`` (with a GradScaler for float16); None turns it off."""
        self._autocast_dtype = dtype

    def add_training(self, seconds: float, samples: int) -> None:
        """Count training done outside :meth:`fit` (e.g. in processes a technique started) in the cell's totals."""
        self._train_seconds += float(seconds)
        self._samples_seen += int(samples)

    def _epoch_order(self, count: int, epoch: int, generator: torch.Generator, sampler: Any) -> torch.Tensor:
        if sampler is None:
            return torch.randperm(count, generator=generator).to(self.device)
        sampler.set_epoch(epoch)
        return torch.tensor(list(sampler), dtype=torch.long, device=self.device)

    def fit(
        self,
        model: nn.Module,
        data: Data,
        loss_fn: LossFn | None = None,
        epochs: int | None = None,
        sampler: Any = None,
        batch_size: int | None = None,
    ) -> nn.Module:
        """Train ``model`` in place on ``data``'s train split and return it, in eval mode.

        ``loss_fn(logits, inputs, targets)`` replaces the cross-entropy loss (e.g. for distillation);
        ``epochs`` and ``batch_size`` override the budget's; ``sampler`` (e.g. a DistributedSampler
        over the sample indices) chooses each epoch's samples. The budget's optimizer, learning-rate
        schedule, label smoothing and augmentation apply. Under ``autocast_dtype`` the forward
        pass runs in torch.autocast, with a GradScaler for float16. Each epoch's mean training loss
        (and, with ``learning_curve``, the test accuracy) is added to :attr:`curves`. Raises
        :class:`Diverged` on a NaN or infinite loss.
        """
        budget = self.budget
        epochs = budget.epochs if epochs is None else epochs
        batch_size = batch_size or budget.batch_size
        criterion = nn.CrossEntropyLoss(label_smoothing=budget.label_smoothing)
        loss_fn = loss_fn or (lambda logits, inputs, targets: criterion(logits, targets))
        inputs, targets = to_memory_format(data.x_train.to(self.device), budget.channels_last), data.y_train.to(self.device)
        count = len(sampler) if sampler is not None else inputs.shape[0]
        steps_per_epoch = -(-count // batch_size)
        optimizer = make_optimizer(model, budget)
        schedule = LrSchedule(optimizer, budget, steps_per_epoch, epochs)
        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        augment = budget.augment and augmentation_problem(budget, tuple(inputs.shape[1:])) is None
        autocast = self.autocast_dtype is not None
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.autocast_dtype == torch.float16)
        model.to(self.device).train()
        if budget.channels_last:
            model.to(memory_format=torch.channels_last)
        curve: list[dict[str, Any]] = []
        notes = {"augment": "skipped: " + augmentation_problem(budget, tuple(inputs.shape[1:]))} if budget.augment and not augment else None
        self.add_curve(self.label, [], notes)
        started = time.perf_counter()
        for epoch in range(epochs):
            order = self._epoch_order(inputs.shape[0], epoch, generator, sampler)
            loss_sum = torch.zeros((), device=self.device)
            for start in range(0, count, batch_size):
                index = order[start : start + batch_size]
                batch, labels = inputs[index], targets[index]
                if augment:
                    batch = to_memory_format(crop_flip(batch, generator), budget.channels_last)
                with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=autocast):
                    loss = loss_fn(model(batch), batch, labels)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                schedule.after_batch()
                loss_sum += loss.detach().float()
            mean_loss = loss_sum.item() / max(steps_per_epoch, 1)
            if not math.isfinite(mean_loss):
                raise Diverged(f"loss became {mean_loss} in epoch {epoch + 1} of {epochs} ({budget.optimizer}, lr {budget.lr}); lower the learning rate")
            schedule.after_epoch(mean_loss)
            curve.append(self._epoch_point(model, data, epoch + 1, mean_loss))
            self._curves[-1]["epochs"] = list(curve)
        self.synchronize()
        self.add_training(time.perf_counter() - started, epochs * count)
        model.eval()
        return model

    def _epoch_point(self, model: nn.Module, data: Data, epoch: int, mean_loss: float) -> dict[str, Any]:
        """One point of the learning curve; the test accuracy is measured in eval mode, outside the training time's intent but inside its clock."""
        accuracy = None
        if self.budget.learning_curve:
            was_training = model.training
            correct = evaluate_correct(model, data, LEARNING_CURVE_BATCH, self.device, check_finite=False)
            accuracy = int(correct.sum()) / max(correct.numel(), 1)
            model.train(was_training)
        return {"epoch": epoch, "train_loss": mean_loss, "test_accuracy": accuracy}


def to_memory_format(tensor: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``tensor`` in channels-last layout when asked and when it is a batch of images (4-D)."""
    return tensor.contiguous(memory_format=torch.channels_last) if channels_last and tensor.dim() == 4 else tensor


@torch.inference_mode()
def evaluate_correct(model: nn.Module, data: Data, batch_size: int, device: torch.device, check_finite: bool = True) -> torch.Tensor:
    """Whether ``model``'s top-1 prediction is right, for each test image in order (a bool tensor on the CPU).

    Raises :class:`Diverged` when an output is NaN or infinite (unless ``check_finite`` is false).
    """
    model.eval()
    correct = []
    finite = torch.ones((), dtype=torch.bool, device=device)
    for start in range(0, data.x_test.shape[0], batch_size):
        batch = data.x_test[start : start + batch_size].to(device)
        labels = data.y_test[start : start + batch_size].to(device)
        outputs = model(batch)
        finite &= torch.isfinite(outputs).all()
        correct.append(outputs.argmax(dim=1) == labels)
    if check_finite and not finite.item():
        raise Diverged("non-finite outputs (NaN or inf) on the test split: the model's results are meaningless")
    return torch.cat(correct).cpu() if correct else torch.zeros(0, dtype=torch.bool)


def evaluate_accuracy(model: nn.Module, data: Data, batch_size: int, device: torch.device) -> float:
    """Top-1 accuracy of ``model`` on the test split; raises :class:`Diverged` when an output is NaN or infinite."""
    correct = evaluate_correct(model, data, batch_size, device)
    return int(correct.sum()) / max(correct.numel(), 1)

