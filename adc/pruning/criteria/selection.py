"""Criteria that select channels by how well the next layers' outputs survive without them.

Both read the contribution of each unit channel to the outputs of every layer
it feeds, through the Gram matrix of those contributions: with ``x_c`` the
part of a next layer's output (at sampled positions, every output channel)
that comes from input channel ``c``, ``G[c, c'] = sum x_c . x_c'``. It is
built from the reconstruction statistics ``X^T X`` that least-squares
reconstruction collects anyway (once per search, shared through the context):
``G`` is ``(W^T W) * (X^T X)`` summed over each channel's kernel positions.
Several next layers (a residual stream feeds many) add their ``G``, each
divided by its trace so that every layer weighs alike.

A unit none of whose next layers can be reconstructed (only grouped or
depthwise ones, or a huge linear layer) falls back to the ``l1`` criterion.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from adc.analysis.graph import Unit
from adc.pruning.criteria.base import CRITERIA, register_criterion
from adc.pruning.criteria.context import ScoreContext


def contribution_gram(ctx: ScoreContext, unit: Unit, criterion: str) -> torch.Tensor | None:
    """``channels x channels`` Gram matrix of the unit channels' contributions to the next layers' outputs."""
    stats = ctx.layer_statistics(criterion)
    total = None
    for member in unit.layer_members:
        if member.dim != "in" or member.module not in stats or len(member.idxs) == 0:
            continue
        s = stats[member.module]
        weight = ctx.module(member.module).weight.detach().double().cpu()
        kn = s.kernel_numel
        cols = torch.as_tensor((member.idxs[:, None] * kn + np.arange(kn)[None, :]).reshape(-1), dtype=torch.long)
        root = torch.as_tensor(np.repeat(member.root_idxs, kn), dtype=torch.long)
        w = weight.reshape(weight.shape[0], -1).index_select(1, cols)
        g = (w.T @ w) * s.xtx.index_select(0, cols).index_select(1, cols)
        per_channel = torch.zeros(unit.channels, len(cols), dtype=torch.float64).index_add_(0, root, g)
        gram = torch.zeros(unit.channels, unit.channels, dtype=torch.float64).index_add_(1, root, per_channel)
        trace = gram.trace()
        if trace > 0:
            total = gram / trace if total is None else total + gram / trace
    return total


def greedy_removal_order(gram: torch.Tensor) -> list[int]:
    """ThiNet's greedy selection: repeatedly remove the channel that adds least to ``|sum of removed contributions|^2``.

    With ``s_c = sum_{t removed} G[c, t]``, removing ``c`` adds ``2 s_c + G[c, c]``; ties go to the lower index.
    """
    n = gram.shape[0]
    removed: list[int] = []
    running = torch.zeros(n, dtype=torch.float64)
    left = torch.ones(n, dtype=torch.bool)
    diagonal = gram.diagonal()
    for _ in range(n):
        added = torch.where(left, 2 * running + diagonal, torch.full_like(running, float("inf")))
        c = int(torch.argmin(added))
        removed.append(c)
        left[c] = False
        running += gram[:, c]
    return removed


@register_criterion("thinet", data=True)
def thinet(ctx: ScoreContext, unit: Unit) -> torch.Tensor:
    """ThiNet (Luo, Wu & Lin, ICCV 2017): channels are chosen greedily by the next layer's
    reconstruction error -- the one whose removal (with those already removed) changes the
    next layers' outputs least goes first. The score is the position in that removal order.
    """
    gram = contribution_gram(ctx, unit, "thinet")
    if gram is None:
        return CRITERIA.get("l1")(ctx, unit)
    scores = torch.empty(unit.channels, dtype=torch.float64)
    scores[torch.as_tensor(greedy_removal_order(gram), dtype=torch.long)] = torch.arange(unit.channels, dtype=torch.float64)
    return scores


@register_criterion("lasso", data=True)
def lasso(ctx: ScoreContext, unit: Unit) -> torch.Tensor:
    """LASSO channel selection (He, Zhang & Sun, "Channel Pruning for Accelerating Very Deep
    Neural Networks", ICCV 2017): ``min_b |Y - sum_c b_c x_c|^2 + alpha |b|_1`` over channel
    coefficients ``b``; as ``alpha`` grows, channels drop out of the solution. The score is the
    ``alpha`` at which a channel enters the LASSO path (scikit-learn's LARS on the Gram
    matrix): the last to leave is the most important; one that never enters scores 0.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import lars_path_gram

    gram = contribution_gram(ctx, unit, "lasso")
    if gram is None:
        return CRITERIA.get("l1")(ctx, unit)
    g = gram.numpy()
    g = g + 1e-9 * max(float(np.trace(g)), 1e-12) / len(g) * np.eye(len(g))  # collinear channels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        alphas, _, coefs = lars_path_gram(Xy=g.sum(1), Gram=g, n_samples=1, method="lasso")
    scores = np.zeros(unit.channels)
    nonzero = np.abs(coefs) > 0
    for c in range(unit.channels):
        steps = np.flatnonzero(nonzero[c])
        if len(steps):
            scores[c] = alphas[max(steps[0] - 1, 0)]
    return torch.as_tensor(scores, dtype=torch.float64)
