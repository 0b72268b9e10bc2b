"""Channel importance criteria: which channels of a unit to keep.

The agent decides *how many* channels a unit keeps; a criterion decides
*which*. Each criterion is a small callable ``(context, unit) -> scores`` (one
score per channel of the unit, higher = more important), following the shape
of Torch-Pruning's importance callables. Scores are computed on the unpruned
model, once per search: the ranking of a unit's channels does not depend on how
other units are pruned.

Group criteria average over every layer the unit touches (each layer's scores
divided by their mean, so wide and narrow layers weigh alike), as Torch-Pruning's
``GroupMagnitudeImportance`` does.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from adc.utils.errors import AdcError
from adc.analysis.graph import LAYER_TYPES, Member, ModelGraph, Unit
from adc.utils.registry import Registry

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class ScoreContext:
    """What criteria may look at: the unpruned model, its graph, calibration data.

    Activations and gradients are computed lazily, once, and shared by units.

    Attributes:
        model: The unpruned model (not modified).
        graph: Its :class:`~adc.graph.ModelGraph`.
        calibration: Batches ``(images, labels)`` from the training split, or None.
        seed: Seed for the ``random`` criterion.
    """

    model: nn.Module
    graph: ModelGraph
    calibration: list[Batch] | None = None
    seed: int = 0
    _modules: dict[str, nn.Module] = field(default_factory=dict, repr=False)
    _grads: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    _positive: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    def module(self, name: str) -> nn.Module:
        if not self._modules:
            self._modules = dict(self.model.named_modules())
        return self._modules[name]

    def require_calibration(self, criterion: str) -> list[Batch]:
        if not self.calibration:
            raise AdcError(
                f"criterion {criterion!r} needs calibration data: pass calibration= (a DataLoader or a list of "
                f"(images, labels) batches from the training split), or pick a weight criterion such as 'l1'"
            )
        return self.calibration

    def weight_grads(self) -> dict[str, torch.Tensor]:
        """Accumulated ``weight * grad`` over the calibration batches, per module (first-order Taylor)."""
        if self._grads is None:
            batches = self.require_calibration("taylor")
            model = self.model
            was_training = model.training
            model.eval()
            saved = {n: (p.grad.clone() if p.grad is not None else None) for n, p in model.named_parameters()}
            model.zero_grad(set_to_none=True)
            device = next(model.parameters()).device
            with torch.enable_grad():
                for images, labels in batches:
                    loss = nn.functional.cross_entropy(model(images.to(device)), labels.to(device))
                    loss.backward()
            self._grads = {}
            for name, m in model.named_modules():
                w = getattr(m, "weight", None)
                if isinstance(w, torch.Tensor) and w.grad is not None:
                    self._grads[name] = (w.detach() * w.grad.detach()).abs()
            for n, p in model.named_parameters():
                p.grad = saved[n]
            model.train(was_training)
        return self._grads

    def positive_fraction(self) -> dict[str, torch.Tensor]:
        """Per module output channel: fraction of positive values (1 - APoZ after a ReLU)."""
        if self._positive is None:
            batches = self.require_calibration("apoz")
            counts: dict[str, torch.Tensor] = {}
            totals: dict[str, int] = {}
            handles = []
            wanted = {m.module for u in self.graph.units for m in u.members if m.dim == "out" and not m.is_parameter}

            def hook(name: str) -> Callable:
                def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
                    if not isinstance(output, torch.Tensor) or output.dim() < 2:
                        return
                    dims = [d for d in range(output.dim()) if d != 1]
                    positive = (output > 0).float().sum(dim=dims).cpu()
                    counts[name] = counts.get(name, 0) + positive
                    totals[name] = totals.get(name, 0) + output.numel() // output.shape[1]

                return record

            for name, m in self.model.named_modules():
                if name in wanted:
                    handles.append(m.register_forward_hook(hook(name)))
            was_training = self.model.training
            self.model.eval()
            device = next(self.model.parameters()).device
            try:
                with torch.no_grad():
                    for images, _ in batches:
                        self.model(images.to(device))
            finally:
                for h in handles:
                    h.remove()
                self.model.train(was_training)
            self._positive = {n: counts[n] / totals[n] for n in counts}
        return self._positive


Criterion = Callable[[ScoreContext, Unit], torch.Tensor]
CRITERIA: Registry[Criterion] = Registry("criterion")


def _slices(module: nn.Module, member: Member, tensor: torch.Tensor) -> torch.Tensor:
    """Rows of ``tensor`` (a weight-shaped tensor of ``module``) for the member's channels, flattened."""
    idxs = torch.as_tensor(member.idxs, dtype=torch.long)
    if member.dim == "out" or tensor.dim() == 1:
        return tensor.detach().index_select(0, idxs).flatten(1) if tensor.dim() > 1 else tensor.detach()[idxs, None]
    if isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1:
        if module.groups == module.in_channels:  # depthwise: input channel c is filter c
            return tensor.detach().index_select(0, idxs).flatten(1)
        idxs = idxs % (module.in_channels // module.groups)
    return tensor.detach().index_select(1, idxs).transpose(0, 1).flatten(1)


def _group_scores(ctx: ScoreContext, unit: Unit, per_member: Callable[[nn.Module, Member], torch.Tensor | None]) -> torch.Tensor:
    """Average per-member channel scores (each normalised by its mean) into unit channels."""
    total = torch.zeros(unit.channels, dtype=torch.float64)
    weight = torch.zeros(unit.channels, dtype=torch.float64)
    for member in unit.members:
        if member.is_parameter:  # a loose parameter (a layer scale) is no layer's weights
            continue
        module = ctx.module(member.module)
        scores = per_member(module, member)
        if scores is None or len(member.idxs) == 0:
            continue
        scores = scores.double().cpu()
        scores = scores / scores.mean().clamp_min(1e-12)
        root = torch.as_tensor(member.root_idxs, dtype=torch.long)
        total.index_add_(0, root, scores)
        weight.index_add_(0, root, torch.ones_like(scores))
    if not bool((weight > 0).any()):
        return total
    return total / weight.clamp_min(1)


def _is_layer(module: nn.Module) -> bool:
    return isinstance(module, LAYER_TYPES)


def _norm(p: int) -> Criterion:
    def criterion(ctx: ScoreContext, unit: Unit) -> torch.Tensor:
        """Lp norm of each channel's weights in every layer of the unit (Li et al., ICLR 2017)."""
        def member_scores(module: nn.Module, member: Member) -> torch.Tensor | None:
            if not _is_layer(module):
                return None
            return _slices(module, member, module.weight).abs().pow(p).sum(1).pow(1.0 / p)

        return _group_scores(ctx, unit, member_scores)

    return criterion


CRITERIA.register("l1", _norm(1))
CRITERIA.register("l2", _norm(2))


@CRITERIA.register("fpgm")
def fpgm(ctx: ScoreContext, unit: Unit) -> torch.Tensor:
    """Filter pruning via geometric median (He et al., CVPR 2019): filters close to
    all others are replaceable, so the score is a filter's summed distance to the rest."""

    def member_scores(module: nn.Module, member: Member) -> torch.Tensor | None:
        if not _is_layer(module) or member.dim != "out":
            return None
        w = _slices(module, member, module.weight).double()
        return torch.cdist(w[None], w[None])[0].sum(1)

    return _group_scores(ctx, unit, member_scores)


@CRITERIA.register("bn_scale")
def bn_scale(ctx: ScoreContext, unit: Unit) -> torch.Tensor:
    """|gamma| of the unit's batch norms (Network Slimming, Liu et al., ICCV 2017).
    A unit without batch norm falls back to the L1 norm of its weights."""

    def member_scores(module: nn.Module, member: Member) -> torch.Tensor | None:
        if not isinstance(module, nn.modules.batchnorm._BatchNorm) or module.weight is None:
            return None
        return module.weight.detach()[torch.as_tensor(member.idxs, dtype=torch.long)].abs()

    if not any(not m.is_parameter and isinstance(ctx.module(m.module), nn.modules.batchnorm._BatchNorm)
               for m in unit.members):
        return CRITERIA.get("l1")(ctx, unit)
    return _group_scores(ctx, unit, member_scores)


@CRITERIA.register("taylor")
def taylor(ctx: ScoreContext, unit: Unit) -> torch.Tensor:
    """First-order Taylor estimate of the loss change (Molchanov et al., CVPR 2019):
    sum of |weight x gradient| of the channel's parameters over calibration batches."""
    grads = ctx.weight_grads()

    def member_scores(module: nn.Module, member: Member) -> torch.Tensor | None:
        g = grads.get(member.module)
        if g is None:
            return None
        return _slices(module, member, g).sum(1) + 1e-12

    return _group_scores(ctx, unit, member_scores)


@CRITERIA.register("apoz")
def apoz(ctx: ScoreContext, unit: Unit) -> torch.Tensor:
    """Average percentage of zeros after the activation (Hu et al., 2016): channels
    that a ReLU mostly zeroes carry little; the score is the fraction of positive
    outputs of the unit's last normalisation (or layer) outputs."""
    positive = ctx.positive_fraction()
    members = [m for m in unit.members if m.dim == "out" and m.module in positive]
    norms = [m for m in members if isinstance(ctx.module(m.module), nn.modules.batchnorm._BatchNorm)]
    chosen = norms or members
    total = torch.zeros(unit.channels, dtype=torch.float64)
    count = torch.zeros(unit.channels, dtype=torch.float64)
    for m in chosen:
        root = torch.as_tensor(m.root_idxs, dtype=torch.long)
        total.index_add_(0, root, positive[m.module][torch.as_tensor(m.idxs, dtype=torch.long)].double())
        count.index_add_(0, root, torch.ones(len(m.idxs), dtype=torch.float64))
    return total / count.clamp_min(1)


@CRITERIA.register("random")
def random_scores(ctx: ScoreContext, unit: Unit) -> torch.Tensor:
    """Random ranking, seeded by the search seed and the unit name (a control)."""
    gen = torch.Generator().manual_seed(ctx.seed * 1_000_003 + zlib.crc32(unit.name.encode()))
    return torch.rand(unit.channels, generator=gen, dtype=torch.float64)


def as_batches(calibration: Iterable | torch.Tensor | None, limit: int | None = None) -> list[Batch] | None:
    """Normalise calibration data (a DataLoader, a list of batches, or an image tensor) to batches."""
    if calibration is None:
        return None
    if isinstance(calibration, torch.Tensor):
        return [(calibration, torch.zeros(len(calibration), dtype=torch.long))]
    batches: list[Batch] = []
    seen = 0
    for batch in calibration:
        images, labels = (batch[0], batch[1]) if isinstance(batch, (tuple, list)) else (batch, None)
        if labels is None:
            labels = torch.zeros(len(images), dtype=torch.long)
        batches.append((images, labels))
        seen += len(images)
        if limit is not None and seen >= limit:
            break
    return batches
