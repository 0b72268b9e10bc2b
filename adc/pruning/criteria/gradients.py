"""Criteria from the loss and its gradients on the calibration batches.

Each estimates how much the loss changes when a channel is removed, from
gradients of the cross-entropy on the search's calibration batches (computed
once per search, in eval mode, and shared by all units through the context):

- ``taylor``: ``|weight x gradient|`` summed over the channel's parameters.
- ``taylor_weight``: the squared first-order Taylor term of the channel's group.
- ``obd``: Optimal Brain Damage's second-order saliency.
- ``fisher``: the Fisher pruning signal of the channel's activations.
- ``snip``: the connection sensitivity of a gate on the channel.
"""

from __future__ import annotations

import torch

from adc.analysis.graph import Member, Unit
from adc.pruning.criteria.base import member_rows, register_criterion
from adc.pruning.criteria.context import ScoreContext

OBD_MICRO_BATCH = 8
"""Images per gradient of OBD's Fisher estimate: small batches approach per-image gradients at a fraction of the cost."""


@register_criterion("taylor", labels=True)
def taylor(ctx: ScoreContext, unit: Unit) -> torch.Tensor:
    """First-order Taylor estimate of the loss change (Molchanov et al., CVPR 2019):
    sum of |weight x gradient| of the channel's parameters over calibration batches."""
    grads = ctx.weight_grads()

    def member_scores(module: torch.nn.Module, member: Member) -> torch.Tensor | None:
        from_grads = grads.get(member.module)
        if from_grads is None:
            return None
        return member_rows(module, member, from_grads).sum(1) + 1e-12

    return ctx.group_scores(unit, member_scores)


@register_criterion("taylor_weight", labels=True)
def taylor_weight(ctx: ScoreContext, unit: Unit) -> torch.Tensor:
    """Squared Taylor expansion on the weights (Molchanov et al., "Importance Estimation for
    Neural Network Pruning", CVPR 2019): for each calibration batch, ``(sum of gradient x
    weight over the channel's filter and batch-norm parameters)^2``, averaged over the batches.

    Summing inside the square is what makes it a group criterion: opposite-signed
    contributions of one filter cancel, as they do when the whole filter goes.
    """

    def compute() -> dict[str, torch.Tensor]:
        units = ctx.graph.units
        total = {u.name: torch.zeros(u.channels, dtype=torch.float64) for u in units}
        passes = 0
        for _ in ctx.gradient_passes("taylor_weight"):
            products = ctx.parameter_tensors(lambda p, g: p * g)
            for u in units:
                total[u.name] += ctx.channel_sums(u, products, outputs_only=True).pow(2)
            passes += 1
        return {name: t / max(passes, 1) for name, t in total.items()}

    return ctx.memo("taylor_weight", compute)[unit.name]


@register_criterion("obd", labels=True)
def obd(ctx: ScoreContext, unit: Unit) -> torch.Tensor:
    """Optimal Brain Damage (LeCun, Denker & Solla, NeurIPS 1990): the saliency of a parameter
    is ``h_ii w_i^2 / 2`` with ``h_ii`` the diagonal of the Hessian of the loss; a channel's
    saliency is the sum over every parameter removed with it (its filter, batch norm and the
    next layers' input columns).

    The Hessian diagonal is approximated by the empirical Fisher information,
    the mean squared gradient, from gradients of small batches of
    ``OBD_MICRO_BATCH`` calibration images (which scales it by a constant: the
    ranking inside a unit is unchanged).
    """

    def compute() -> dict[str, torch.Tensor]:
        fisher: dict[str, torch.Tensor] = {}
        for _ in ctx.gradient_passes("obd", micro_batch=OBD_MICRO_BATCH):
            for name, squared in ctx.parameter_tensors(lambda p, g: g * g).items():
                fisher[name] = fisher[name] + squared if name in fisher else squared
        params = dict(ctx.model.named_parameters())
        saliency = {name: 0.5 * f * params[name].detach().pow(2) for name, f in fisher.items()}
        return {u.name: ctx.channel_sums(u, saliency) for u in ctx.graph.units}

    return ctx.memo("obd", compute)[unit.name]


def _per_image(ctx: ScoreContext, unit: Unit, criterion: str) -> torch.Tensor:
    """``N x channels``: each calibration image's ``sum(activation x gradient)`` per unit channel."""
    products = ctx.output_taylor(criterion)
    members = ctx.output_members(unit, products)
    rows = next(iter(products.values())).shape[0] if products else 0
    total = torch.zeros(rows, unit.channels, dtype=torch.float64)
    for m in members:
        values = products[m.module][:, torch.as_tensor(m.idxs, dtype=torch.long)]
        total.index_add_(1, torch.as_tensor(m.root_idxs, dtype=torch.long), values)
    return total


@register_criterion("fisher", labels=True)
def fisher(ctx: ScoreContext, unit: Unit) -> torch.Tensor:
    """Fisher pruning (Theis, Korshunova, Tejani & Huszár, "Faster gaze prediction with dense
    networks and Fisher pruning", 2018): ``1/(2N) sum_n (sum_ij a_nij g_nij)^2``, the
    loss increase of removing the channel estimated from the Fisher information of a gate on it.

    ``a`` is the channel's activation (the unit's batch-norm output; after a ReLU
    the product is the same), ``g`` the gradient of image ``n``'s own loss.
    """
    return 0.5 * _per_image(ctx, unit, "fisher").pow(2).mean(0)


@register_criterion("snip", labels=True)
def snip(ctx: ScoreContext, unit: Unit) -> torch.Tensor:
    """SNIP connection sensitivity (Lee, Ajanthan & Torr, ICLR 2019) of a gate on each channel:
    ``|dL/dc|`` at ``c = 1``, i.e. ``|sum_n sum_ij a_nij g_nij|`` over the calibration batches.

    SNIP scores single weights at initialisation; structured, as here, the
    connection is the channel (a multiplicative gate on its activation), scored
    on the trained model. The paper's normalisation by the sum over the network
    does not change the ranking inside a unit and is left out.
    """
    return _per_image(ctx, unit, "snip").sum(0).abs()
