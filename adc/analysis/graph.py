"""Prunable units of a network: which channels must be removed together.

Torch-Pruning's ``DependencyGraph`` traces the model once and tells, for every
output channel of every conv/linear layer, which other parameters (batch norms,
the next layers' input channels, residual partners, depthwise convolutions,
concatenated consumers, the linear layer after a flatten, loose parameters such
as a layer scale) must lose the same channel (:mod:`adc.analysis.tracing`).
One such dependency group is one *unit*: the agent picks one sparsity per unit.
The classifier's outputs and the network's inputs are never pruned.

A group becomes a unit only if it can really be pruned as analysed: groups
Torch-Pruning cannot follow, and groups only part of whose channels reach a
module, are left out here; groups whose pruning, tried on copies of the model,
breaks it or its figures are left out by :mod:`adc.analysis.verify`. Each is
listed with its reason in ``ModelGraph.excluded``.

The trace is done once per model; everything the search needs later (exact
costs, the indices each module loses) is precomputed as plain arrays
(:mod:`adc.analysis.units`), so pruning a copy and pricing a policy never trace again.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from adc.analysis.counting import count
from adc.analysis.tracing import GroupItem, Traced, trace_groups
from adc.analysis.units import LAYER_TYPES, LayerCost, Member, ModelGraph, Unit
from adc.analysis.verify import verify_units
from adc.utils.errors import AdcError
from adc.utils.formatting import one_line

__all__ = ["LAYER_TYPES", "LayerCost", "Member", "ModelGraph", "Unit", "analyze", "find_units"]

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


def _trace(model: nn.Module, example_input: torch.Tensor, order: list[str]) -> Traced:
    """Torch-Pruning's channel groups, turning a failure of the whole trace into one line."""
    modules = dict(model.named_modules())
    # Cap on the indices one reshape mapping may produce: a few times the widest layer input, which
    # every legitimate mapping (a flatten before a classifier) stays under.
    widest = max((m.in_features if isinstance(m, nn.Linear) else m.in_channels) for m in map(modules.get, order))
    with _name_failing_module(model) as stack:
        try:
            return trace_groups(model, example_input, modules[order[-1]], {n: i for i, n in enumerate(order)},
                                max_indices=max(4 * widest, 1 << 14), max_group_indices=1 << 20,
                                max_group_deps=2048)
        except Exception as exc:  # torch-pruning and user models raise anything
            where = _describe_failure(model, stack) or "torch-pruning's dependency analysis"
            raise AdcError(f"cannot trace {type(model).__name__} for pruning: {where} failed with {one_line(exc)}") from exc


