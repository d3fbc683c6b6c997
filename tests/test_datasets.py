"""The built-in data sets: digits, CIFAR-10 from (fake) files in the real format, and synthetic tensors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from benchharness.plugins.datasets import CIFAR_MEAN, CIFAR_STD

CIFAR_PER_BATCH = 4


@pytest.fixture(scope="module")
def digits(host):
    """The digits data set with the default config."""
    dataset = host.datasets["digits"]
    return dataset.load(dataset.Config())


def test_digits_shapes_and_split(digits):
    """1,797 8x8 images split 1,437/360 with test_fraction 0.2, 10 classes."""
    assert digits.name == "digits"
    assert digits.num_classes == 10
    assert digits.input_shape == (1, 8, 8)
    assert digits.x_train.shape == (1437, 1, 8, 8)
    assert digits.x_test.shape == (360, 1, 8, 8)
    assert digits.y_train.shape == (1437,)
    assert digits.y_test.shape == (360,)
    assert digits.x_train.dtype == torch.float32
    assert set(digits.y_train.tolist()) == set(range(10))
    assert set(digits.y_test.tolist()) == set(range(10))


def test_digits_train_split_is_standardised(digits):
    """The train split has mean ~0 and std ~1; the test split is scaled the same way (close, not exact)."""
    assert abs(digits.x_train.mean().item()) < 1e-4
    assert digits.x_train.std().item() == pytest.approx(1.0, abs=1e-3)
    assert abs(digits.x_test.mean().item()) < 0.2


def test_digits_split_is_fixed(host, digits):
    """Loading twice gives exactly the same split."""
    dataset = host.datasets["digits"]
    again = dataset.load(dataset.Config())
    assert torch.equal(digits.x_train, again.x_train)
    assert torch.equal(digits.y_train, again.y_train)
    assert torch.equal(digits.x_test, again.x_test)
    assert torch.equal(digits.y_test, again.y_test)


def test_digits_test_fraction(host):
    """test_fraction sets the size of the held-out split."""
    dataset = host.datasets["digits"]
    data = dataset.load(dataset.Config(test_fraction=0.5))
    assert data.x_train.shape[0] + data.x_test.shape[0] == 1797
    assert data.x_test.shape[0] in (898, 899)


def fake_image_data(batch_index: int, count: int = CIFAR_PER_BATCH) -> np.ndarray:
    """Deterministic uint8 rows of 3,072 values (R, G, B planes of 32x32), different for every batch."""
    values = np.arange(count * 3072, dtype=np.int64) * 7 + batch_index * 31
    return (values % 256).astype(np.uint8).reshape(count, 3072)


def fake_labels(batch_index: int, count: int = CIFAR_PER_BATCH) -> list[int]:
    """Labels that differ per batch, as a plain list like the real files."""
    return [(batch_index * count + i) % 10 for i in range(count)]


def write_fake_cifar(root, count: int = CIFAR_PER_BATCH):
    """Write cifar-10-batches-py/ under ``root``: five train batches and a test batch of ``count`` images each."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for index, name in enumerate(names):
        with open(folder / name, "wb") as file:
            pickle.dump({b"data": fake_image_data(index, count), b"labels": fake_labels(index, count), b"batch_label": name.encode()}, file)
    return root


@pytest.fixture
def cifar_dir(tmp_path):
    """tmp_path holding cifar-10-batches-py/ with five train batches and a test batch of 4 images each."""
    return write_fake_cifar(tmp_path)


def cifar(host, **params):
    """The registered cifar10 data set and its validated config."""
    dataset = host.datasets["cifar10"]
    return dataset, dataset.Config(**params)


def expected_pixel(raw: int, channel: int) -> float:
    """A uint8 pixel normalised with the CIFAR-10 mean and std of its channel."""
    return (raw / 255.0 - CIFAR_MEAN[channel]) / CIFAR_STD[channel]


def test_cifar_loads_the_real_format(host, cifar_dir):
    """Five train batches are concatenated in order; shapes, dtypes and labels come through."""
    dataset, config = cifar(host, dir=str(cifar_dir))
    assert dataset.problem(config) is None
    data = dataset.load(config)
    assert data.name == "cifar10"
    assert data.num_classes == 10
    assert data.x_train.shape == (5 * CIFAR_PER_BATCH, 3, 32, 32)
    assert data.x_test.shape == (CIFAR_PER_BATCH, 3, 32, 32)
    assert data.x_train.dtype == torch.float32
    assert data.y_train.dtype == torch.int64
    assert data.y_train.tolist() == [label for index in range(5) for label in fake_labels(index)]
    assert data.y_test.tolist() == fake_labels(5)


