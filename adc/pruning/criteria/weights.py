"""Criteria that read only the weights: norms, geometric median, batch-norm scales, and a random control."""

from __future__ import annotations

import zlib

import torch
from torch import nn

from adc.analysis.graph import Member, Unit
from adc.pruning.criteria.base import CRITERIA, is_layer, is_norm, member_rows, register_criterion
from adc.pruning.criteria.context import ScoreContext


def _norm(p: int) -> None:
    def criterion(ctx: ScoreContext, unit: Unit) -> torch.Tensor:
        """Lp norm of each channel's weights in every layer of the unit (Li et al., ICLR 2017)."""

        def member_scores(module: nn.Module, member: Member) -> torch.Tensor | None:
            if not is_layer(module):
                return None
            return member_rows(module, member, module.weight).abs().pow(p).sum(1).pow(1.0 / p)

        return ctx.group_scores(unit, member_scores)

    register_criterion(f"l{p}")(criterion)


_norm(1)
_norm(2)


@register_criterion("fpgm")
def fpgm(ctx: ScoreContext, unit: Unit) -> torch.Tensor:
    """Filter pruning via geometric median (He et al., CVPR 2019): filters close to
    all others are replaceable, so the score is a filter's summed distance to the rest."""

    def member_scores(module: nn.Module, member: Member) -> torch.Tensor | None:
        if not is_layer(module) or member.dim != "out":
            return None
        w = member_rows(module, member, module.weight).double()
        return torch.cdist(w[None], w[None])[0].sum(1)

    return ctx.group_scores(unit, member_scores)


@register_criterion("bn_scale")
def bn_scale(ctx: ScoreContext, unit: Unit) -> torch.Tensor:
    """|gamma| of the unit's batch norms (Network Slimming, Liu et al., ICCV 2017).
    A unit without batch norm falls back to the L1 norm of its weights."""

    def member_scores(module: nn.Module, member: Member) -> torch.Tensor | None:
        if not is_norm(module) or module.weight is None:
            return None
        return module.weight.detach()[torch.as_tensor(member.idxs, dtype=torch.long)].abs()

    if not any(is_norm(ctx.module(m.module)) for m in unit.layer_members):
        return CRITERIA.get("l1")(ctx, unit)
    return ctx.group_scores(unit, member_scores)


@register_criterion("random")
def random_scores(ctx: ScoreContext, unit: Unit) -> torch.Tensor:
    """Random ranking, seeded by the search seed and the unit name (a control)."""
    gen = torch.Generator().manual_seed(ctx.seed * 1_000_003 + zlib.crc32(unit.name.encode()))
    return torch.rand(unit.channels, generator=gen, dtype=torch.float64)
