"""Per-unit profile of a model: what each prunable unit holds and costs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from adc.analysis.cost import cost
from adc.analysis.energy import EnergyModel, EnergyPrice
from adc.analysis.graph import ModelGraph
from adc.analysis.latency import LatencyTable


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
    latency: float | None = None  # measured seconds (table entries) of those layers, with a latency table
    latency_share: float | None = None


@dataclass
class Profile:
    """A model's profile: unit rows and totals (energy in joules, latency in seconds, per sample / batch).

    Attributes:
        excluded: Channel groups that are not prunable units, each with the reason
            (from :attr:`adc.analysis.graph.ModelGraph.excluded`).
    """

    rows: list[UnitRow]
    macs: int
    params: int
    shape: tuple[int, ...]
    energy: float
    latency: float | None = None
    latency_info: dict[str, Any] = field(default_factory=dict)
    excluded: list[tuple[str, str]] = field(default_factory=list)


def profile(graph: ModelGraph, *, energy_model: EnergyModel | None = None,
            latency_table: LatencyTable | None = None) -> Profile:
    """Rows for every unit, and the model's totals.

    A unit's MACs, parameters, energy (modelled, :mod:`adc.analysis.energy`) and
    latency (measured table entries, when ``latency_table`` is given) are those of
    every layer whose input or output channels it holds, so shares overlap and
    do not sum to one. Latency shares are of the measured end-to-end latency.
    """
    total = cost(graph, {})
    full = graph.channels.copy()
    energy = EnergyPrice(graph, energy_model).layer_energy(full)
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
    return Profile(rows, total.macs, total.params, tuple(graph.example_shape), total_energy,
                   latency_table.measured_total if latency_table is not None else None,
                   dict(latency_table.info) if latency_table is not None else {},
                   list(graph.excluded))
