"""Channel groups from Torch-Pruning's dependency graph, traced so that one odd operation cannot sink a model.

Torch-Pruning's ``DependencyGraph`` follows every output channel of every
conv/linear layer through the network and lists what must lose the same
channel (batch norms, the next layers' inputs, residual partners, depthwise
convolutions, concatenated consumers, loose parameters such as a layer scale).
Its index bookkeeping for reshapes, concatenations and splits is heuristic:
on some models it raises (ShuffleNet's channel shuffle divides by zero) or
multiplies indices without bound (Swin's window reshapes filled 24 GiB). Here
each such operation's mapping is worked out on its own, a failure is recorded
against that operation instead of aborting the trace, and any group that
passes through it is excluded with the reason; index lists are capped so a
runaway mapping stops early. Since nothing is pruned while groups are read,
the mappings are computed once rather than once per group as Torch-Pruning
does (densenet201: 8.7 s -> well under a second).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch_pruning as tp
from torch import nn
from torch_pruning.dependency import index_mapping

from adc.analysis.units import LAYER_TYPES
from adc.utils.formatting import one_line

_OP = tp.ops.OPTYPE
_UPDATERS = {
    _OP.CONCAT: index_mapping.update_concat_index_mapping,
    _OP.SPLIT: index_mapping.update_split_index_mapping,
    _OP.RESHAPE: index_mapping.update_reshape_index_mapping,
    _OP.UNBIND: index_mapping.update_unbind_index_mapping,
    _OP.EXPAND: index_mapping.update_expand_index_mapping,
    _OP.SLICE: index_mapping.update_slice_index_mapping,
}


class _TooManyIndices(Exception):
    """A group's index bookkeeping grew past the cap: the group cannot be followed."""


@dataclass
class GroupItem:
    """One module (or loose parameter) dimension of a channel group, in Torch-Pruning's numbering."""

    target: str
    dim: str
    idxs: np.ndarray
    root_idxs: np.ndarray
    axis: int | None = None  # the dimension that shrinks, for a loose parameter


@dataclass
class Traced:
    """What tracing found.

    Attributes:
        groups: ``(root layer, items)`` for every channel group whose root is a conv/linear output.
        excluded: ``(root layer, reason)`` for groups Torch-Pruning could not follow.
        loose_parameters: Parameters outside any prunable module, with the dimension Torch-Pruning prunes.
    """

    groups: list[tuple[str, list[GroupItem]]] = field(default_factory=list)
    excluded: list[tuple[str, str]] = field(default_factory=list)
    loose_parameters: dict[str, int] = field(default_factory=dict)


def trace_groups(model: nn.Module, example_input: torch.Tensor, classifier: nn.Module, exec_index: dict[str, int],
                 *, max_indices: int, max_group_indices: int, max_group_deps: int) -> Traced:
    """Trace ``model`` and read one channel group per conv/linear root layer (the classifier's outputs excluded).

    Args:
        model: The network, in eval mode.
        example_input: An input batch.
        classifier: The output layer, whose outputs are never pruned.
        exec_index: Execution position of every conv/linear layer the forward pass ran; an
            excluded group is named after its first layer in this order.
        max_indices: Cap on the channel indices one mapping may produce.
        max_group_indices: Cap on the channel indices one group may hold in all (the work of following it).
        max_group_deps: Cap on the dependencies one group may have.

    Raises:
        Exception: whatever the model's forward or Torch-Pruning's graph construction raises.
    """
    guarded = _guarded_index_mapping(max_indices, max_group_indices, max_group_deps)
    with guarded as (failures, budget), _gc_paused(), torch.enable_grad():
        # forward_fn: Torch-Pruning's default retries a failed call with the input unpacked, hiding the real error.
        dg = tp.DependencyGraph().build_dependency(model, example_inputs=example_input, verbose=False,
                                                   forward_fn=lambda m, x: m(x))
        names: dict[int, str] = {id(m): n for n, m in model.named_modules()}
        names.update({id(p): n for n, p in model.named_parameters()})
        traced = Traced(loose_parameters={names[id(p)]: int(d) for p, d in dg.unwrapped_parameters if id(p) in names})
        visited: set[int] = set()
        for module in list(dg.module2node):
            if not isinstance(module, LAYER_TYPES) or module is classifier or id(module) in visited:
                continue
            pruner = dg.get_pruner_of_module(module)
            if pruner is None or pruner.get_out_channels(module) is None:
                continue
            root = names[id(module)]
            budget.reset()
            try:
                group = dg.get_pruning_group(module, pruner.prune_out_channels, list(range(pruner.get_out_channels(module))))
            except Exception as exc:  # torch-pruning's heuristics raise anything; a capped group raises _TooManyIndices
                why = f" ({exc})" if isinstance(exc, _TooManyIndices) else f": {one_line(exc)}"
                traced.excluded.append((root, f"torch-pruning cannot follow its channels{why}"))
                # The layers reached so far share the group's fate: do not start over from each of them.
                visited.update(id(d.target.module) for d in budget.reached
                               if isinstance(d.target.module, LAYER_TYPES) and dg.is_out_channel_pruning_fn(d.handler))
                continue
            _read_group(dg, group, root, classifier, names, exec_index, failures, visited, traced)
    return traced


