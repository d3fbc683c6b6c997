"""The shared training loop: it learns digits, is reproducible, detects divergence, and accounts its work."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from benchharness.api import Data
from benchharness.errors import Diverged
from benchharness.suite import TrainBudget
from benchharness.train import Trainer, decode_correct_bits, encode_correct_bits, evaluate_accuracy, evaluate_correct

CPU = torch.device("cpu")
BUDGET = TrainBudget(epochs=8, batch_size=64, optimizer="adam", lr=0.005, weight_decay=0.0)


@pytest.fixture(scope="module")
def digits(host) -> Data:
    """The digits data set."""
    dataset = host.datasets["digits"]
    return dataset.load(dataset.Config())


@pytest.fixture(autouse=True)
def one_thread():
    """Run torch on one thread, restoring the previous count afterwards.

    One thread makes kernels bitwise reproducible, and keeps these small models fast when other
    processes share the CPU (two spinning OpenMP threads on a busy 2-core machine can be 50x slower).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def subset(data: Data, count: int) -> Data:
    """The first ``count`` training samples of ``data`` (test split unchanged)."""
    return Data(data.name, data.x_train[:count], data.y_train[:count], data.x_test, data.y_test, data.num_classes)


def build(host, family: str, data: Data, seed: int = 0) -> nn.Module:
    """A freshly initialised model of ``family`` for ``data``, its weights seeded."""
    torch.manual_seed(seed)
    return host.models[family].build(data.num_classes, data.input_shape)


def test_small_cnn_learns_digits(host, digits):
    """8 epochs of Adam reach >= 90% top-1 on the digits test split within seconds."""
    trainer = Trainer(BUDGET, CPU, seed=0)
    model = build(host, "small_cnn", digits)
    trained = trainer.fit(model, digits)
    assert trained is model
    assert not model.training
    assert evaluate_accuracy(model, digits, 512, CPU) >= 0.9
    assert 0 < trainer.train_seconds < 60
    assert trainer.samples_seen == 8 * 1437


def test_training_is_reproducible(host, digits):
    """The same seeds give bitwise-identical weights and accuracy; another trainer seed changes the weights."""
    budget = BUDGET.model_copy(update={"epochs": 2})
    data = subset(digits, 512)

    def train(trainer_seed: int) -> nn.Module:
        model = build(host, "small_cnn", data, seed=0)
        return Trainer(budget, CPU, seed=trainer_seed).fit(model, data)

    first, second, reshuffled = train(0), train(0), train(1)
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[name]), name
    assert evaluate_accuracy(first, data, 512, CPU) == evaluate_accuracy(second, data, 512, CPU)
    assert not all(torch.equal(tensor, reshuffled.state_dict()[name]) for name, tensor in first.state_dict().items())


def test_nan_loss_raises_diverged(host, digits):
    """A loss that becomes NaN stops training with Diverged, in the first epoch."""
    data = subset(digits, 128)
    model = build(host, "mlp", data)

    def nan_loss(logits, inputs, targets):
        return logits.sum() * float("nan")

    with pytest.raises(Diverged, match="epoch 1 of 3"):
        Trainer(BUDGET.model_copy(update={"epochs": 3}), CPU).fit(model, data, loss_fn=nan_loss)


def test_huge_learning_rate_raises_diverged(host, digits):
    """SGD at the largest learning rate a suite allows blows an MLP up: Diverged, not garbage weights."""
    budget = TrainBudget(epochs=2, batch_size=64, optimizer="sgd", lr=100.0, schedule="constant")
    data = subset(digits, 512)
    with pytest.raises(Diverged, match="lower the learning rate"):
        Trainer(budget, CPU).fit(build(host, "mlp", data), data)


def indexed_data(count: int, classes: int = 3) -> Data:
    """Samples whose every value is their index, labelled index % classes: batches reveal which samples they hold."""
    index = torch.arange(count, dtype=torch.float32)
    inputs = index.view(count, 1, 1, 1).expand(count, 1, 2, 2).clone()
    labels = torch.arange(count) % classes
    return Data("indexed", inputs, labels, inputs[:4], labels[:4], classes)


def test_custom_loss_receives_logits_inputs_targets():
    """loss_fn gets (logits, inputs, targets) of matching batches; each epoch visits every sample once."""
    data = indexed_data(150)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    batches: list[tuple[torch.Size, torch.Tensor, torch.Tensor]] = []

    def loss_fn(logits, inputs, targets):
        indices = inputs[:, 0, 0, 0].long()
        batches.append((logits.shape, indices, targets))
        return nn.functional.cross_entropy(logits, targets)

    budget = TrainBudget(epochs=2, batch_size=64, optimizer="sgd", lr=0.01)
    Trainer(budget, CPU).fit(model, data, loss_fn=loss_fn)
    assert [shape for shape, _, _ in batches] == [(64, 3), (64, 3), (22, 3)] * 2
    for _, indices, targets in batches:
        assert torch.equal(targets, indices % 3)
    for epoch in range(2):
        seen = torch.cat([indices for _, indices, _ in batches[3 * epoch : 3 * epoch + 3]])
        assert sorted(seen.tolist()) == list(range(150))
    assert not torch.equal(batches[0][1], torch.arange(64))  # shuffled


