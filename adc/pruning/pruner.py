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
from torch import nn

from adc.analysis.cost import Policy, check_policy, check_round_to, kept_vector
from adc.analysis.graph import ModelGraph, Unit, analyze
from adc.analysis.surgery import remove_channels
from adc.analysis.verify import pruning_fault
from adc.pruning.criteria import CRITERIA, ScoreContext, as_batches
from adc.pruning.reconstruction import reconstructable, refit
from adc.utils.errors import AdcError

__all__ = ["PRUNING_ATTR", "ChannelPruner", "check_pruned", "prune", "remove_channels"]


PRUNING_ATTR = "adc_pruning"
"""Attribute a pruned copy carries: the kept channels of every unit, the example shape, rounding and criterion."""


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

    Attributes:
        scores: Unit name -> the criterion's score of every channel (higher = keep).
        ranking: Unit name -> channel order, most important first.
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
        self.scores = {u.name: score(ctx, u).detach().double().cpu().numpy() for u in self.graph.units}
        self.ranking = {u.name: _ranking(u, torch.as_tensor(self.scores[u.name])) for u in self.graph.units}
        # Shared with the reconstruction-based criteria: collected once.
        self.statistics = ctx.layer_statistics() if reconstruct else {}

    def to(self, device: str | torch.device) -> ChannelPruner:
        """This pruner with its model and example input on ``device`` (a worker's GPU); the ranking is kept."""
        moved = copy.copy(self)
        moved.model = self.model.to(device)
        moved.example_input = self.example_input.to(device)
        return moved

    def keep_indices(self, policy: Policy) -> dict[str, np.ndarray]:
        """Kept channels (sorted, in each unit's numbering) of every unit under ``policy``."""
        check_policy(self.graph, policy)
        return self.keep_indices_of_counts(np.array([u.kept(float(policy.get(u.name, 0.0)), self.round_to)
                                                     for u in self.graph.units]))

    def prune(self, policy: Policy) -> nn.Module:
        """A physically smaller copy of the model under ``policy``."""
        return self.prune_indices(self.keep_indices(policy))

    def prune_kept(self, kept: np.ndarray) -> nn.Module:
        """A physically smaller copy keeping ``kept[i]`` channels of unit ``i`` (counts already rounded)."""
        return self.prune_indices(self.keep_indices_of_counts(kept))

    def keep_indices_of_counts(self, kept: np.ndarray) -> dict[str, np.ndarray]:
        """Kept channel indices of every unit for kept counts (most important first by the criterion)."""
        keep = {}
        for u, k in zip(self.graph.units, kept):
            k = int(k)
            if not 1 <= k <= u.channels:
                raise AdcError(f"unit {u.name!r} has {u.channels} channels; cannot keep {k}")
            order = self.ranking[u.name]
            if u.channel_groups > 1:
                width = u.channels // u.channel_groups
                local = np.sort(order[: k // u.channel_groups])
                keep[u.name] = (np.arange(u.channel_groups)[:, None] * width + local[None, :]).reshape(-1)
            else:
                keep[u.name] = np.sort(order[:k])
        return keep

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
            "kept": self._kept_in_original(keep),
            "example_shape": list(self.graph.example_shape),
            "round_to": self.round_to,
            "criterion": self.criterion,
        })
        return pruned

    def _kept_in_original(self, keep: Mapping[str, Iterable[int]]) -> dict[str, list[int]]:
        """Kept channels per pruned unit, numbered as in the architecture :func:`adc.load` rebuilds.

        A model that was itself pruned (iterative pruning) records its kept
        channels of the original architecture; its own channel ``i`` of a unit
        is then original channel ``previous[i]``, so the two prunings compose.
        """
        previous = dict((getattr(self.model, PRUNING_ATTR, None) or {}).get("kept") or {})
        kept: dict[str, list[int]] = {}
        for u in self.graph.units:
            local = np.asarray(list(keep[u.name]), dtype=np.int64) if u.name in keep else np.arange(u.channels)
            if u.name in previous:
                kept[u.name] = [int(i) for i in np.asarray(previous[u.name], dtype=np.int64)[local]]
            elif len(local) < u.channels:
                kept[u.name] = [int(i) for i in local]
        for name, indices in previous.items():
            kept.setdefault(name, [int(i) for i in indices])
        return kept


def check_pruned(pruned: nn.Module, graph: ModelGraph, kept: np.ndarray, example_input: torch.Tensor) -> None:
    """Check that a pruned model is what its figures say: it runs, and every layer has the predicted channels.

    Every cost adc reports (MACs, FLOPs, parameters, latency and energy
    predictions) is computed from the kept channels through ``graph``; this
    compares them with the layers of the real model, and counts its FLOPs.

    Raises:
        AdcError: when the forward pass fails, a layer's channels differ from the
            prediction, or the counted FLOPs or parameters differ from the analytic
            ones; names the units that were pruned.
    """
    fault = pruning_fault(pruned, graph, kept, example_input)
    if fault is not None:
        kept = np.asarray(kept, dtype=np.float64)
        pruned_units = [u.name for u, k in zip(graph.units, kept) if k < u.channels]
        shown = ", ".join(pruned_units[:6]) + (f" and {len(pruned_units) - 6} more" if len(pruned_units) > 6 else "")
        raise AdcError(f"{fault}; refusing to report figures the model does not have (pruned units: {shown or 'none'})")


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

    Raises:
        AdcError: for a bad policy, or a pruned model that does not run or whose
            real cost differs from :func:`adc.cost` (see :func:`check_pruned`).
    """
    pruner = ChannelPruner(model, example_input, criterion=criterion, round_to=round_to,
                           calibration=calibration, reconstruct=reconstruct, seed=seed)
    pruned = pruner.prune(policy)
    check_pruned(pruned, pruner.graph, kept_vector(pruner.graph, policy, pruner.round_to), example_input)
    return pruned
