"""Per-unit profile of a model: what each prunable unit holds and costs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

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
    energy: float = 0.0  # modelled joules per sample of the layers the unit touches
    energy_share: float = 0.0
    latency: float | None = None  # measured seconds (table entries) of those layers, with --latency
    latency_share: float | None = None


def profile_rows(graph: ModelGraph, *, energy_model: Any = None, latency_table: Any = None) -> tuple[list[UnitRow], int, int]:
    """Rows for every unit, and the model's total MACs and parameters.

    A unit's MACs, parameters, energy (modelled, :mod:`adc.energy`) and latency
    (measured table entries, when ``latency_table`` is given) are those of every
    layer whose input or output channels it holds, so shares overlap and do not
    sum to one. Latency shares are of the measured end-to-end latency.
    """
    from adc.energy import EnergyPrice, load_energy_model

    total = cost(graph, {})
    full = graph.channels.copy()
    energy = EnergyPrice(graph, load_energy_model(energy_model)).layer_energy(full)
    total_energy = float(energy.sum())
    latency = latency_table.scale * latency_table.layer_latency(full) if latency_table is not None else None
    rows = []
    for j, u in enumerate(graph.units):
        touched = (graph.out_terms[:, j] > 0) | (graph.in_terms[:, j] > 0)
        e = float(energy[touched].sum())
        lat = float(latency[touched].sum()) if latency is not None else None
        rows.append(UnitRow(u.index, u.name, u.kind, u.in_channels, u.channels, u.height, u.width, u.macs, u.params,
                            u.macs / max(total.macs, 1), u.params / max(total.params, 1), e, e / max(total_energy, 1e-30),
                            lat, lat / latency_table.measured_total if lat is not None else None))
    return rows, total.macs, total.params


def human(n: float) -> str:
    """1234567 -> '1.23M'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


@dataclass
class Profile:
    """A model's profile: unit rows and totals (energy in joules, latency in seconds, per sample / batch)."""

    rows: list[UnitRow]
    macs: int
    params: int
    shape: tuple[int, ...]
    energy: float
    latency: float | None = None
    latency_info: dict[str, Any] = field(default_factory=dict)


def profile_model_full(
    spec: str,
    *,
    data: str | None = None,
    input_shape: tuple[int, ...] | None = None,
    num_classes: int | None = None,
    energy_model: Any = None,
    latency: bool = False,
    runtime: str = "torch",
    device: str = "cpu",
    batch: int = 1,
    threads: int | None = None,
    cache_dir: str | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> Profile:
    """Like :func:`profile_model`, with modelled energy and, with ``latency``, a measured latency table."""
    from adc.energy import EnergyPrice, load_energy_model
    from adc.graph import analyze

    model, x = build_for_profile(spec, data=data, input_shape=input_shape, num_classes=num_classes)
    graph = analyze(model, x)
    table = None
    if latency:
        from adc.latency import build_latency_table

        table = build_latency_table(model, x, graph=graph, batch=batch, runtime=runtime, device=device, threads=threads,
                                    cache_dir=cache_dir, progress=progress)
    em = load_energy_model(energy_model)
    rows, macs, params = profile_rows(graph, energy_model=em, latency_table=table)
    energy = EnergyPrice(graph, em).price(np.asarray(graph.channels))
    return Profile(rows, macs, params, tuple(x.shape), energy, table.measured_total if table else None,
                   dict(table.info) if table else {})


def build_for_profile(spec: str, *, data: str | None = None, input_shape: tuple[int, ...] | None = None,
                      num_classes: int | None = None) -> tuple[Any, Any]:
    """The model of ``spec`` and a batch-1 input (shape and classes from ``data``, else the defaults below)."""
    import torch

    from adc.data import example_input, load_data
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
    return build_model(spec, num_classes=classes, in_channels=x.shape[1]).eval(), x


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
    from adc.graph import analyze

    model, x = build_for_profile(spec, data=data, input_shape=input_shape, num_classes=num_classes)
    rows, macs, params = profile_rows(analyze(model, x))
    return rows, macs, params, tuple(x.shape)