def test_cifar_pixels_are_normalised_per_channel(host, cifar_dir):
    """Each stored byte lands at (image, channel, row, col) normalised with its channel's mean and std."""
    dataset, config = cifar(host, dir=str(cifar_dir))
    data = dataset.load(config)
    raw_train = np.concatenate([fake_image_data(index) for index in range(5)]).reshape(-1, 3, 32, 32)
    raw_test = fake_image_data(5).reshape(-1, 3, 32, 32)
    for image, channel, row, col in [(0, 0, 0, 0), (0, 1, 5, 7), (9, 2, 31, 31), (19, 1, 16, 3)]:
        raw = int(raw_train[image, channel, row, col])
        assert data.x_train[image, channel, row, col].item() == pytest.approx(expected_pixel(raw, channel), abs=1e-5)
    assert data.x_test[3, 2, 10, 20].item() == pytest.approx(expected_pixel(int(raw_test[3, 2, 10, 20]), 2), abs=1e-5)
    # The very first byte of the R plane: 0 * 7 + 0 * 31 = 0.
    assert data.x_train[0, 0, 0, 0].item() == pytest.approx(-CIFAR_MEAN[0] / CIFAR_STD[0], abs=1e-5)
    # All values together match a vectorised normalisation.
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(data.x_train, (torch.from_numpy(raw_train).float() / 255.0 - mean) / std)


def test_cifar_sample_limits_truncate(host, cifar_dir):
    """train_samples and test_samples keep the first N images of each split."""
    dataset, config = cifar(host, dir=str(cifar_dir), train_samples=6, test_samples=3)
    data = dataset.load(config)
    full = dataset.load(cifar(host, dir=str(cifar_dir))[1])
    assert data.x_train.shape == (6, 3, 32, 32)
    assert data.x_test.shape == (3, 3, 32, 32)
    assert torch.equal(data.x_train, full.x_train[:6])
    assert torch.equal(data.y_train, full.y_train[:6])
    assert torch.equal(data.x_test, full.x_test[:3])


def test_cifar_dir_may_name_the_batches_folder(host, cifar_dir):
    """dir pointing at cifar-10-batches-py itself works too."""
    dataset, config = cifar(host, dir=str(cifar_dir / "cifar-10-batches-py"))
    assert dataset.problem(config) is None
    assert dataset.load(config).x_train.shape == (5 * CIFAR_PER_BATCH, 3, 32, 32)


def test_cifar_missing_folder_is_explained(host, tmp_path):
    """A missing folder is a problem naming the folder and the download option; load raises it."""
    dataset, config = cifar(host, dir=str(tmp_path))
    problem = dataset.problem(config)
    assert problem is not None
    assert str(tmp_path / "cifar-10-batches-py") in problem
    assert "download = true" in problem
    with pytest.raises(FileNotFoundError) as raised:
        dataset.load(config)
    assert str(raised.value) == problem


def test_cifar_missing_file_is_named(host, cifar_dir):
    """When only the test batch is missing, the problem names just that file."""
    (cifar_dir / "cifar-10-batches-py" / "test_batch").unlink()
    dataset, config = cifar(host, dir=str(cifar_dir))
    problem = dataset.problem(config)
    assert "test_batch" in problem
    assert "data_batch_1" not in problem.split("lacks", 1)[1].split(";", 1)[0]


def test_cifar_config_rejects_unknown_keys(host):
    """A typo in the config is an error, not silently ignored."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        host.datasets["cifar10"].Config(directory="data")


def synthetic(host, **params):
    """Load the synthetic data set with ``params``."""
    dataset = host.datasets["synthetic"]
    return dataset.load(dataset.Config(**params))


def test_synthetic_shapes_and_classes(host):
    """Shapes, sample counts and class count are as configured."""
    data = synthetic(host, shape=[2, 5, 5], classes=4, train_samples=40, test_samples=12, seed=3)
    assert data.name == "synthetic"
    assert data.num_classes == 4
    assert data.input_shape == (2, 5, 5)
    assert data.x_train.shape == (40, 2, 5, 5)
    assert data.x_test.shape == (12, 2, 5, 5)
    assert data.y_train.shape == (40,)
    assert data.y_test.shape == (12,)
    labels = torch.cat([data.y_train, data.y_test])
    assert labels.min().item() >= 0
    assert labels.max().item() < 4


def test_synthetic_is_deterministic_for_a_seed(host):
    """The same seed gives identical tensors; another seed gives different ones."""
    params = dict(shape=[8], classes=3, train_samples=20, test_samples=5)
    first = synthetic(host, seed=1, **params)
    second = synthetic(host, seed=1, **params)
    other = synthetic(host, seed=2, **params)
    assert torch.equal(first.x_train, second.x_train)
    assert torch.equal(first.y_train, second.y_train)
    assert torch.equal(first.x_test, second.x_test)
    assert torch.equal(first.y_test, second.y_test)
    assert not torch.equal(first.x_train, other.x_train)