def _read_group(dg: tp.DependencyGraph, group: tp.dependency.Group, root: str, classifier: nn.Module,
                names: dict[int, str], exec_index: dict[str, int], failures: dict[object, str], visited: set[int],
                traced: Traced) -> None:
    """Add one Torch-Pruning group to ``traced``, as plain items, or as an exclusion with its reason."""
    items: list[GroupItem] = []
    through: list[str] = []
    holds_classifier = False
    for item in group.items:
        node, handler = item.dep.target, item.dep.handler
        if node in failures:
            through.append(failures[node])
        target = node.module
        if id(target) not in names:
            continue
        dim = "out" if dg.is_out_channel_pruning_fn(handler) else "in" if dg.is_in_channel_pruning_fn(handler) else None
        if dim is None:
            continue
        if dim == "out" and isinstance(target, nn.Module):
            visited.add(id(target))
            holds_classifier |= target is classifier
        axis = int(node.pruning_dim) if isinstance(target, nn.Parameter) else None
        items.append(GroupItem(names[id(target)], dim, np.asarray(item.idxs, dtype=np.int64),
                               np.asarray(item.root_idxs, dtype=np.int64), axis))
    outs = [it.target for it in items if it.dim == "out" and it.target in exec_index]
    root = min(outs, key=exec_index.__getitem__) if outs else root
    if holds_classifier:
        traced.excluded.append((root, "its channels are the classifier's outputs"))
    elif through:
        traced.excluded.append((root, f"its channels pass through {through[0]}, whose channel mapping torch-pruning "
                                      "cannot work out"))
    else:
        traced.groups.append((root, items))


def _op_name(node: object) -> str:
    grad_fn = getattr(node, "grad_fn", None)
    return grad_fn.name() if grad_fn is not None and hasattr(grad_fn, "name") else type(getattr(node, "module", node)).__name__


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector: following groups allocates millions of small index
    tuples, and the collector rescanning the growing heap made it 4x slower (MaxViT: 35 s -> 9 s)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class _Budget:
    """Work done following the current group (channel indices produced, dependencies added), against caps."""

    def __init__(self, max_indices: int, max_deps: int) -> None:
        self.max_indices, self.max_deps = max_indices, max_deps
        self.indices = self.deps = 0
        self.reached: list[object] = []  # dependencies added so far, to skip their layers as roots if the group is given up

    def reset(self) -> None:
        self.indices = self.deps = 0
        self.reached = []

    def spend(self, indices: int, deps: int = 0) -> None:
        self.indices += indices
        self.deps += deps
        if self.indices > self.max_indices:
            raise _TooManyIndices(f"following the group takes over {self.max_indices} channel indices")
        if self.deps > self.max_deps:
            raise _TooManyIndices(f"the group has over {self.max_deps} dependencies")


@contextlib.contextmanager
def _guarded_index_mapping(max_indices: int, max_group_indices: int,
                           max_group_deps: int) -> Iterator[tuple[dict[object, str], _Budget]]:
    """Swap Torch-Pruning's index-mapping update for one that records failures per operation, runs once, and is capped.

    Groups are capped too: following a group costs time quadratic in its
    number of dependencies in Torch-Pruning (Swin-B's took 200 s at 64x64,
    MaxViT's 220 s at 224x224 before the caps), while the largest legitimate
    groups among torchvision's models hold about 250 thousand indices in 330
    dependencies (ConvNeXt-L's stage width). The caller resets the yielded
    budget before each group.

    Yields the failures (operation node -> ``"ViewBackward0 (ZeroDivisionError: ...)"``) and the budget.
    Torch-Pruning is restored on exit, even after an error.
    """
    failures: dict[object, str] = {}
    budget = _Budget(max_group_indices, max_group_deps)
    done: set[int] = set()
    update, flatten_call = index_mapping.update_index_mapping, index_mapping._FlattenIndexMapping.__call__
    add_dep = tp.dependency.group.Group.add_dep

    def update_once(graph: tp.DependencyGraph) -> None:
        if id(graph) in done:  # nothing is pruned while groups are read: the mappings cannot change
            return
        for node in list(graph.module2node.values()):
            updater = _UPDATERS.get(node.type)
            if updater is None:
                continue
            try:
                updater(graph, node)
            except Exception as exc:  # torch-pruning's shape inference raises anything
                failures[node] = f"{_op_name(node)} ({one_line(exc)})"
        done.add(id(graph))

    def capped_call(self: index_mapping._FlattenIndexMapping, idxs: list) -> list:
        if not self.reverse:
            if len(idxs) * self._stride > max_indices:
                raise _TooManyIndices(f"a reshape maps {len(idxs)} channel indices to {self._stride} each, "
                                      f"over {max_indices}")
            budget.spend(len(idxs) * self._stride)
        return flatten_call(self, idxs)

    def capped_add_dep(self: tp.dependency.group.Group, dep: object, idxs: list) -> None:
        budget.reached.append(dep)
        budget.spend(len(idxs), 1)
        add_dep(self, dep, idxs)

    index_mapping.update_index_mapping = update_once
    index_mapping._FlattenIndexMapping.__call__ = capped_call
    tp.dependency.group.Group.add_dep = capped_add_dep
    try:
        yield failures, budget
    finally:
        index_mapping.update_index_mapping = update
        index_mapping._FlattenIndexMapping.__call__ = flatten_call
        tp.dependency.group.Group.add_dep = add_dep
