"""What an analysed model is made of: prunable units, layers, and the cost tables that couple them.

:func:`adc.analysis.graph.analyze` builds a :class:`ModelGraph`; everything
later (exact costs, the indices each module loses, the search's state) reads
these plain records and arrays, so pruning a copy and pricing a policy never
trace the model again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
from torch import nn

from adc.analysis.counting import Costs
from adc.utils.errors import AdcError

LAYER_TYPES = (nn.modules.conv._ConvNd, nn.Linear)


@dataclass(frozen=True)
class Member:
    """One module (or loose parameter) touched when a unit loses channels.

    Attributes:
        module: Qualified name of the module in the model, or of the parameter
            when ``axis`` is set (a parameter outside any layer, such as
            ConvNeXt's ``layer_scale``).
        dim: ``"out"`` or ``"in"``: which of its channel dimensions shrinks.
        idxs: Indices, in the module's own (unpruned) channel numbering.
        root_idxs: For each entry of ``idxs``, the unit channel it belongs to.
        axis: For a parameter, the tensor dimension that shrinks; None for a module.
    """

    module: str
    dim: str
    idxs: np.ndarray
    root_idxs: np.ndarray
    axis: int | None = None

    @property
    def is_parameter(self) -> bool:
        """True for a loose parameter (no layer of its own), False for a module."""
        return self.axis is not None


@dataclass
class Unit:
    """A group of channels pruned together; one action of the agent.

    Attributes:
        name: Qualified name of the root layer (the first layer, in execution
            order, whose output channels the unit holds). Stable across runs.
        index: Position of the unit in execution order.
        kind: ``"conv"``, ``"depthwise"`` (coupled to a depthwise conv),
            ``"grouped"`` (coupled to a grouped conv) or ``"linear"``.
        channels: Number of channels in the unit.
        channel_groups: Channels are removed in the same positions of each of
            this many groups (grouped convolutions); 1 otherwise.
        in_channels, out_channels, kernel, stride, groups: Of the root layer.
        height, width: Input feature-map size of the root layer (1 for linear).
        macs, params: MACs and parameters of the unpruned network that depend
            on this unit's channels (what pruning it all the way could touch).
        members: Every module dimension the unit shrinks.
    """

    name: str
    index: int
    kind: str
    channels: int
    channel_groups: int
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    groups: int
    height: int
    width: int
    macs: int = 0
    params: int = 0
    members: list[Member] = field(default_factory=list, repr=False)

    @property
    def layer_members(self) -> list[Member]:
        """The members that are modules (layers, norms), without loose parameters such as a layer scale."""
        return [m for m in self.members if not m.is_parameter]

    def kept(self, sparsity: float, round_to: int = 1) -> int:
        """Channels kept at ``sparsity``, rounded, never zero.

        Args:
            sparsity: Fraction of the unit's channels to remove, in [0, 1).
            round_to: Kept count is rounded to a multiple of this (hardware
                friendly widths) or to the full width, whichever is nearer, so
                sparsity 0 keeps every channel even when the width is not a
                multiple; ignored inside grouped convolutions, whose per-group
                width is rounded instead.
        """
        if self.channel_groups > 1:
            width = self.channels // self.channel_groups
            return self.channel_groups * min(width, max(1, round(width * (1.0 - sparsity))))
        target = self.channels * (1.0 - sparsity)
        if round_to <= 1:
            return min(self.channels, max(1, round(target)))
        # Without the full-width option a 20-channel unit at round_to=8 would lose 4 channels at sparsity 0.
        kept = max(round_to, round(target / round_to) * round_to)
        if kept >= self.channels or self.channels - target < abs(kept - target):
            return self.channels
        return kept


@dataclass
class LayerCost:
    """Static description of one conv/linear layer, for analytic costs."""

    name: str
    in_channels: int
    out_channels: int
    groups: int
    depthwise: bool
    kernel_numel: int
    positions: int  # output positions per sample (H*W for conv2d, 1 for a linear on vectors)
    bias: bool
    in_positions: int = 0  # input positions per sample (H_in*W_in for conv2d); 0 when unknown (use positions)


class ModelGraph:
    """The traced structure of a model: units, layers and how they couple.

    Built by :func:`adc.analysis.graph.analyze`; used by :mod:`adc.analysis.cost`
    for exact costs and by :mod:`adc.pruning` to remove channels without tracing again.

    Attributes:
        units: Prunable units in execution order.
        layers: Every conv/linear layer, with its unpruned shape.
        example_shape: Shape of the example input the graph was traced with.
        classifier: Name of the output layer (never pruned).
        constant_flops: FLOPs per sample the layer formulas do not cover
            (attention products, a layer run twice, functional matmuls), measured
            on the unpruned model; no unit changes them (checked at analysis).
        excluded: ``(root layer, reason)`` for every channel group that is not
            a unit, in the order found.
    """

    def __init__(
        self,
        units: list[Unit],
        layers: list[LayerCost],
        other_params: list[tuple[str, int, int]],
        constant_params: int,
        example_shape: tuple[int, ...],
        classifier: str,
        *,
        constant_flops: int = 0,
        excluded: Iterable[tuple[str, str]] = (),
    ) -> None:
        for i, u in enumerate(units):
            u.index = i
        self.units = units
        self.layers = layers
        self.example_shape = example_shape
        self.classifier = classifier
        self.constant_flops = int(constant_flops)
        self.excluded: list[tuple[str, str]] = list(excluded)
        self._by_name = {u.name: u for u in units}
        self.other_params = other_params  # (module or parameter name, channel-dim params numel, channels)
        self.constant_params = constant_params
        # Vectorised cost tables: channels removed from layer l = terms[l] @ removed_per_unit.
        self.out_terms, self.in_terms, self.other_terms = _coupling(units, layers, other_params)
        self.channels = np.array([u.channels for u in units], dtype=np.float64)
        self.out_full = np.array([lc.out_channels for lc in layers], dtype=np.float64)
        self.in_full = np.array([lc.in_channels for lc in layers], dtype=np.float64)
        self.groups = np.array([lc.groups for lc in layers], dtype=np.float64)
        self.depthwise = np.array([lc.depthwise for lc in layers], dtype=bool)
        self.mac_coef = np.array([lc.positions * lc.kernel_numel for lc in layers], dtype=np.float64)
        self.w_coef = np.array([lc.kernel_numel for lc in layers], dtype=np.float64)
        self.has_bias = np.array([lc.bias for lc in layers], dtype=np.float64)
        self.other_numel_per_ch = np.array([p / c for _, p, c in other_params], dtype=np.float64)
        self.other_full = np.array([c for _, _, c in other_params], dtype=np.float64)
        # Per-unit dependent MACs / params: the cost that pruning the unit touches.
        macs, params = self.layer_costs(self.channels.copy())
        for j, u in enumerate(units):
            touched = (self.out_terms[:, j] > 0) | (self.in_terms[:, j] > 0)
            u.macs = int(round(macs[touched].sum()))
            u.params = int(round(params[touched].sum()))

    def layer_channels(self, kept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Output and input channels of every conv/linear layer when each unit keeps ``kept`` channels."""
        removed = self.channels - np.asarray(kept, dtype=np.float64)
        return self.out_full - self.out_terms @ removed, self.in_full - self.in_terms @ removed

    def layer_costs(self, kept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """MACs and parameters of every conv/linear layer (``layers`` order) for the kept channel counts."""
        out_k, in_k = self.layer_channels(kept)
        groups = np.where(self.depthwise, in_k, self.groups)
        per_position = out_k * in_k / groups
        macs = self.mac_coef * per_position
        params = self.w_coef * per_position + self.has_bias * out_k
        return macs, params

    def costs(self, kept: np.ndarray) -> Costs:
        """Per-sample cost of the network when unit ``i`` keeps ``kept[i]`` channels."""
        kept = np.asarray(kept, dtype=np.float64)
        macs, params = self.layer_costs(kept)
        other = self.other_full - self.other_terms @ (self.channels - kept)
        total_params = params.sum() + (self.other_numel_per_ch * other).sum() + self.constant_params
        flops = 2 * int(round(macs.sum())) + self.constant_flops
        return Costs(flops // 2, flops, int(round(total_params)))

    def unit(self, name: str) -> Unit:
        """The unit called ``name``.

        Raises:
            AdcError: if no unit has that name (the message lists a few, or says why it was excluded).
        """
        try:
            return self._by_name[name]
        except KeyError:
            why = dict(self.excluded).get(name)
            if why is not None:
                raise AdcError(f"policy names unit {name!r}, which is not prunable: {why}") from None
            names = [u.name for u in self.units]
            shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            raise AdcError(f"policy names unit {name!r}, which is not a prunable unit of this model; units: {shown}") from None

    def require_units(self) -> None:
        """Raise unless some unit can be pruned.

        Raises:
            AdcError: naming why the channel groups found are not units (the first two), if there are none.
        """
        if self.units:
            return
        if not self.excluded:
            raise AdcError("the model has no prunable unit (only its classifier and input layers?)")
        shown = "; ".join(f"{name}: {why}" for name, why in self.excluded[:2])
        more = f" (and {len(self.excluded) - 2} more, see adc profile)" if len(self.excluded) > 2 else ""
        raise AdcError(f"the model has no prunable unit: {shown}{more}")

    def removed_channels(self, keep: Mapping[str, Iterable[int]]) -> dict[str, dict[str, np.ndarray]]:
        """Per member (module or parameter) and dimension, the channels to remove, in its own numbering.

        Args:
            keep: Unit name -> kept channel indices; units not named keep all.

        Raises:
            AdcError: for an unknown unit, or kept indices that are not distinct channels of the unit.
        """
        out: dict[str, dict[str, list[np.ndarray]]] = {}
        for name, kept in keep.items():
            unit = self.unit(name)
            kept = np.asarray(list(kept), dtype=np.int64)
            if len(kept) == 0 or kept.min() < 0 or kept.max() >= unit.channels or len(np.unique(kept)) != len(kept):
                raise AdcError(f"kept channels of unit {name!r} must be 1 to {unit.channels} distinct indices in "
                               f"[0, {unit.channels})")
            gone = np.ones(unit.channels, dtype=bool)
            gone[kept] = False
            if not gone.any():
                continue
            for m in unit.members:
                idxs = m.idxs[gone[m.root_idxs]]
                if len(idxs):
                    out.setdefault(m.module, {}).setdefault(m.dim, []).append(idxs)
        return {mod: {dim: np.unique(np.concatenate(parts)) for dim, parts in dims.items()} for mod, dims in out.items()}

    def parameter_axes(self) -> dict[str, int]:
        """Loose parameters some unit prunes, with the dimension that shrinks."""
        return {m.module: m.axis for u in self.units for m in u.members if m.axis is not None}

    def without(self, reasons: Mapping[str, str]) -> ModelGraph:
        """This graph less the units named in ``reasons`` (unit -> why), which join :attr:`excluded`."""
        if not reasons:
            return self
        units = [dataclasses.replace(u) for u in self.units if u.name not in reasons]
        excluded = self.excluded + [(u.name, reasons[u.name]) for u in self.units if u.name in reasons]
        return ModelGraph(units, self.layers, self.other_params, self.constant_params, self.example_shape,
                          self.classifier, constant_flops=self.constant_flops, excluded=excluded)

    def __iter__(self) -> Iterator[Unit]:
        return iter(self.units)

    def __len__(self) -> int:
        return len(self.units)


def _coupling(units: list[Unit], layers: list[LayerCost],
              other_params: list[tuple[str, int, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cost tables: channels a layer (or other module) loses = terms @ channels removed per unit."""
    layer_index = {lc.name: i for i, lc in enumerate(layers)}
    other_index = {n: i for i, (n, _, _) in enumerate(other_params)}
    out_terms = np.zeros((len(layers), len(units)))
    in_terms = np.zeros((len(layers), len(units)))
    other_terms = np.zeros((len(other_params), len(units)))
    for j, u in enumerate(units):
        per_module: dict[str, dict[str, set]] = {}
        for mem in u.members:
            per_module.setdefault(mem.module, {}).setdefault(mem.dim, set()).update(mem.idxs.tolist())
        for mod, dims in per_module.items():
            if mod in layer_index:
                i = layer_index[mod]
                if layers[i].depthwise:  # a depthwise conv's input and output channels are the same channels
                    both = len(dims.get("out", set()) | dims.get("in", set())) / u.channels
                    out_terms[i, j] = in_terms[i, j] = both
                else:
                    out_terms[i, j] = len(dims.get("out", ())) / u.channels
                    in_terms[i, j] = len(dims.get("in", ())) / u.channels
            elif mod in other_index:
                other_terms[other_index[mod], j] = len(set().union(*dims.values())) / u.channels
    return out_terms, in_terms, other_terms
