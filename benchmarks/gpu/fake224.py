"""A data plug-in for the GPU check: random 3x224x224 images in 1000 classes (speed does not depend on the values)."""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset


class _Images(TensorDataset):
    classes = [str(i) for i in range(1000)]


def data(n: int = 1600, test: int = 64) -> tuple[TensorDataset, TensorDataset]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n + test, 3, 224, 224, generator=gen)
    y = torch.randint(0, 1000, (n + test,), generator=gen)
    return _Images(x[:n], y[:n]), _Images(x[n:], y[n:])


def small(n: int = 400, test: int = 32) -> tuple[TensorDataset, TensorDataset]:
    """The dry-run size: 3x64x64."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n + test, 3, 64, 64, generator=gen)
    y = torch.randint(0, 1000, (n + test,), generator=gen)
    return _Images(x[:n], y[:n]), _Images(x[n:], y[n:])
