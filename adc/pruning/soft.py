"""Soft filter pruning: zeroed filters stay trainable and are chosen again every epoch.

Soft filter pruning (SFP, He et al., IJCAI 2018) trains the network to a
target width without removing anything until the end: after every epoch the
filters with the smallest L2 norm are set to zero, but they keep receiving
gradient updates, so a filter zeroed once can grow back and another take its
place. After the last epoch the zeroed channels are removed for real.

adc prunes units (channel groups), so a channel's "filter" is every output
member of the unit: the conv / linear rows that produce it. The channels of a
unit are ranked by their filters' L2 norms (averaged over the unit's layers,
each normalised by its mean), and ``channels - kept`` of them are zeroed.
Zeroing sets those rows (and biases) to 0, as SFP does. For the scoring after
each epoch, the unit's batch-norm shifts and running means of those channels
are zeroed too (:func:`silence`): the channel then outputs exactly 0 in eval
mode, so the zeroed network scores exactly what the pruned one will (the
validation choice of :func:`adc.inputs.finetune.finetune` is made on true
figures). Before the next epoch they are put back (:func:`restore`): during
training the batch norms are untouched, as in SFP, and a zeroed filter gets
gradients through them and can regrow.

Measured on Plain-20 / digits at half the channels: a zeroed filter's first
gradient passes a batch norm whose input has zero variance, so it is scaled
by ``1 / sqrt(eps)`` (about 300): zeroed filters regrow larger than the
trained ones, half of the channels swap at the first re-selection, and a
few-epoch fine-tune does not recover (validation top-1 near chance after 8
epochs; 88% after 3 epochs when the zeroed channels are kept at zero, as
hard pruning does). SFP was designed for long training at 10-40% rates.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from adc.analysis.graph import Member, ModelGraph, Unit, analyze
from adc.inputs.data import DataSplits
from adc.inputs.finetune import FinetuneOptions, finetune, kept_epoch
from adc.pruning.criteria.base import is_layer, is_norm, member_rows
from adc.pruning.criteria.context import ScoreContext
from adc.pruning.pruner import ChannelPruner, check_pruned
from adc.utils.errors import AdcError

Mask = dict[str, list[int]]
"""Unit name -> the channels currently zeroed (sorted)."""


def filter_norms(model: nn.Module, graph: ModelGraph, unit: Unit) -> torch.Tensor:
    """SFP's criterion: the L2 norm of each channel's filters (the unit's output layers' rows, each layer
    normalised by its mean and averaged, :meth:`~adc.pruning.criteria.context.ScoreContext.group_scores`)."""

    def member_scores(module: nn.Module, member: Member) -> torch.Tensor | None:
        if not is_layer(module) or member.dim != "out":
            return None
        return member_rows(module, member, module.weight).pow(2).sum(1).sqrt()

    return ScoreContext(model, graph).group_scores(unit, member_scores)


def select(model: nn.Module, graph: ModelGraph, kept: Mapping[str, int]) -> Mask:
    """The channels to zero now: the ``channels - kept`` weakest filters of every unit (per position in grouped units)."""
    mask: Mask = {}
    for unit in graph.units:
        k = int(kept.get(unit.name, unit.channels))
        if k >= unit.channels:
            continue
        scores = filter_norms(model, graph, unit).numpy()
        groups = unit.channel_groups
        if groups > 1:
            width = unit.channels // groups
            positions = np.argsort(scores.reshape(groups, width).sum(0), kind="stable")[: width - k // groups]
            mask[unit.name] = sorted(int(g * width + p) for g in range(groups) for p in positions)
        else:
            mask[unit.name] = sorted(int(c) for c in np.argsort(scores, kind="stable")[: unit.channels - k])
    return mask


def _members(model: nn.Module, graph: ModelGraph, mask: Mask) -> Iterator[tuple[str, nn.Module, torch.Tensor]]:
    """Every output member of the masked channels: its name, its module in ``model``, its indices of those channels."""
    modules = dict(model.named_modules())
    for name, channels in mask.items():
        unit = graph.unit(name)
        gone = np.zeros(unit.channels, dtype=bool)
        gone[channels] = True
        for member in unit.layer_members:
            idxs = member.idxs[gone[member.root_idxs]]
            if member.dim == "out" and len(idxs):
                yield member.module, modules[member.module], torch.as_tensor(idxs, dtype=torch.long)


def zero_filters(model: nn.Module, graph: ModelGraph, mask: Mask) -> None:
    """SFP's step: set, in place, the rows and biases of the masked channels' filters to 0 (they stay trainable)."""
    with torch.no_grad():
        for _, module, idxs in _members(model, graph, mask):
            if is_layer(module):
                for tensor in (module.weight, module.bias):
                    if tensor is not None:
                        tensor.index_fill_(0, idxs.to(tensor.device), 0.0)


Stash = list[tuple[str, str, torch.Tensor, torch.Tensor]]
"""(module name, tensor name, indices, saved values) of every batch-norm entry :func:`silence` zeroed."""


def silence(model: nn.Module, graph: ModelGraph, mask: Mask) -> Stash:
    """Zero the masked channels' batch-norm shifts and running means, so that with zero filters they output
    exactly 0 in eval mode (as if removed); returns what :func:`restore` puts back."""
    stash: Stash = []
    with torch.no_grad():
        for name, module, idxs in _members(model, graph, mask):
            if is_norm(module):
                for attr in ("bias", "running_mean"):
                    tensor = getattr(module, attr)
                    if tensor is not None:
                        stash.append((name, attr, idxs, tensor[idxs.to(tensor.device)].detach().cpu().clone()))
                        tensor.index_fill_(0, idxs.to(tensor.device), 0.0)
    return stash


def restore(model: nn.Module, stash: Stash) -> None:
    """Undo :func:`silence` on ``model`` (or a copy of it): the batch norms train as they were, so a zeroed
    filter keeps getting gradients through its batch norm, as in SFP."""
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, attr, idxs, values in stash:
            tensor = getattr(modules[name], attr)
            tensor.index_copy_(0, idxs.to(tensor.device), values.to(tensor.device, tensor.dtype))


@dataclass
class SoftPruned:
    """What soft filter pruning hands back.

    Attributes:
        model: The physically pruned model (from the epoch chosen on validation), in eval mode.
        records: :func:`adc.inputs.finetune.finetune`'s records; epoch 0 is the zeroed starting model.
        masks: The zeroed channels after every epoch (index 0: before training).
        kept_epoch: The epoch whose model was pruned.
    """

    model: nn.Module
    records: list[dict[str, Any]]
    masks: list[Mask]
    kept_epoch: int


def soft_prune(model: nn.Module, example_input: torch.Tensor, kept: Mapping[str, int], splits: DataSplits,
               options: FinetuneOptions | None = None, *, extra_loss: Callable[[nn.Module], torch.Tensor] | None = None,
               teacher: nn.Module | None = None, progress: Callable[[dict[str, Any]], None] | None = None,
               **settings: Any) -> SoftPruned:
    """Train ``model`` with soft filter pruning to ``kept`` channels per unit, then prune it for real.

    Args:
        model: The (unpruned, or earlier pruned) trained model; not modified.
        example_input: An input batch of the right shape (to trace the units).
        kept: Unit name -> channels to keep (units not named keep all), e.g. a search's ``kept``.
        splits: Trains on ``train``, chooses the epoch on ``val``.
        options, extra_loss, teacher, progress, settings: As :func:`adc.inputs.finetune.finetune`.

    Raises:
        AdcError: a unit name the model lacks, a count out of range, or a pruned model whose
            figures differ from the analysis (:func:`~adc.pruning.pruner.check_pruned`).
    """
    graph = analyze(model, example_input)
    for name, k in kept.items():
        unit = graph.unit(name)
        if not 1 <= int(k) <= unit.channels or int(k) % unit.channel_groups:
            raise AdcError(f"soft pruning: unit {name!r} has {unit.channels} channels; cannot keep {k}")
    start = copy.deepcopy(model)
    masks = [select(start, graph, kept)]
    zero_filters(start, graph, masks[0])
    stashes = [silence(start, graph, masks[0])]

    def train_again(student: nn.Module, epoch: int) -> None:
        restore(student, stashes[-1])

    def reselect(student: nn.Module, epoch: int) -> None:
        masks.append(select(student, graph, kept))
        zero_filters(student, graph, masks[-1])
        stashes.append(silence(student, graph, masks[-1]))

    best, records = finetune(start, splits, options, teacher=teacher, extra_loss=extra_loss, on_epoch_start=train_again,
                             on_epoch_end=reselect, progress=progress, **settings)
    epoch = kept_epoch(records)["epoch"]
    mask = masks[epoch]
    keep = {u.name: np.setdiff1d(np.arange(u.channels), mask.get(u.name, [])) for u in graph.units}
    pruner = ChannelPruner(best, example_input.to(next(best.parameters()).device), criterion="l1", graph=graph)
    pruned = pruner.prune_indices(keep)
    with torch.no_grad():
        check_pruned(pruned, graph, np.array([len(keep[u.name]) for u in graph.units], dtype=np.float64),
                     pruner.example_input)
    return SoftPruned(pruned.eval(), records, masks, epoch)
