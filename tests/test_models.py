"""The built-in model families: they build, run a forward pass, and have the CIFAR-style stems they claim."""

from __future__ import annotations

import pytest
import torch
from torch import nn

BATCH = 2
NUM_CLASSES = 7
SHAPES = [(1, 8, 8), (3, 32, 32)]
FAMILIES = ["small_cnn", "mlp", "resnet18_cifar", "mobilenetv2_cifar"]


def forward(model: nn.Module, input_shape: tuple[int, ...]) -> torch.Tensor:
    """Logits of a random batch of ``BATCH`` inputs, in eval mode."""
    torch.manual_seed(0)
    model.eval()
    with torch.inference_mode():
        return model(torch.randn(BATCH, *input_shape))


def test_built_in_families_are_registered(host):
    """Every built-in family is registered under its NAME."""
    assert set(FAMILIES + ["torchvision"]) <= set(host.models.names())


@pytest.mark.parametrize("input_shape", SHAPES, ids=lambda shape: "x".join(map(str, shape)))
@pytest.mark.parametrize("family", FAMILIES)
def test_family_builds_and_gives_logits(host, family, input_shape):
    """Each family builds for the input shape and returns (batch, num_classes) finite logits."""
    model = host.models[family].build(NUM_CLASSES, input_shape)
    assert isinstance(model, nn.Module)
    logits = forward(model, input_shape)
    assert logits.shape == (BATCH, NUM_CLASSES)
    assert torch.isfinite(logits).all()


def test_families_without_variants_say_so(host):
    """Families addressed without ``:variant`` return None from variants()."""
    for family in FAMILIES:
        assert host.models[family].variants() is None


@pytest.mark.parametrize("channels", [1, 3])
def test_resnet18_cifar_has_small_stem_and_no_maxpool(host, channels):
    """conv1 is a 3x3 stride-1 convolution over the input's channels, and the max-pool is gone."""
    model = host.models["resnet18_cifar"].build(10, (channels, 32, 32))
    assert isinstance(model.conv1, nn.Conv2d)
    assert model.conv1.kernel_size == (3, 3)
    assert model.conv1.stride == (1, 1)
    assert model.conv1.in_channels == channels
    assert isinstance(model.maxpool, nn.Identity)
    assert not any(isinstance(module, nn.MaxPool2d) for module in model.modules())


@pytest.mark.parametrize("channels", [1, 3])
def test_mobilenetv2_cifar_has_stride_one_stem(host, channels):
    """The stem convolution and the first downsampling block's depthwise conv have stride 1."""
    model = host.models["mobilenetv2_cifar"].build(10, (channels, 32, 32))
    stem = model.features[0][0]
    assert isinstance(stem, nn.Conv2d)
    assert stem.stride == (1, 1)
    assert stem.in_channels == channels
    assert model.features[2].conv[1][0].stride == (1, 1)


def test_mobilenetv2_cifar_keeps_more_resolution_than_torchvision(host):
    """With two of its five stride-2 stages removed, the features downsample by 8, not 32."""
    model = host.models["mobilenetv2_cifar"].build(10, (3, 16, 16)).eval()
    with torch.inference_mode():
        features = model.features(torch.randn(1, 3, 16, 16))
    assert features.shape[-2:] == (2, 2)


def test_torchvision_variants_list_classifiers(host):
    """The torchvision family lists its classifiers as variants."""
    variants = host.models["torchvision"].variants()
    assert "resnet18" in variants
    assert "resnet50" in variants


def test_torchvision_resnet18_on_one_channel_repeats_channels(host):
    """1-channel inputs are repeated to 3 channels in front of the torchvision model."""
    model = host.models["torchvision"].build(10, (1, 8, 8), variant="resnet18")
    logits = forward(model, (1, 8, 8))
    assert logits.shape == (BATCH, 10)
    repeat = model[0]
    x = torch.randn(BATCH, 1, 8, 8)
    repeated = repeat(x)
    assert repeated.shape == (BATCH, 3, 8, 8)
    for channel in range(3):
        assert torch.equal(repeated[:, channel], x[:, 0])


def test_torchvision_resnet18_on_rgb(host):
    """3-channel inputs go straight to the torchvision model."""
    from torchvision.models import ResNet

    model = host.models["torchvision"].build(10, (3, 32, 32), variant="resnet18")
    assert isinstance(model, ResNet)
    assert forward(model, (3, 32, 32)).shape == (BATCH, 10)
