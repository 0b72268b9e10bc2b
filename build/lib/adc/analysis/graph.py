"""Prunable units of a network: which channels must be removed together.

Torch-Pruning's ``DependencyGraph`` traces the model once and tells, for every
output channel of every conv/linear layer, which other parameters (batch norms,
the next layers' input channels, residual partners, depthwise convolutions,
concatenated consumers, the linear layer after a flatten) must lose the same
channel. One such dependency group is one *unit*: the agent picks one sparsity
per unit. The classifier's outputs and the network's inputs are never pruned.

The trace is done once per model; everything the search needs later (exact
costs, the indices each module loses) is precomputed here as plain arrays, so
pruning a copy and pricing a policy never trace again.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from adc.utils.errors import AdcError
from adc.utils.formatting import one_line

LAYER_TYPES = (nn.modules.conv._ConvNd, nn.Linear)


@dataclass(frozen=True)
class Member:
    """One parameterised module touched when a unit loses channels.

    Attributes:
        module: Qualified name of the module in the model.
        dim: ``"out"`` or ``"in"``: which of its channel dimensions shrinks.
        idxs: Indices, in the module's own (unpruned) channel numbering.
        root_idxs: For each entry of ``idxs``, the unit channel it belongs to.
    """

    module: str
    dim: str
    idxs: np.ndarray
    root_idxs: np.ndarray


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

    Built by :func:`analyze`; used by :mod:`adc.cost` for exact costs and by
    :mod:`adc.pruning` to remove channels without tracing again.

    Attributes:
        units: Prunable units in execution order.
        layers: Every conv/linear layer, with its unpruned shape.
        example_shape: Shape of the example input the graph was traced with.
        classifier: Name of the output layer (never pruned).
    """

    def __init__(
        self,
        units: list[Unit],
        layers: list[LayerCost],
        other_params: list[tuple[str, int, int]],
        out_terms: np.ndarray,
        in_terms: np.ndarray,
        other_terms: np.ndarray,
        constant_params: int,
        example_shape: tuple[int, ...],
        classifier: str,
    ) -> None:
        self.units = units
        self.layers = layers
        self.example_shape = example_shape
        self.classifier = classifier
        self._by_name = {u.name: u for u in units}
        # Vectorised cost tables: channels removed from layer l = terms[l] @ removed_per_unit.
        self.out_terms = out_terms
        self.in_terms = in_terms
        self.other_terms = other_terms
        self.other_params = other_params  # (module name, channel-dim params numel, channels)
        self.constant_params = constant_params
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

    def unit(self, name: str) -> Unit:
        """The unit called ``name``.

        Raises:
            AdcError: if no unit has that name (the message lists a few).
        """
        try:
            return self._by_name[name]
        except KeyError:
            names = [u.name for u in self.units]
            shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            raise AdcError(f"policy names unit {name!r}, which is not a prunable unit of this model; units: {shown}") from None

    def __iter__(self) -> Iterator[Unit]:
        return iter(self.units)

    def __len__(self) -> int:
        return len(self.units)


def _layer_records(model: nn.Module, example_input: torch.Tensor) -> tuple[list[str], dict[str, tuple], dict[str, tuple]]:
    """Run the model once, recording conv/linear execution order and shapes."""
    order: list[str] = []
    in_shapes: dict[str, tuple] = {}
    out_shapes: dict[str, tuple] = {}
    handles = []

    def hook(name: str):
        def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if name not in in_shapes:
                order.append(name)
                in_shapes[name] = tuple(inputs[0].shape)
                out_shapes[name] = tuple(output.shape)

        return record

    for name, module in model.named_modules():
        if isinstance(module, LAYER_TYPES):
            handles.append(module.register_forward_hook(hook(name)))
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        for h in handles:
            h.remove()
    return order, in_shapes, out_shapes


@contextlib.contextmanager
def _name_failing_module(model: nn.Module) -> Iterator[list[str]]:
    """Track the modules being run, to name the one that raised.

    Yields a stack of qualified module names. A module's forward hook never
    runs when its forward raises, so after an exception the stack still holds
    the chain of running modules and its top is the innermost one that failed;
    an empty stack means the failure happened outside any module's forward.
    """
    stack: list[str] = []
    handles = []
    for name, module in model.named_modules():
        def pre(m, a, name=name):
            stack.append(name or "<model>")

        def post(m, a, o):
            if stack:
                stack.pop()

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))
    try:
        yield stack
    finally:
        for h in handles:
            h.remove()


