"""Training images a search needs besides the validation images: for adaptive BN, criteria and reconstruction.

A user passes ordinary PyTorch data -- a ``DataLoader``, a map-style
``Dataset`` of ``(image, label)`` pairs, or a tensor of images -- and
:func:`calibration_set` draws, once and with a seed, the images for batch-norm
recalibration and the labelled batches for the data-driven criteria and
least-squares reconstruction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from adc.utils.errors import AdcError

Batch = tuple[torch.Tensor, torch.Tensor]

CALIBRATION_FORMS = "a DataLoader, a Dataset of (image, label) pairs, or a tensor of images"


@dataclass(frozen=True)
class CalibrationSet:
    """Training images drawn once for a search.

    Attributes:
        bn_images: Images for BN recalibration (None: none asked for).
        batches: ``(images, labels)`` batches for criteria and reconstruction
            (labels are zeros when the source had none; ``labelled`` says so).
        labelled: Whether ``batches`` carry real labels (the Taylor criterion needs them).
        source: What the images came from, for the report.
    """

    bn_images: torch.Tensor | None
    batches: list[Batch]
    labelled: bool
    source: str

    @property
    def bn_count(self) -> int:
        return 0 if self.bn_images is None else len(self.bn_images)

    @property
    def batch_count(self) -> int:
        return sum(len(x) for x, _ in self.batches)


def fixed_images(dataset: Dataset, count: int, seed: int) -> torch.Tensor | None:
    """``count`` images of ``dataset`` chosen once with ``seed`` (for BN recalibration); None when ``count`` is 0."""
    if count <= 0:
        return None
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(dataset), generator=gen)[: min(count, len(dataset))]
    return torch.stack([dataset[int(i)][0] for i in order])


def labelled_batches(dataset: Dataset, count: int, seed: int, batch: int = 64) -> list[Batch]:
    """``count`` (image, label) pairs of ``dataset`` chosen with ``seed``, in batches."""
    gen = torch.Generator().manual_seed(seed + 1)
    order = torch.randperm(len(dataset), generator=gen)[: min(count, len(dataset))]
    samples = [dataset[int(i)] for i in order]
    images = torch.stack([s[0] for s in samples])
    labels = torch.as_tensor([int(s[1]) for s in samples])
    return [(images[i:i + batch], labels[i:i + batch]) for i in range(0, len(images), batch)]


def image_range(dataset: Dataset, start: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``start`` to ``start + count`` of ``dataset`` (in order) and their labels."""
    end = min(start + count, len(dataset))
    if end <= start:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    pairs = [dataset[i] for i in range(start, end)]
    return torch.stack([x for x, _ in pairs]), torch.as_tensor([int(y) for _, y in pairs])


def _from_loader(loader: Iterable[Any], count: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    images, labels, seen = [], [], 0
    for batch in loader:
        x, y = (batch[0], batch[1]) if isinstance(batch, (tuple, list)) and len(batch) >= 2 else (batch, None)
        if not isinstance(x, torch.Tensor):
            raise AdcError(f"calibration: a batch holds {type(x).__name__}, not an image tensor; pass {CALIBRATION_FORMS}")
        images.append(x)
        labels.append(None if y is None else torch.as_tensor(y))
        seen += len(x)
        if seen >= count:
            break
    if not images:
        raise AdcError("calibration: the DataLoader yielded no batch")
    x = torch.cat(images)[:count]
    y = None if any(v is None for v in labels) else torch.cat(labels)[:count]
    return x, y


def calibration_set(data: Any, *, bn_count: int, batch_count: int, seed: int) -> CalibrationSet:
    """Draw the BN-recalibration images and the labelled batches from user data.

    Args:
        data: A ``DataLoader`` (of a map-style dataset: that dataset, sampled with
            ``seed``; of an iterable dataset: its first images), a map-style
            ``Dataset`` of ``(image, label)`` pairs (sampled with ``seed``) or an
            N x C x H x W tensor of images (unlabelled; its first images).
        bn_count: Images for BN recalibration.
        batch_count: Images for the criteria and reconstruction.
        seed: Seed of the sampling from a Dataset.

    Raises:
        AdcError: for anything else, an empty source, or too few images for BN (fewer than 2).
    """
    need = max(bn_count, batch_count)
    if isinstance(data, DataLoader) and hasattr(data.dataset, "__getitem__") and hasattr(data.dataset, "__len__"):
        data = data.dataset  # sample it with the seed: a shuffled loader would draw from the global generator
    if isinstance(data, torch.Tensor):
        if data.ndim != 4 or len(data) == 0:
            raise AdcError(f"calibration tensor has shape {tuple(data.shape)}; it must be N x C x H x W images")
        x, y, source = data[:need], None, f"a tensor of {len(data)} images"
    elif isinstance(data, DataLoader) or (isinstance(data, Iterable) and not hasattr(data, "__getitem__")):
        x, y = _from_loader(data, need)
        source = f"the first {len(x)} images of a DataLoader"
    elif hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        if len(data) == 0:
            raise AdcError("calibration Dataset is empty")
        sample = data[0]
        if not (isinstance(sample, (tuple, list)) and isinstance(sample[0], torch.Tensor)):
            raise AdcError(f"calibration Dataset yields {type(sample).__name__}; it must yield (image tensor, label)")
        bn = fixed_images(data, bn_count, seed)
        batches = labelled_batches(data, batch_count, seed) if batch_count > 0 else []
        return CalibrationSet(bn, batches, True, f"{min(need, len(data))} of the {len(data)} images of a Dataset, seed {seed}")
    else:
        raise AdcError(f"calibration is {type(data).__name__}; pass {CALIBRATION_FORMS}")
    bn = x[:bn_count] if bn_count > 0 else None
    if bn is not None and len(bn) < 2:
        raise AdcError(f"calibration gives {len(bn)} image(s); batch-norm recalibration needs at least 2")
    xs = x[:batch_count]
    labels = y[:batch_count] if y is not None else torch.zeros(len(xs), dtype=torch.long)
    batches = [(xs[i:i + 64], labels[i:i + 64]) for i in range(0, len(xs), 64)] if batch_count > 0 else []
    return CalibrationSet(bn, batches, y is not None, source)
