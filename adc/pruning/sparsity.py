"""Sparsity regularisers: a short sparse fine-tune that makes a network easier to prune.

Added to every batch's loss by :func:`adc.inputs.finetune.finetune`
(``extra_loss``), a regulariser drives whole prunable channels towards zero,
so that pruning them later costs less accuracy. Both act on the prunable
units of the model's graph, the channels a search can remove:

- ``slimming``: L1 on the batch-norm scales (Network Slimming, Liu et al., ICCV 2017).
- ``group_lasso``: the group lasso of structured sparsity learning (SSL, Wen et al.,
  NeurIPS 2016), one group per unit channel: the L2 norm of every weight the
  channel owns (its filters and the next layers' input columns).

Each entry says what it shrinks (:attr:`Sparsity.target`), so a fine-tune can
report it before and after.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from adc.analysis.graph import ModelGraph
from adc.pruning.criteria.base import is_layer, is_norm, member_rows
from adc.utils.registry import Registry

Regulariser = Callable[[nn.Module], torch.Tensor]
"""``regulariser(model)`` -> the penalty (a scalar tensor, differentiable) for the model's current weights."""


@dataclass(frozen=True)
class Sparsity:
    """A registered regulariser.

    Attributes:
        penalty: ``penalty(model, graph)`` -> the unscaled penalty (the regulariser is ``strength`` times it).
        default_strength: The strength used when none is given.
        target: What it shrinks, in words (for reports).
    """

    penalty: Callable[[nn.Module, ModelGraph], torch.Tensor]
    default_strength: float
    target: str

    def regulariser(self, graph: ModelGraph, strength: float | None = None) -> Regulariser:
        """The loss term for a model of ``graph``'s architecture, at ``strength`` (default: :attr:`default_strength`)."""
        scale = self.default_strength if strength is None else float(strength)
        return lambda model: scale * self.penalty(model, graph)


SPARSITY: Registry[Sparsity] = Registry("sparsity regulariser")


def _modules(model: nn.Module) -> dict[str, nn.Module]:
    return dict(model.named_modules())


def bn_scale_l1(model: nn.Module, graph: ModelGraph) -> torch.Tensor:
    """Sum of |gamma| over the batch norms of the prunable units (each channel once per batch norm)."""
    modules = _modules(model)
    names = sorted({m.module for u in graph.units for m in u.layer_members if m.dim == "out"})
    terms = [modules[n].weight.abs().sum() for n in names if is_norm(modules[n]) and modules[n].weight is not None]
    return torch.stack(terms).sum() if terms else next(model.parameters()).sum() * 0.0


def channel_group_norms(model: nn.Module, graph: ModelGraph) -> torch.Tensor:
    """Sum over every unit channel of the L2 norm of all conv / linear weights that channel owns."""
    modules = _modules(model)
    total = []
    for unit in graph.units:
        squares = None
        for member in unit.layer_members:
            module = modules[member.module]
            if not is_layer(module) or len(member.idxs) == 0:
                continue
            rows = member_rows(module, member, module.weight, detach=False).pow(2).sum(1)
            root = torch.as_tensor(member.root_idxs, dtype=torch.long, device=rows.device)
            part = torch.zeros(unit.channels, dtype=rows.dtype, device=rows.device).index_add(0, root, rows)
            squares = part if squares is None else squares + part
        if squares is not None:
            total.append(torch.sqrt(squares + 1e-12).sum())
    return torch.stack(total).sum() if total else next(model.parameters()).sum() * 0.0


SPARSITY.register("slimming", Sparsity(bn_scale_l1, 1e-4, "sum of |batch-norm scale| of the prunable channels"))
SPARSITY.register("group_lasso", Sparsity(channel_group_norms, 1e-4,
                                         "sum of the L2 norms of the prunable channels' weight groups"))
