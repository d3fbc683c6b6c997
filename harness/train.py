"""The one training loop that every technique reuses.

Data stay on the cell's device as tensors; batches are index slices of a
shuffled permutation, and the loss is checked for NaN/inf once per epoch (the
outputs once per evaluation), so the loop never waits on the host between steps.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import torch
from torch import nn

from benchharness.api import Data
from benchharness.correctness import decode_correct_bits, encode_correct_bits  # noqa: F401  (re-exported)
from benchharness.errors import Diverged
from benchharness.suite import TrainBudget

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def make_optimizer(model: nn.Module, budget: TrainBudget) -> torch.optim.Optimizer:
    """The optimizer the budget names, over the model's trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if budget.optimizer == "sgd":
        return torch.optim.SGD(params, lr=budget.lr, momentum=budget.momentum, nesterov=budget.momentum > 0, weight_decay=budget.weight_decay)
    if budget.optimizer == "adam":
        return torch.optim.Adam(params, lr=budget.lr, weight_decay=budget.weight_decay)
    return torch.optim.AdamW(params, lr=budget.lr, weight_decay=budget.weight_decay)


def make_schedule(optimizer: torch.optim.Optimizer, budget: TrainBudget, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning-rate schedule the budget names, stepped once per batch."""
    total_steps = max(total_steps, 1)
    if budget.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=budget.lr, total_steps=total_steps)
    if budget.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


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
        self._autocast_dtype: torch.dtype | None = None
        self._train_seconds = 0.0
        self._samples_seen = 0

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
        over the sample indices) chooses each epoch's samples. Under ``autocast_dtype`` the forward
        pass runs in torch.autocast, with a GradScaler for float16. Raises :class:`Diverged` on a NaN
        or infinite loss.
        """
        budget = self.budget
        epochs = budget.epochs if epochs is None else epochs
        batch_size = batch_size or budget.batch_size
        criterion = nn.CrossEntropyLoss(label_smoothing=budget.label_smoothing)
        loss_fn = loss_fn or (lambda logits, inputs, targets: criterion(logits, targets))
        inputs, targets = to_memory_format(data.x_train.to(self.device), budget.channels_last), data.y_train.to(self.device)
        count = len(sampler) if sampler is not None else inputs.shape[0]
        optimizer = make_optimizer(model, budget)
        schedule = make_schedule(optimizer, budget, epochs * -(-count // batch_size))
        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        autocast = self.autocast_dtype is not None
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.autocast_dtype == torch.float16)
        model.to(self.device).train()
        if budget.channels_last:
            model.to(memory_format=torch.channels_last)
        started = time.perf_counter()
        for epoch in range(epochs):
            order = self._epoch_order(inputs.shape[0], epoch, generator, sampler)
            loss_sum = torch.zeros((), device=self.device)
            for start in range(0, count, batch_size):
                index = order[start : start + batch_size]
                batch, labels = inputs[index], targets[index]
                with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=autocast):
                    loss = loss_fn(model(batch), batch, labels)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                schedule.step()
                loss_sum += loss.detach().float()
            if not torch.isfinite(loss_sum):
                raise Diverged(f"loss became {loss_sum.item()} in epoch {epoch + 1} of {epochs}; lower the learning rate")
        self.synchronize()
        self.add_training(time.perf_counter() - started, epochs * count)
        model.eval()
        return model


def to_memory_format(tensor: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``tensor`` in channels-last layout when asked and when it is a batch of images (4-D)."""
    return tensor.contiguous(memory_format=torch.channels_last) if channels_last and tensor.dim() == 4 else tensor


@torch.inference_mode()
def evaluate_correct(model: nn.Module, data: Data, batch_size: int, device: torch.device) -> torch.Tensor:
    """Whether ``model``'s top-1 prediction is right, for each test image in order (a bool tensor on the CPU).

    Raises :class:`Diverged` when an output is NaN or infinite.
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
    if not finite.item():
        raise Diverged("non-finite outputs (NaN or inf) on the test split: the model's results are meaningless")
    return torch.cat(correct).cpu() if correct else torch.zeros(0, dtype=torch.bool)


def evaluate_accuracy(model: nn.Module, data: Data, batch_size: int, device: torch.device) -> float:
    """Top-1 accuracy of ``model`` on the test split; raises :class:`Diverged` when an output is NaN or infinite."""
    correct = evaluate_correct(model, data, batch_size, device)
    return int(correct.sum()) / max(correct.numel(), 1)