def _describe_failure(model: nn.Module, stack: list[str]) -> str:
    """``module 'layer1.0.conv1' (Conv2d)`` for the innermost module still running, if any."""
    if not stack:
        return ""
    name = stack[-1]
    module = model if name == "<model>" else model.get_submodule(name)
    return f"module {name!r} ({type(module).__name__})"


def _trace(model: nn.Module, example_input: torch.Tensor) -> tp.DependencyGraph:
    """Build Torch-Pruning's dependency graph, turning failures into one line."""
    with _name_failing_module(model) as stack, torch.enable_grad():
        try:
            return tp.DependencyGraph().build_dependency(model, example_inputs=example_input, verbose=False)
        except Exception as exc:  # torch-pruning and user models raise anything
            where = _describe_failure(model, stack) or "torch-pruning's dependency analysis"
            raise AdcError(f"cannot trace {type(model).__name__} for pruning: {where} failed with {one_line(exc)}") from exc


def _is_depthwise(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1 and module.groups == module.in_channels


def analyze(model: nn.Module, example_input: torch.Tensor) -> ModelGraph:
    """Trace ``model`` and return its prunable units and cost tables.

    Args:
        model: Any CNN (or MLP) built from standard layers.
        example_input: One input batch of the shape the model will see
            (batch size 1 is enough; costs are per sample).

    Returns:
        The :class:`ModelGraph`; ``graph.units`` lists units in execution order.

    Raises:
        AdcError: if the model cannot be run or traced; names the module.
    """
    was_training = model.training
    model.eval()
    try:
        with _name_failing_module(model) as stack:
            try:
                order, in_shapes, out_shapes = _layer_records(model, example_input)
            except Exception as exc:  # user models raise anything
                where = _describe_failure(model, stack) or "its forward"
                raise AdcError(
                    f"model {type(model).__name__} fails on an input of shape {tuple(example_input.shape)}: "
                    f"{where} raised {one_line(exc)}"
                ) from exc
        if not order:
            raise AdcError(f"model {type(model).__name__} has no conv or linear layer to prune")
        dg = _trace(model, example_input)
    finally:
        model.train(was_training)

    modules = dict(model.named_modules())
    layers = _layer_costs(modules, order, in_shapes, out_shapes, example_input.shape[0])
    other_params, constant_params = _other_params(modules, {lc.name for lc in layers})
    units = _units(dg, modules, order, in_shapes)
    out_terms, in_terms, other_terms = _coupling(units, layers, other_params)
    graph = ModelGraph(units, layers, other_params, out_terms, in_terms, other_terms, constant_params,
                       tuple(example_input.shape), order[-1])
    # Per-unit dependent MACs / params: the cost that pruning the unit touches.
    macs, params = graph.layer_costs(graph.channels.copy())
    for j, u in enumerate(units):
        touched = (out_terms[:, j] > 0) | (in_terms[:, j] > 0)
        u.macs = int(round(macs[touched].sum()))
        u.params = int(round(params[touched].sum()))
    return graph


def _layer_costs(modules: dict[str, nn.Module], order: list[str], in_shapes: dict[str, tuple],
                 out_shapes: dict[str, tuple], batch: int) -> list[LayerCost]:
    """Every conv/linear layer the forward pass ran, in execution order, with its unpruned shape."""
    layers: list[LayerCost] = []
    for name in order:
        m = modules[name]
        out_shape = out_shapes[name]
        if isinstance(m, nn.Linear):
            positions = math.prod(out_shape) // (batch * m.out_features)
            layers.append(LayerCost(name, m.in_features, m.out_features, 1, False, 1, positions, m.bias is not None,
                                    math.prod(in_shapes[name]) // (batch * m.in_features)))
        else:
            positions = math.prod(out_shape[2:]) if len(out_shape) > 2 else 1
            layers.append(
                LayerCost(name, m.in_channels, m.out_channels, m.groups, _is_depthwise(m),
                          math.prod(m.kernel_size), positions, m.bias is not None,
                          math.prod(in_shapes[name][2:]) if len(in_shapes[name]) > 2 else 1)
            )
    return layers


def _other_params(modules: dict[str, nn.Module], layer_names: set[str]) -> tuple[list[tuple[str, int, int]], int]:
    """Modules besides the layers that own parameters (batch norms, layer norms, PReLU).

    Their channel-sized parameters shrink with the unit; anything else is constant.

    Returns:
        ``(module name, channel-dim params numel, channels)`` per module, and the constant parameter count.
    """
    other_params: list[tuple[str, int, int]] = []
    constant_params = 0
    for name, m in modules.items():
        own = list(m.parameters(recurse=False))
        if not own or name in layer_names:
            continue
        if isinstance(m, LAYER_TYPES):  # a layer the forward pass never ran
            constant_params += sum(p.numel() for p in own)
            continue
        channels = own[0].shape[0] if own[0].dim() > 0 else 0
        scaled = sum(p.numel() for p in own if p.dim() > 0 and p.shape[0] == channels)
        constant_params += sum(p.numel() for p in own) - scaled
        if channels:
            other_params.append((name, scaled, channels))
    return other_params, constant_params


def _units(dg: tp.DependencyGraph, modules: dict[str, nn.Module], order: list[str],
           in_shapes: dict[str, tuple]) -> list[Unit]:
    """One unit per dependency group whose root is a conv/linear output; the classifier's outputs excluded."""
    name_of = {m: n for n, m in modules.items()}
    exec_index = {name: i for i, name in enumerate(order)}
    raw_groups = dg.get_all_groups(ignored_layers=[modules[order[-1]]], root_module_types=LAYER_TYPES)
    units: list[Unit] = []
    for group in raw_groups:
        items = []
        for item in group.items:
            target = item.dep.target.module
            if not isinstance(target, nn.Module) or target not in name_of:
                continue
            handler = item.dep.handler
            dim = "out" if dg.is_out_channel_pruning_fn(handler) else "in" if dg.is_in_channel_pruning_fn(handler) else None
            if dim is None:
                continue
            items.append((name_of[target], dim, np.asarray(item.idxs, dtype=np.int64),
                          np.asarray(item.root_idxs, dtype=np.int64)))
        unit = _unit_of_group(items, modules, exec_index, in_shapes)
        if unit is not None:
            units.append(unit)
    units.sort(key=lambda u: exec_index[u.name])
    for i, u in enumerate(units):
        u.index = i
    return units


def _unit_of_group(items: list[tuple[str, str, np.ndarray, np.ndarray]], modules: dict[str, nn.Module],
                   exec_index: dict[str, int], in_shapes: dict[str, tuple]) -> Unit | None:
    """The unit of one dependency group (its members re-numbered in the root layer's channels), or None."""
    roots = [it for it in items if it[1] == "out" and it[0] in exec_index]
    if not roots:
        return None
    root_name = min(roots, key=lambda it: exec_index[it[0]])[0]
    root = modules[root_name]
    channels = root.out_features if isinstance(root, nn.Linear) else root.out_channels
    if channels < 2:
        return None
    # Root numbering: re-express every item's root indices in the root layer's channels.
    root_item = next(it for it in items if it[0] == root_name and it[1] == "out")
    remap = np.full(int(max(it[3].max() for it in items if len(it[3])) + 1), -1, dtype=np.int64)
    remap[root_item[3]] = root_item[2]
    members: list[Member] = []
    for mod, dim, idxs, root_idxs in items:
        mapped = remap[root_idxs]
        keep = mapped >= 0
        members.append(Member(mod, dim, idxs[keep], mapped[keep]))
    conv_members = [modules[m.module] for m in members if isinstance(modules[m.module], nn.modules.conv._ConvNd)]
    channel_groups = max([c.groups for c in conv_members if c.groups > 1 and not _is_depthwise(c)] or [1])
    if channels % channel_groups:
        return None
    kind = ("grouped" if channel_groups > 1 else
            "depthwise" if any(_is_depthwise(c) for c in conv_members) else
            "linear" if isinstance(root, nn.Linear) else "conv")
    in_shape = in_shapes[root_name]
    if isinstance(root, nn.Linear):
        in_ch, out_ch, kernel, stride, groups, h, w = root.in_features, root.out_features, 1, 1, 1, 1, 1
    else:
        in_ch, out_ch, groups = root.in_channels, root.out_channels, root.groups
        kernel, stride = root.kernel_size[0], root.stride[0]
        h = in_shape[2] if len(in_shape) > 2 else 1
        w = in_shape[3] if len(in_shape) > 3 else 1
    return Unit(root_name, 0, kind, channels, channel_groups, in_ch, out_ch, kernel, stride, groups, h, w, members=members)


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


def find_units(model: nn.Module, example_input: torch.Tensor) -> list[Unit]:
    """The prunable units of ``model``, in execution order.

    Args:
        model: The network.
        example_input: An input batch of the right shape.

    Returns:
        One :class:`Unit` per dependency group of channels.
    """
    return analyze(model, example_input).units