def test_work_accumulates_over_fits():
    """train_seconds and samples_seen add up over several fits; ``epochs`` overrides the budget; synchronize runs."""
    data = indexed_data(100)
    synchronized: list[int] = []
    trainer = Trainer(TrainBudget(epochs=2, batch_size=32), CPU, synchronize=lambda: synchronized.append(1))
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    trainer.fit(model, data)
    first_seconds = trainer.train_seconds
    assert trainer.samples_seen == 200
    assert first_seconds > 0
    trainer.fit(model, data, epochs=3)
    assert trainer.samples_seen == 200 + 300
    assert trainer.train_seconds > first_seconds
    assert len(synchronized) == 2


def test_evaluate_accuracy_counts_every_batch():
    """Accuracy covers every test sample, including a final partial batch."""

    class AlwaysZero(nn.Module):
        """Predicts class 0 for everything."""

        def forward(self, x):
            logits = torch.zeros(x.shape[0], 3)
            logits[:, 0] = 1.0
            return logits

    labels = torch.tensor([0, 1, 0, 2, 0, 0, 1])
    data = Data("fixed", torch.zeros(7, 1), labels, torch.zeros(7, 1), labels, 3)
    assert evaluate_accuracy(AlwaysZero(), data, 3, CPU) == pytest.approx(4 / 7)


@pytest.mark.parametrize("count", [0, 1, 7, 8, 9, 360, 1000])
def test_correct_bits_round_trip(count):
    """Any number of correctness values, a multiple of 8 or not, survives encoding as compact ASCII text."""
    correct = np.random.default_rng(count).random(count) < 0.7
    text = encode_correct_bits(correct)
    packed_bytes = -(-count // 8)
    assert isinstance(text, str) and text.isascii()
    assert len(text) == 4 * -(-packed_bytes // 3)  # one bit per image, in base64
    decoded = decode_correct_bits(text, count)
    assert decoded.dtype == np.bool_
    assert np.array_equal(decoded, correct)


def test_correct_bits_refuse_the_wrong_count():
    """Decoding with a count the text cannot hold raises instead of padding or truncating."""
    text = encode_correct_bits(np.ones(9, dtype=bool))
    with pytest.raises(ValueError):
        decode_correct_bits(text, 17)
    with pytest.raises(ValueError):
        decode_correct_bits(text, 8)
    with pytest.raises(ValueError):
        decode_correct_bits("not base64!", 9)


def test_correct_bits_of_a_trained_model_match_its_accuracy(host, digits):
    """Per-image correctness is in test-set order, and its mean is the accuracy evaluate_accuracy reports."""
    data = subset(digits, 512)
    model = Trainer(BUDGET.model_copy(update={"epochs": 2}), CPU).fit(build(host, "mlp", data), data)
    correct = evaluate_correct(model, data, 100, CPU)
    assert correct.dtype == torch.bool and correct.shape == (data.x_test.shape[0],)
    with torch.inference_mode():
        expected = model(data.x_test).argmax(dim=1) == data.y_test
    assert torch.equal(correct, expected)
    accuracy = evaluate_accuracy(model, data, 512, CPU)
    assert 0.5 < accuracy < 1.0
    decoded = decode_correct_bits(encode_correct_bits(correct), data.x_test.shape[0])
    assert decoded.mean() == pytest.approx(accuracy, abs=1e-12)
    assert np.array_equal(decoded, correct.numpy())


def test_evaluate_correct_raises_on_nonfinite_outputs():
    """A NaN in any output fails the evaluation, as for the accuracy."""

    class NanOnSecondSample(nn.Module):
        """Finite logits except for the second sample's."""

        def forward(self, x):
            logits = torch.zeros(x.shape[0], 2)
            logits[x[:, 0] == 1] = float("nan")
            return logits

    data = Data("nan", torch.zeros(3, 1), torch.zeros(3, dtype=torch.long), torch.tensor([[0.0], [1.0], [0.0]]), torch.zeros(3, dtype=torch.long), 2)
    with pytest.raises(Diverged, match="non-finite outputs"):
        evaluate_correct(NanOnSecondSample(), data, 2, CPU)
    with pytest.raises(Diverged, match="non-finite outputs"):
        evaluate_accuracy(NanOnSecondSample(), data, 2, CPU)
