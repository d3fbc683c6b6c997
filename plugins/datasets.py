"""Built-in data sets: scikit-learn's bundled digits, CIFAR-10 from disk, and synthetic tensors."""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator

from benchharness import Data, Dataset, StrictConfig, hookimpl

PRELOAD = ("sklearn.datasets", "sklearn.model_selection")
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_FILE = "test_batch"
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
MAX_SAMPLE_ELEMENTS = 1 << 24


def _standardise(x_train, x_test):
    """Scale both splits by the train split's per-channel mean and std."""
    dims = [0] + list(range(2, x_train.dim()))
    mean = x_train.mean(dim=dims, keepdim=True)
    std = x_train.std(dim=dims, keepdim=True).clamp_min(1e-6)
    return (x_train - mean) / std, (x_test - mean) / std


class DigitsConfig(StrictConfig):
    """Parameters of the digits data set."""

    test_fraction: float = Field(0.2, gt=0, lt=1, description="Share of the 1,797 images held out for testing (stratified, fixed seed).")


class Digits(Dataset):
    """scikit-learn's bundled 8x8 handwritten digits: real data, no network, fixed split."""

    NAME = "digits"
    DESCRIPTION = "1,797 8x8 grayscale handwritten digits bundled with scikit-learn; 10 classes"
    Config = DigitsConfig

    def load(self, config):
        import torch
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        bunch = load_digits()
        x_train, x_test, y_train, y_test = train_test_split(
            bunch.images, bunch.target, test_size=config.test_fraction, random_state=0, stratify=bunch.target
        )
        x_train = torch.tensor(x_train, dtype=torch.float32).unsqueeze(1) / 16.0
        x_test = torch.tensor(x_test, dtype=torch.float32).unsqueeze(1) / 16.0
        x_train, x_test = _standardise(x_train, x_test)
        return Data("digits", x_train, torch.tensor(y_train), x_test, torch.tensor(y_test), 10)


class Cifar10Config(StrictConfig):
    """Parameters of the CIFAR-10 data set."""

    dir: str = Field("data", description=f"Directory holding {CIFAR_FOLDER}/ (relative paths are taken from the working directory).")
    download: bool = Field(False, description="Download through torchvision when the files are absent (needs internet).")
    train_samples: int | None = Field(None, ge=1, le=50_000, description="Use only the first N training images (for CPU-sized runs).")
    test_samples: int | None = Field(None, ge=1, le=10_000, description="Use only the first N test images.")


def cifar_folder(config: Cifar10Config) -> Path:
    """The ``cifar-10-batches-py`` folder named by ``config`` (``dir`` may also be that folder itself)."""
    root = Path(config.dir).expanduser()
    return root if root.name == CIFAR_FOLDER else root / CIFAR_FOLDER


def read_cifar_batch(path: Path):
    """Read one CIFAR-10 python batch: (uint8 images N x 3 x 32 x 32, labels)."""
    import numpy as np

    with open(path, "rb") as file:
        batch = pickle.load(file, encoding="bytes")
    images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return images, np.asarray(batch[b"labels"], dtype=np.int64)


class Cifar10(Dataset):
    """CIFAR-10 from the standard python batches under a data directory."""

    NAME = "cifar10"
    DESCRIPTION = f"CIFAR-10 (32x32 RGB, 10 classes) read from <dir>/{CIFAR_FOLDER}/"
    Config = Cifar10Config

    def problem(self, config):
        folder = cifar_folder(config)
        missing = [name for name in CIFAR_TRAIN_FILES + (CIFAR_TEST_FILE,) if not (folder / name).is_file()]
        if missing and not config.download:
            return (
                f"CIFAR-10 not found: {folder} lacks {', '.join(missing)}; unpack cifar-10-python.tar.gz "
                f"so that {folder}/data_batch_1 exists, set 'dir' to where it is, or set 'download = true' on a machine with internet"
            )
        return None

    def load(self, config):
        import numpy as np
        import torch

        folder = cifar_folder(config)
        if config.download and not (folder / CIFAR_TEST_FILE).is_file():
            from torchvision.datasets import CIFAR10

            CIFAR10(str(folder.parent), train=True, download=True)
        problem = self.problem(config)
        if problem:
            raise FileNotFoundError(problem)
        train = [read_cifar_batch(folder / name) for name in CIFAR_TRAIN_FILES]
        x_train = np.concatenate([images for images, _ in train])[: config.train_samples]
        y_train = np.concatenate([labels for _, labels in train])[: config.train_samples]
        x_test, y_test = read_cifar_batch(folder / CIFAR_TEST_FILE)
        x_test, y_test = x_test[: config.test_samples], y_test[: config.test_samples]
        mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)

        def normalise(images):
            return (torch.from_numpy(images).float() / 255.0 - mean) / std

        return Data("cifar10", normalise(x_train), torch.from_numpy(y_train), normalise(x_test), torch.from_numpy(y_test), 10)


class SyntheticConfig(StrictConfig):
    """Parameters of the synthetic data set."""

    shape: list[Annotated[int, Field(ge=1)]] = Field(
        [3, 32, 32], min_length=1, max_length=4, description=f"Shape of one sample, e.g. [3, 32, 32]; at most {MAX_SAMPLE_ELEMENTS:,} elements."
    )
    classes: int = Field(10, ge=2, le=100_000, description="Number of classes.")
    train_samples: int = Field(1024, ge=1, le=10_000_000, description="Training samples.")
    test_samples: int = Field(256, ge=1, le=10_000_000, description="Test samples.")
    seed: int = Field(0, ge=0, le=2**64 - 1, description="Seed of the generator (at most 2**64 - 1, torch's limit).")

    @field_validator("shape")
    @classmethod
    def _sample_size(cls, shape: list[int]) -> list[int]:
        elements = math.prod(shape)
        if elements > MAX_SAMPLE_ELEMENTS:
            raise ValueError(f"a sample of at most {MAX_SAMPLE_ELEMENTS:,} elements (this shape has {elements:,})")
        return shape


class Synthetic(Dataset):
    """Random tensors around one random prototype per class: learnable, for latency-focused suites."""

    NAME = "synthetic"
    DESCRIPTION = "random tensors of a given shape and class count (class prototypes plus noise)"
    Config = SyntheticConfig

    def load(self, config):
        import torch

        generator = torch.Generator().manual_seed(config.seed)
        prototypes = torch.randn(config.classes, *config.shape, generator=generator)

        def split(count):
            labels = torch.randint(config.classes, (count,), generator=generator)
            return prototypes[labels] + 2.0 * torch.randn(count, *config.shape, generator=generator), labels

        x_train, y_train = split(config.train_samples)
        x_test, y_test = split(config.test_samples)
        return Data("synthetic", x_train, y_train, x_test, y_test, config.classes)


@hookimpl
def register_datasets(register):
    """Register the built-in data sets."""
    for dataset in (Digits, Cifar10, Synthetic):
        register(dataset())
