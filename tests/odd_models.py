"""Small models whose channels Torch-Pruning's grouping gets wrong, each in its own way (model plugins for tests).

Each function takes ``num_classes`` and ``in_channels`` like any model plugin
(``adc profile --model tests/odd_models.py:slicing``).
"""

from __future__ import annotations

import torch
from torch import nn


class Slicing(nn.Module):
    """Slices the stem's channels: a conv on the first half, the second half passed on, then concatenated.

    Torch-Pruning follows only half of the stem's channels, so an analytic cost
    would count channels that pruning never removes.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 16, 3, padding=1)
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        a, b = y[:, :8], y[:, 8:]
        z = torch.cat([self.conv(a), b], 1)
        return self.head(z.mean((2, 3)))


class FixedWidth(nn.Module):
    """Reshapes a conv's output to a width written in the code, as ViT's patch embedding does."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(torch.relu(self.conv1(x)))
        return self.head(y.reshape(y.shape[0], 16, -1).mean(2))


class Flipped(nn.Module):
    """Reverses the channel order between two convs: Torch-Pruning maps channel i to channel i, wrongly."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv1(x)).flip(1)
        return self.head(torch.relu(self.conv2(y)).mean((2, 3)))


def slicing(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    return Slicing(num_classes, in_channels)


def fixed_width(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    return FixedWidth(num_classes, in_channels)


def flipped(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    return Flipped(num_classes, in_channels)
