"""adc's own small CNNs for small images (8x8 to 32x32, 1 or 3 channels).

These are the networks of the AMC paper's CIFAR experiments (Plain-20,
ResNet-20/56), a small MobileNet-v1 and a small VGG, sized so that they train
on a CPU. Every model follows the same conventions so that channel pruning
and the tools around it see a uniform shape:

* convolutions have ``bias=False`` and are followed by ``BatchNorm2d``;
* ReLUs are not in-place (pruning hooks and feature capture see clean tensors);
* an ``AdaptiveAvgPool2d(1)`` before the classifier makes any input size from
  8x8 upwards work;
* the classifier is a single ``nn.Linear`` named ``fc``.

Builders are registered in :data:`ZOO` and called as
``ZOO.get(name)(num_classes=10, in_channels=3)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from adc.utils.registry import Registry

ZOO: Registry[Callable[..., nn.Module]] = Registry("zoo model")


def _conv_bn_relu(cin: int, cout: int, *, stride: int = 1, kernel: int = 3, groups: int = 1) -> nn.Sequential:
    """Conv (no bias) + BN + ReLU, the unit every zoo model is made of."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=False),
    )


def _init_weights(model: nn.Module) -> None:
    """He init for convs, unit BN, small linear init (uses the global RNG, which the caller seeds)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


class _Classifier(nn.Module):
    """``features`` -> global average pool -> ``fc``; the shared skeleton of all zoo models."""

    def __init__(self, features: nn.Module, feat_channels: int, num_classes: int) -> None:
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(feat_channels, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.fc(torch.flatten(x, 1))


# ----------------------------------------------------------------- Plain-20


class PlainNet(_Classifier):
    """ResNet-style stages without shortcuts (AMC's Plain-20 when ``depth=20``).

    A 16-channel stem, then three stages of ``(depth - 2) // 3`` 3x3 convs with
    16, 32 and 64 channels; the first conv of stages 2 and 3 has stride 2.
    """

    def __init__(self, depth: int = 20, *, num_classes: int = 10, in_channels: int = 3) -> None:
        if (depth - 2) % 3:
            raise ValueError(f"PlainNet depth must be 3n+2, got {depth}")
        per_stage = (depth - 2) // 3
        layers: list[nn.Module] = [_conv_bn_relu(in_channels, 16)]
        cin = 16
        for stage, cout in enumerate((16, 32, 64)):
            for i in range(per_stage):
                layers.append(_conv_bn_relu(cin, cout, stride=2 if stage > 0 and i == 0 else 1))
                cin = cout
        super().__init__(nn.Sequential(*layers), cin, num_classes)


@ZOO.register("plain20")
def plain20(*, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """AMC's Plain-20: ResNet-20 without shortcuts (19 convs + fc, ~0.27M params)."""
    return PlainNet(20, num_classes=num_classes, in_channels=in_channels)


# ------------------------------------------------------------------ ResNets


class BasicBlock(nn.Module):
    """He et al.'s two-conv residual block; option-B (1x1 conv + BN) shortcut when the shape changes.

    Option B instead of the paper's zero-padding shortcut keeps every channel
    backed by a real weight, so a dependency graph can prune it cleanly.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
        self.relu2 = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(_Classifier):
    """He et al.'s CIFAR ResNet (depth 6n+2): 16-channel stem, 3 stages of n BasicBlocks (16/32/64)."""

    def __init__(self, depth: int, *, num_classes: int = 10, in_channels: int = 3) -> None:
        if (depth - 2) % 6:
            raise ValueError(f"CifarResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        layers: list[nn.Module] = [_conv_bn_relu(in_channels, 16)]
        cin = 16
        for stage, cout in enumerate((16, 32, 64)):
            blocks = [BasicBlock(cin if i == 0 else cout, cout, 2 if stage > 0 and i == 0 else 1) for i in range(n)]
            layers.append(nn.Sequential(*blocks))
            cin = cout
        super().__init__(nn.Sequential(*layers), cin, num_classes)


@ZOO.register("resnet20")
def resnet20(*, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """ResNet-20 for CIFAR-sized images (~0.27M params)."""
    return CifarResNet(20, num_classes=num_classes, in_channels=in_channels)


@ZOO.register("resnet56")
def resnet56(*, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """ResNet-56 for CIFAR-sized images (~0.86M params), AMC's ResNet-56 experiment."""
    return CifarResNet(56, num_classes=num_classes, in_channels=in_channels)


# ---------------------------------------------------------------- MobileNet

# (out_channels, stride) of each depthwise-separable block: MobileNet-v1's
# pattern cut to three downsamplings, since the inputs are at most 32x32.
_MOBILENET_BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1),
)  # fmt: skip


class MobileNetV1(_Classifier):
    """Small MobileNet-v1: a 32-channel stem, then depthwise 3x3 + pointwise 1x1 blocks."""

    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        width: float = 1.0,
        blocks: Sequence[tuple[int, int]] = _MOBILENET_BLOCKS,
    ) -> None:
        def ch(c: int) -> int:
            return max(8, int(round(c * width)))

        layers: list[nn.Module] = [_conv_bn_relu(in_channels, ch(32))]
        cin = ch(32)
        for cout, stride in blocks:
            layers.append(
                nn.Sequential(
                    _conv_bn_relu(cin, cin, stride=stride, groups=cin),  # depthwise
                    _conv_bn_relu(cin, ch(cout), kernel=1),  # pointwise
                )
            )
            cin = ch(cout)
        super().__init__(nn.Sequential(*layers), cin, num_classes)


@ZOO.register("mobilenet")
def mobilenet(*, num_classes: int = 10, in_channels: int = 3, width: float = 0.5) -> nn.Module:
    """MobileNet-v1 style network; ``width`` scales every layer (0.5 by default: 16 -> 256 channels)."""
    return MobileNetV1(num_classes=num_classes, in_channels=in_channels, width=width)


# --------------------------------------------------------------------- VGG


class SmallVGG(_Classifier):
    """VGG-style stack of conv-bn-relu with max pooling (``"M"`` in ``cfg``)."""

    def __init__(self, cfg: Sequence[int | str], *, num_classes: int = 10, in_channels: int = 3) -> None:
        layers: list[nn.Module] = []
        cin = in_channels
        for item in cfg:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers.append(_conv_bn_relu(cin, int(item)))
                cin = int(item)
        super().__init__(nn.Sequential(*layers), cin, num_classes)


@ZOO.register("vgg_small")
def vgg_small(*, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """Six 3x3 convs (32,32,M,64,64,M,128,128), global pooling and ``fc`` (~0.29M params)."""
    return SmallVGG((32, 32, "M", 64, 64, "M", 128, 128), num_classes=num_classes, in_channels=in_channels)
