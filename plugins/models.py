"""Built-in models: a small CNN, an MLP, CIFAR-style ResNet-18 and MobileNetV2, and any torchvision classifier."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from benchharness import ModelFamily, StrictConfig, hookimpl


def _torch_nn():
    from torch import nn

    return nn


class RegularisationOptions(StrictConfig):
    """Options of the built-in small models: the survey's batch-normalisation and dropout comparisons."""

    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout probability before the classifier (0: no dropout layer).")
    batchnorm: bool = Field(True, description="Batch normalisation after every convolution (small_cnn) or hidden layer (mlp).")


class MlpOptions(RegularisationOptions):
    """Options of the MLP: batch normalisation is off unless asked for."""

    batchnorm: bool = Field(False, description="Batch normalisation after every hidden layer.")


class SmallCNN(ModelFamily):
    """Three conv blocks and a linear head; works for 8x8 and 32x32 inputs alike."""

    NAME = "small_cnn"
    DESCRIPTION = "3-block CNN (32-64-128 channels) for 8x8 or 32x32 inputs; options dropout, batchnorm"
    Config = RegularisationOptions

    def build(self, num_classes, input_shape, variant=None, config=None):
        nn = _torch_nn()
        options = config or RegularisationOptions()
        channels = input_shape[0]

        def block(c_in, c_out):
            if options.batchnorm:
                return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True)]

        head = [nn.Dropout(options.dropout)] if options.dropout > 0 else []
        return nn.Sequential(
            *block(channels, 32),
            *block(32, 64),
            nn.MaxPool2d(2),
            *block(64, 128),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            *head,
            nn.Linear(128, num_classes),
        )


class MLP(ModelFamily):
    """A two-hidden-layer perceptron on flattened inputs."""

    NAME = "mlp"
    DESCRIPTION = "flatten -> 256 -> 128 -> classes, ReLU; options dropout, batchnorm (off by default)"
    Config = MlpOptions

    def build(self, num_classes, input_shape, variant=None, config=None):
        nn = _torch_nn()
        options = config or MlpOptions()
        features = 1
        for size in input_shape:
            features *= size

        def hidden(size_in, size_out):
            norm = [nn.BatchNorm1d(size_out)] if options.batchnorm else []
            dropout = [nn.Dropout(options.dropout)] if options.dropout > 0 else []
            return [nn.Linear(size_in, size_out), *norm, nn.ReLU(inplace=True), *dropout]

        return nn.Sequential(nn.Flatten(), *hidden(features, 256), *hidden(256, 128), nn.Linear(128, num_classes))


class ResNet18Cifar(ModelFamily):
    """torchvision's ResNet-18 with a 3x3 stride-1 stem and no max-pool, as usual for 32x32 inputs."""

    NAME = "resnet18_cifar"
    DESCRIPTION = "torchvision ResNet-18 adapted to 32x32 inputs (3x3 stem, no max-pool)"

    def build(self, num_classes, input_shape, variant=None):
        nn = _torch_nn()
        from torchvision.models import resnet18

        model = resnet18(weights=None, num_classes=num_classes)
        model.conv1 = nn.Conv2d(input_shape[0], 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
        return model


class MobileNetV2Cifar(ModelFamily):
    """torchvision's MobileNetV2 with a stride-1 stem and second stage, as usual for 32x32 inputs."""

    NAME = "mobilenetv2_cifar"
    DESCRIPTION = "torchvision MobileNetV2 adapted to 32x32 inputs (stride-1 stem and first downsampling block)"

    def build(self, num_classes, input_shape, variant=None):
        nn = _torch_nn()
        from torchvision.models import mobilenet_v2

        model = mobilenet_v2(weights=None, num_classes=num_classes)
        model.features[0][0] = nn.Conv2d(input_shape[0], 32, kernel_size=3, stride=1, padding=1, bias=False)
        model.features[2].conv[1][0].stride = (1, 1)
        return model


@lru_cache(maxsize=1)
def _torchvision_classifiers() -> tuple[str, ...]:
    import torchvision

    return tuple(torchvision.models.list_models(module=torchvision.models))


class TorchvisionClassifier(ModelFamily):
    """Any torchvision classification model by name, with random weights (nothing is downloaded)."""

    NAME = "torchvision"
    DESCRIPTION = "torchvision:<name>, e.g. torchvision:resnet50 (random weights; inputs with other than 3 channels are repeated to 3)"

    def variants(self):
        return list(_torchvision_classifiers())

    def build(self, num_classes, input_shape, variant=None):
        import torchvision

        model = torchvision.models.get_model(variant, weights=None, num_classes=num_classes)
        if input_shape[0] != 3:
            nn = _torch_nn()
            return nn.Sequential(_channel_repeat_class()(3), model)
        return model


@lru_cache(maxsize=1)
def _channel_repeat_class():
    nn = _torch_nn()

    class ChannelRepeat(nn.Module):
        """Repeats (or truncates) the channel dimension to ``channels``, so 1-channel data feeds RGB models."""

        def __init__(self, channels: int):
            super().__init__()
            self.channels = channels

        def forward(self, x):
            repeats = -(-self.channels // x.shape[1])
            return x.repeat(1, repeats, 1, 1)[:, : self.channels]

    ChannelRepeat.__module__, ChannelRepeat.__qualname__ = __name__, "ChannelRepeat"
    return ChannelRepeat


def __getattr__(name: str):
    """``ChannelRepeat`` is built on first use, so importing this plugin does not import torch (pickle finds it here)."""
    if name == "ChannelRepeat":
        return _channel_repeat_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@hookimpl
def register_models(register):
    """Register the built-in model families."""
    for family in (SmallCNN, MLP, ResNet18Cifar, MobileNetV2Cifar, TorchvisionClassifier):
        register(family())
