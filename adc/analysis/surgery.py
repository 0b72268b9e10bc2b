"""Physical channel removal: cut given channels out of a model's modules and loose parameters.

Pure structure: which channels go comes from a :class:`~adc.analysis.units.ModelGraph`
and a choice of kept channels; this module only slices the tensors, with
Torch-Pruning's per-layer pruning functions for modules. It sits in the analysis
layer because analysis itself prunes trial copies to find which units are
really prunable (:mod:`adc.analysis.verify`); :mod:`adc.pruning` builds its
pruned models with the same function.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from adc.analysis.units import ModelGraph
from adc.utils.errors import AdcError


def remove_channels(model: nn.Module, graph: ModelGraph, keep: Mapping[str, Iterable[int]]) -> dict[str, dict[str, np.ndarray]]:
    """Cut, in place, every channel of ``model`` that ``keep`` does not keep.

    Args:
        model: A model of the architecture ``graph`` was traced from, unpruned.
        graph: Its graph.
        keep: Unit name -> kept channel indices; units not named keep all.

    Returns:
        The removed channels per module (or parameter) and dimension, in unpruned numbering.
    """
    removed = graph.removed_channels(keep)
    cut_channels(model, removed, graph.parameter_axes())
    return removed


def cut_channels(model: nn.Module, removed: Mapping[str, Mapping[str, np.ndarray]], axes: Mapping[str, int]) -> None:
    """Remove, in place, the given channels of each named module or loose parameter.

    Args:
        model: The model to cut.
        removed: Module (or parameter) name -> ``{"out"|"in": channel indices}``.
        axes: Parameter name -> the dimension that shrinks, for loose parameters.
    """
    modules = dict(model.named_modules())
    for name, dims in removed.items():
        if name in axes:
            _cut_parameter(model, name, axes[name], _union(dims))
        else:
            _cut_module(modules[name], dims)


def _union(dims: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.union1d(dims.get("out", np.empty(0, np.int64)), dims.get("in", np.empty(0, np.int64)))


def _cut_module(module: nn.Module, dims: Mapping[str, np.ndarray]) -> None:
    """Cut one module's channels with Torch-Pruning's layer functions."""
    pruner = tp.pruner.function.PrunerBox.get(tp.ops.module2type(module))
    if pruner is None:
        raise AdcError(f"cannot prune module of type {type(module).__name__}: torch-pruning has no pruning function for it")
    if pruner.prune_in_channels == pruner.prune_out_channels:
        # Batch norms, depthwise convs: one channel dimension; prune it once.
        pruner.prune_out_channels(module, _union(dims).tolist())
        return
    if "out" in dims:
        pruner.prune_out_channels(module, dims["out"].tolist())
    if "in" in dims:
        pruner.prune_in_channels(module, dims["in"].tolist())


def _cut_parameter(model: nn.Module, name: str, axis: int, idxs: np.ndarray) -> None:
    """Replace a loose parameter by the slice that keeps every index but ``idxs`` along ``axis``."""
    owner_name, _, attr = name.rpartition(".")
    owner = model.get_submodule(owner_name)
    old = getattr(owner, attr)
    keep = torch.as_tensor(np.setdiff1d(np.arange(old.shape[axis]), idxs), dtype=torch.long, device=old.device)
    setattr(owner, attr, nn.Parameter(old.detach().index_select(axis, keep).clone(), requires_grad=old.requires_grad))