def _is_depthwise(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1 and module.groups == module.in_channels


def analyze(model: nn.Module, example_input: torch.Tensor, *, verify: bool = True) -> ModelGraph:
    """Trace ``model`` and return its prunable units and cost tables.

    Every channel group Torch-Pruning reports is a candidate; those that cannot
    really be pruned as analysed are left out, each listed with its reason in
    ``graph.excluded``: groups Torch-Pruning cannot follow, groups only part of
    whose channels reach a module (so the cost would depend on which channels
    go), and -- found by pruning trial copies (:mod:`adc.analysis.verify`) --
    groups whose removal breaks the forward pass, leaves a layer with other
    channels than predicted, changes costs the analysis does not model, or
    makes the kept channels compute something else.

    Args:
        model: Any CNN (or MLP, or vision transformer) built from standard layers.
        example_input: One input batch of the shape the model will see
            (batch size 1 is enough; costs are per sample).
        verify: Prune trial copies to confirm every unit (the default). False
            skips it, for rebuilding a model whose units were confirmed when it was saved.

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
        traced = _trace(model, example_input, order)
        modules = dict(model.named_modules())
        layers = _layer_costs(modules, order, in_shapes, out_shapes, example_input.shape[0])
        other_params, constant_params = _other_params(model, {lc.name for lc in layers}, traced.loose_parameters)
        units, excluded = _units(traced, modules, order, in_shapes)
        graph = ModelGraph(units, layers, other_params, constant_params, tuple(example_input.shape), order[-1],
                           excluded=traced.excluded + excluded)
        # FLOPs outside the layer formulas (attention products, functional matmuls) are measured once here;
        # verification then checks that no unit changes them.
        graph.constant_flops = count(model, example_input).flops - graph.costs(graph.channels).flops
        if verify:
            graph = verify_units(model, example_input, graph)
    finally:
        model.train(was_training)
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


def _other_params(model: nn.Module, layer_names: set[str],
                  loose: dict[str, int]) -> tuple[list[tuple[str, int, int]], int]:
    """Parameters outside the layers: of other modules (norms, PReLU) and loose ones (a layer scale, a class token).

    A module's channel-sized parameters shrink with the unit that prunes it, a
    loose parameter along the dimension Torch-Pruning prunes; anything else is constant.

    Returns:
        ``(module or parameter name, channel-dim params numel, channels)`` per entry, and the constant parameter count.
    """
    other_params: list[tuple[str, int, int]] = []
    constant_params = 0
    for name, m in model.named_modules():
        own = [p for pname, p in m.named_parameters(recurse=False) if f"{name}.{pname}".lstrip(".") not in loose]
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
    for name, axis in loose.items():
        p = model.get_parameter(name)
        other_params.append((name, p.numel(), p.shape[axis]))
    return other_params, constant_params


def _units(traced: Traced, modules: dict[str, nn.Module], order: list[str],
           in_shapes: dict[str, tuple]) -> tuple[list[Unit], list[tuple[str, str]]]:
    """One unit per channel group rooted at a conv/linear output, and the groups that cannot be units, with why."""
    exec_index = {name: i for i, name in enumerate(order)}
    units: list[Unit] = []
    excluded: list[tuple[str, str]] = []
    for _, items in traced.groups:
        unit, reason = _unit_of_group(items, modules, exec_index, in_shapes)
        if unit is not None:
            units.append(unit)
        elif reason is not None:
            excluded.append(reason)
    units.sort(key=lambda u: exec_index[u.name])
    return units, excluded


def _members(items: list[GroupItem], root_name: str, channels: int) -> tuple[list[Member], str | None]:
    """The group's items re-numbered in the root layer's channels, or why they cannot be.

    Every member must carry each root channel equally often: a member that
    sees only some of them (a slice, a split) would make the cost depend on
    which channels go, which the analytic cost cannot know.
    """
    root_item = next(it for it in items if it.target == root_name and it.dim == "out")
    if sorted(root_item.idxs.tolist()) != list(range(channels)):
        return [], f"only some of its {channels} channels are followed by torch-pruning (sliced or split)"
    remap = np.full(int(max(it.root_idxs.max() for it in items if len(it.root_idxs)) + 1), -1, dtype=np.int64)
    remap[root_item.root_idxs] = root_item.idxs
    members: list[Member] = []
    for it in items:
        if not len(it.idxs):
            continue
        mapped = remap[it.root_idxs]
        seen = np.bincount(mapped[mapped >= 0], minlength=channels)
        if (mapped < 0).any() or seen.min() != seen.max():
            return [], (f"only some of its channels reach {it.target!r} (sliced or split), so its cost would "
                        "depend on which channels go")
        members.append(Member(it.target, it.dim, it.idxs, mapped, it.axis))
    return members, None


def _unit_of_group(items: list[GroupItem], modules: dict[str, nn.Module], exec_index: dict[str, int],
                   in_shapes: dict[str, tuple]) -> tuple[Unit | None, tuple[str, str] | None]:
    """The unit of one dependency group, or None with ``(root, reason)`` (None for groups of layers never run)."""
    roots = [it.target for it in items if it.dim == "out" and it.target in exec_index]
    if not roots:
        return None, None
    root_name = min(roots, key=exec_index.__getitem__)
    root = modules[root_name]
    channels = root.out_features if isinstance(root, nn.Linear) else root.out_channels
    if channels < 2:
        return None, (root_name, "it has a single channel")
    members, reason = _members(items, root_name, channels)
    if reason is not None:
        return None, (root_name, reason)
    conv_members = [modules[m.module] for m in members
                    if not m.is_parameter and isinstance(modules[m.module], nn.modules.conv._ConvNd)]
    channel_groups = max([c.groups for c in conv_members if c.groups > 1 and not _is_depthwise(c)] or [1])
    if channels % channel_groups:
        return None, (root_name, f"a grouped convolution's {channel_groups} groups do not divide its {channels} channels")
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
    unit = Unit(root_name, 0, kind, channels, channel_groups, in_ch, out_ch, kernel, stride, groups, h, w, members=members)
    return unit, None


def find_units(model: nn.Module, example_input: torch.Tensor) -> list[Unit]:
    """The prunable units of ``model``, in execution order.

    Args:
        model: The network.
        example_input: An input batch of the right shape.

    Returns:
        One :class:`Unit` per dependency group of channels that can really be pruned
        (see :func:`analyze` for what is left out).
    """
    return analyze(model, example_input).units
