"""The criteria registry and the helpers every criterion family shares.

A criterion is a small callable ``(context, unit) -> scores`` (one score per
channel of the unit, higher = more important), following the shape of
Torch-Pruning's importance callables. :func:`register_criterion` adds one to
:data:`CRITERIA` and records whether it needs calibration batches (and their
labels), so the search knows what data to collect once, before any episode.

The helpers that need the model (averaging members into unit channels) are
methods of :class:`~adc.pruning.criteria.context.ScoreContext`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from adc.analysis.graph import LAYER_TYPES, Member
from adc.utils.registry import Registry

Batch = tuple[torch.Tensor, torch.Tensor]
Criterion = Callable[[Any, Any], torch.Tensor]
"""``criterion(context, unit)`` -> one score per channel of the unit (a :class:`ScoreContext` and a ``Unit``)."""
CRITERIA: Registry[Criterion] = Registry("criterion")

_NEEDS_DATA: set[str] = set()
_NEEDS_LABELS: set[str] = set()


def register_criterion(name: str, *, data: bool = False, labels: bool = False) -> Callable[[Criterion], Criterion]:
    """Decorator: register a criterion under ``name``.

    Args:
        name: Its name in :data:`CRITERIA`.
        data: It reads calibration batches (the search then collects them, once per search).
        labels: It needs their labels too (a loss is differentiated); implies ``data``.
    """

    def add(fn: Criterion) -> Criterion:
        CRITERIA.register(name, fn)
        if data or labels:
            _NEEDS_DATA.add(name)
        if labels:
            _NEEDS_LABELS.add(name)
        return fn

    return add


def needs_data() -> frozenset[str]:
    """Names of the criteria that read calibration batches."""
    return frozenset(_NEEDS_DATA)


def needs_labels() -> frozenset[str]:
    """Names of the criteria that need labelled calibration batches (they differentiate the loss)."""
    return frozenset(_NEEDS_LABELS)


def is_layer(module: nn.Module) -> bool:
    """A convolution or linear layer (the modules whose weights hold channels as rows or columns)."""
    return isinstance(module, LAYER_TYPES)


def is_norm(module: nn.Module) -> bool:
    """A batch norm."""
    return isinstance(module, nn.modules.batchnorm._BatchNorm)


def member_rows(module: nn.Module, member: Member, tensor: torch.Tensor, *, detach: bool = True) -> torch.Tensor:
    """Rows of ``tensor`` (a weight-shaped tensor of ``module``) for the member's channels, flattened.

    One row per entry of ``member.idxs``: a filter for an output member, the
    input column of every filter for an input member (grouped convolutions
    map a channel to its position inside its group; depthwise ones to filter c).
    ``detach=False`` keeps the rows differentiable (for regularisers).
    """
    tensor = tensor.detach() if detach else tensor
    idxs = torch.as_tensor(member.idxs, dtype=torch.long, device=tensor.device)
    if member.dim == "out" or tensor.dim() == 1:
        return tensor.index_select(0, idxs).flatten(1) if tensor.dim() > 1 else tensor[idxs, None]
    if isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1:
        if module.groups == module.in_channels:  # depthwise: input channel c is filter c
            return tensor.index_select(0, idxs).flatten(1)
        idxs = idxs % (module.in_channels // module.groups)
    return tensor.index_select(1, idxs).transpose(0, 1).flatten(1)


def as_batches(calibration: Iterable | torch.Tensor | None, limit: int | None = None) -> list[Batch] | None:
    """Normalise calibration data (a DataLoader, a list of batches, or an image tensor) to batches."""
    if calibration is None:
        return None
    if isinstance(calibration, torch.Tensor):
        return [(calibration, torch.zeros(len(calibration), dtype=torch.long))]
    batches: list[Batch] = []
    seen = 0
    for batch in calibration:
        images, labels = (batch[0], batch[1]) if isinstance(batch, (tuple, list)) else (batch, None)
        if labels is None:
            labels = torch.zeros(len(images), dtype=torch.long)
        batches.append((images, labels))
        seen += len(images)
        if limit is not None and seen >= limit:
            break
    return batches
