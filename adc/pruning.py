"""Physical channel pruning: a policy in, a really smaller model out.

:class:`ChannelPruner` does the expensive work once per model (trace, channel
ranking by the criterion, reconstruction statistics) and then prunes a fresh
copy for any policy without tracing again: every unit's removed channels are
mapped to each module's own channel numbering through the precomputed group
members, and Torch-Pruning's per-layer pruning functions cut the weights.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from adc.cost import Policy, check_policy, check_round_to
from adc.criteria import CRITERIA, ScoreContext, as_batches
from adc.errors import AdcError
from adc.graph import ModelGraph, Unit, analyze
from adc.reconstruction import collect_statistics, reconstructable, refit
from adc.serialization import PRUNING_ATTR


def _ranking(unit: Unit, scores: torch.Tensor) -> np.ndarray:
    """Channel order, most important first; inside grouped convs, per local position."""
    scores = scores.detach().double().cpu()
    if unit.channel_groups > 1:
        width = unit.channels // unit.channel_groups
        return np.argsort(-scores.view(unit.channel_groups, width).sum(0).numpy(), kind="stable")
    return np.argsort(-scores.numpy(), kind="stable")


class ChannelPruner:
    """Prunes copies of one model for many policies.

    Args:
        model: The trained, unpruned model. It is never modified.
        example_input: An input batch of the right shape.
        criterion: Name in :data:`adc.criteria.CRITERIA` choosing which channels go.
        round_to: Kept channel counts are rounded to multiples of this (8 suits
            most hardware); never to zero.
        calibration: Training batches (DataLoader, list of ``(images, labels)``
            or an image tensor) for data-driven criteria and reconstruction.
        reconstruct: Refit pruned layers by least squares (AMC / ThiNet).
        seed: Seed for the ``random`` criterion and reconstruction sampling.
        graph: A graph already built by :func:`adc.graph.analyze` for ``model``.
    """

    def __init__(
        self,
        model: nn.Module,
        example_input: torch.Tensor,
        *,
        criterion: str = "l1",
        round_to: int = 1,
        calibration: Iterable | torch.Tensor | None = None,
        reconstruct: bool = False,
        seed: int = 0,
        graph: ModelGraph | None = None,
    ) -> None:
        check_round_to(round_to)
        round_to = int(round_to)
        score = CRITERIA.get(criterion)
        self.model = model
        self.example_input = example_input
        self.criterion = criterion
        self.round_to = round_to
        self.graph = graph if graph is not None else analyze(model, example_input)
        batches = as_batches(calibration)
        self.calibration, self.reconstruct, self.seed = batches, reconstruct, seed
        if reconstruct and not batches:
            raise AdcError("reconstruct=True needs calibration data (training batches) to fit the pruned layers")
        ctx = ScoreContext(model, self.graph, batches, seed)
        self.ranking = {u.name: _ranking(u, score(ctx, u)) for u in self.graph.units}
        self.statistics = collect_statistics(model, self.graph, batches, seed=seed) if reconstruct else {}

    def keep_indices(self, policy: Policy) -> dict[str, np.ndarray]:
        """Kept channels (sorted, in each unit's numbering) of every unit under ``policy``."""
        check_policy(self.graph, policy)
        keep = {}
        for u in self.graph.units:
            k = u.kept(float(policy.get(u.name, 0.0)), self.round_to)
            order = self.ranking[u.name]
            if u.channel_groups > 1:
                width = u.channels // u.channel_groups
                local = np.sort(order[: k // u.channel_groups])
                keep[u.name] = (np.arange(u.channel_groups)[:, None] * width + local[None, :]).reshape(-1)
            else:
                keep[u.name] = np.sort(order[:k])
        return keep

    def prune(self, policy: Policy) -> nn.Module:
        """A physically smaller copy of the model under ``policy``."""
        return self.prune_indices(self.keep_indices(policy))

    def prune_indices(self, keep: Mapping[str, Iterable[int]]) -> nn.Module:
        """A copy of the model keeping exactly the given channels of each unit.

        Args:
            keep: Unit name -> kept channel indices; units not named keep all.
        """
        pruned = copy.deepcopy(self.model)
        removed_by_module = remove_channels(pruned, self.graph, keep)
        modules = dict(pruned.named_modules())
        originals = dict(self.model.named_modules()) if self.statistics else {}
        for name, stats in self.statistics.items():
            dims = removed_by_module.get(name)
            if dims and len(dims.get("in", ())):
                original = originals[name]
                n_in = original.in_features if isinstance(original, nn.Linear) else original.in_channels
                n_out = original.out_features if isinstance(original, nn.Linear) else original.out_channels
                kept_in = np.setdiff1d(np.arange(n_in), dims["in"])
                kept_out = np.setdiff1d(np.arange(n_out), dims.get("out", np.empty(0, dtype=np.int64)))
                if reconstructable(modules[name]):
                    refit(modules[name], stats, kept_in, kept_out)
        setattr(pruned, PRUNING_ATTR, {
            "kept": {u.name: [int(i) for i in keep[u.name]] for u in self.graph.units if u.name in keep
                     and len(keep[u.name]) < u.channels},
            "example_shape": list(self.graph.example_shape),
            "round_to": self.round_to,
            "criterion": self.criterion,
        })
        return pruned


def remove_channels(model: nn.Module, graph: ModelGraph, keep: Mapping[str, Iterable[int]]) -> dict[str, dict[str, np.ndarray]]:
    """Cut, in place, every channel of ``model`` that ``keep`` does not keep.

    Args:
        model: A model of the architecture ``graph`` was traced from, unpruned.
        graph: Its graph.
        keep: Unit name -> kept channel indices; units not named keep all.

    Returns:
        The removed channels per module and dimension, in unpruned numbering.
    """
    removed = _removed_channels(graph, keep)
    modules = dict(model.named_modules())
    for name, dims in removed.items():
        _prune_module(modules[name], dims)
    return removed


def _removed_channels(graph: ModelGraph, keep: Mapping[str, Iterable[int]]) -> dict[str, dict[str, np.ndarray]]:
    """Per module and dimension, the channels to remove, in the module's own numbering."""
    out: dict[str, dict[str, list[np.ndarray]]] = {}
    for name, kept in keep.items():
        unit = graph.unit(name)
        kept = np.asarray(list(kept), dtype=np.int64)
        if len(kept) == 0 or kept.min() < 0 or kept.max() >= unit.channels or len(np.unique(kept)) != len(kept):
            raise AdcError(f"kept channels of unit {name!r} must be 1 to {unit.channels} distinct indices in [0, {unit.channels})")
        gone = np.ones(unit.channels, dtype=bool)
        gone[kept] = False
        if not gone.any():
            continue
        for m in unit.members:
            idxs = m.idxs[gone[m.root_idxs]]
            if len(idxs):
                out.setdefault(m.module, {}).setdefault(m.dim, []).append(idxs)
    return {mod: {dim: np.unique(np.concatenate(parts)) for dim, parts in dims.items()} for mod, dims in out.items()}


def _prune_module(module: nn.Module, dims: Mapping[str, np.ndarray]) -> None:
    """Cut one module's channels with Torch-Pruning's layer functions."""
    pruner = tp.pruner.function.PrunerBox.get(tp.ops.module2type(module))
    if pruner is None:
        raise AdcError(f"cannot prune module of type {type(module).__name__}: torch-pruning has no pruning function for it")
    if pruner.prune_in_channels == pruner.prune_out_channels:
        # Batch norms, depthwise convs: one channel dimension; prune it once.
        idxs = np.union1d(dims.get("out", np.empty(0, np.int64)), dims.get("in", np.empty(0, np.int64)))
        pruner.prune_out_channels(module, idxs.tolist())
        return
    if "out" in dims:
        pruner.prune_out_channels(module, dims["out"].tolist())
    if "in" in dims:
        pruner.prune_in_channels(module, dims["in"].tolist())


def prune(
    model: nn.Module,
    example_input: torch.Tensor,
    policy: Policy,
    *,
    criterion: str = "l1",
    round_to: int = 1,
    calibration: Iterable | torch.Tensor | None = None,
    reconstruct: bool = False,
    seed: int = 0,
) -> nn.Module:
    """Return a physically smaller copy of ``model`` pruned by ``policy``.

    Args:
        model: The trained model; left untouched.
        example_input: An input batch of the right shape.
        policy: Unit name (see :func:`adc.find_units`) -> sparsity in [0, 1).
        criterion: Which channels to drop inside a unit (:data:`adc.criteria.CRITERIA`).
        round_to: Kept channel counts are rounded to multiples of this.
        calibration: Training batches for ``taylor``/``apoz`` and reconstruction.
        reconstruct: Refit layers whose inputs were pruned, by least squares.
        seed: Seed for the ``random`` criterion.

    Returns:
        The pruned copy; ``model.adc_pruning`` records the kept channels.
    """
    pruner = ChannelPruner(model, example_input, criterion=criterion, round_to=round_to,
                           calibration=calibration, reconstruct=reconstruct, seed=seed)
    return pruner.prune(policy)
