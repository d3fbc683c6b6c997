"""The one training loop that every technique reuses.

Data stay on the cell's device as tensors; batches are index slices of a
shuffled permutation, and the loss is checked for NaN/inf once per epoch, so
the loop never waits on the host between steps.
"""

from __future__ import annotations

import time
from typing import Callable

import torch
from torch import nn

from benchharness.api import Data
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
    """Trains models with the suite's budget on one device; techniques get it from their context."""

    def __init__(self, budget: TrainBudget, device: torch.device, seed: int = 0, synchronize: Callable[[], None] = lambda: None):
        self.budget = budget
        self.device = device
        self.seed = seed
        self.synchronize = synchronize
        self.train_seconds = 0.0
        self.samples_seen = 0

    def fit(self, model: nn.Module, data: Data, loss_fn: LossFn | None = None, epochs: int | None = None) -> nn.Module:
        """Train ``model`` in place on ``data``'s train split and return it.

        ``loss_fn(logits, inputs, targets)`` replaces the cross-entropy loss (e.g. for distillation);
        ``epochs`` overrides the budget's. Raises :class:`Diverged` on a NaN or infinite loss.
        """
        budget = self.budget
        epochs = budget.epochs if epochs is None else epochs
        criterion = nn.CrossEntropyLoss(label_smoothing=budget.label_smoothing)
        loss_fn = loss_fn or (lambda logits, inputs, targets: criterion(logits, targets))
        inputs, targets = data.x_train.to(self.device), data.y_train.to(self.device)
        count = inputs.shape[0]
        steps_per_epoch = -(-count // budget.batch_size)
        optimizer = make_optimizer(model, budget)
        schedule = make_schedule(optimizer, budget, epochs * steps_per_epoch)
        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        model.to(self.device).train()
        started = time.perf_counter()
        for epoch in range(epochs):
            order = torch.randperm(count, generator=generator).to(self.device)
            loss_sum = torch.zeros((), device=self.device)
            for start in range(0, count, budget.batch_size):
                index = order[start : start + budget.batch_size]
                batch, labels = inputs[index], targets[index]
                loss = loss_fn(model(batch), batch, labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                loss_sum += loss.detach()
            if not torch.isfinite(loss_sum):
                raise Diverged(f"loss became {loss_sum.item()} in epoch {epoch + 1} of {epochs}; lower the learning rate")
        self.synchronize()
        self.train_seconds += time.perf_counter() - started
        self.samples_seen += epochs * count
        model.eval()
        return model


@torch.inference_mode()
def evaluate_accuracy(model: nn.Module, data: Data, batch_size: int, device: torch.device) -> float:
    """Top-1 accuracy of ``model`` on the test split."""
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    for start in range(0, data.x_test.shape[0], batch_size):
        batch = data.x_test[start : start + batch_size].to(device)
        labels = data.y_test[start : start + batch_size].to(device)
        correct += (model(batch).argmax(dim=1) == labels).sum()
    return correct.item() / max(data.x_test.shape[0], 1)
