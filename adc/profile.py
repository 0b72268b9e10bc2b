"""Per-unit profile of a model: what each prunable unit holds and costs."""

from __future__ import annotations

from dataclasses import dataclass

from adc.cost import cost
from adc.graph import ModelGraph


@dataclass(frozen=True)
class UnitRow:
    """One row of the profile table."""

    index: int
    name: str
    kind: str
    in_channels: int
    channels: int
    height: int
    width: int
    macs: int
    params: int
    macs_share: float
    params_share: float


def profile_rows(graph: ModelGraph) -> tuple[list[UnitRow], int, int]:
    """Rows for every unit, and the model's total MACs and parameters.

    A unit's MACs and parameters are those of every layer whose input or output
    channels it holds, so shares overlap and do not sum to one.
    """
    total = cost(graph, {})
    rows = [
        UnitRow(u.index, u.name, u.kind, u.in_channels, u.channels, u.height, u.width, u.macs, u.params,
                u.macs / max(total.macs, 1), u.params / max(total.params, 1))
        for u in graph.units
    ]
    return rows, total.macs, total.params


def human(n: float) -> str:
    """1234567 -> '1.23M'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def profile_model(
    spec: str,
    *,
    data: str | None = None,
    input_shape: tuple[int, ...] | None = None,
    num_classes: int | None = None,
) -> tuple[list[UnitRow], int, int, tuple[int, ...]]:
    """Build a model from its spec and profile it.

    The input shape and class count come from ``data`` when given; otherwise
    from ``input_shape`` / ``num_classes``, defaulting to ImageNet's 3x224x224
    and 1000 classes for torchvision models and CIFAR's 3x32x32 and 10 otherwise.

    Returns:
        Rows, total MACs, total params, and the input shape used (with batch 1).
    """
    import torch

    from adc.data import example_input, load_data
    from adc.graph import analyze
    from adc.models import build_model

    if data is not None:
        splits = load_data(data)
        x = example_input(splits)
        classes = splits.num_classes
    else:
        imagenet = spec.startswith("torchvision:")
        shape = input_shape or ((3, 224, 224) if imagenet else (3, 32, 32))
        x = torch.zeros(1, *shape)
        classes = num_classes or (1000 if imagenet else 10)
    model = build_model(spec, num_classes=classes, in_channels=x.shape[1])
    rows, macs, params = profile_rows(analyze(model, x))
    return rows, macs, params, tuple(x.shape)
