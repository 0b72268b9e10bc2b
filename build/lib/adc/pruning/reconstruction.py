"""Least-squares reconstruction of layers whose input channels were pruned.

AMC, ThiNet and channel pruning (He et al., ICCV 2017) refit a layer after its
input channels are removed, so that its outputs on sampled inputs match the
unpruned layer's: ``min_W ||X_kept W - Y||``. We sample a bounded number of
output positions per calibration image, take the matching input patches
(im2col), and keep only the normal-equation statistics ``X^T X`` and ``X^T Y``
per layer: they are collected once per search, and any subset of kept input
channels is then one small solve, so reconstruction stays cheap per episode.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from adc.analysis.graph import ModelGraph

MAX_FEATURES = 4608  # input channels x kernel; larger Gram matrices cost too much memory


@dataclass
class LayerStatistics:
    """Normal-equation statistics of one layer on calibration inputs."""

    xtx: torch.Tensor  # (D, D), D = in_channels * kernel_numel
    xty: torch.Tensor  # (D, out_channels), target = output without bias
    kernel_numel: int
    samples: int


def reconstructable(module: nn.Module) -> bool:
    """Plain convolutions and linear layers (not grouped or depthwise)."""
    if isinstance(module, nn.Linear):
        return module.in_features <= MAX_FEATURES
    if isinstance(module, nn.Conv2d):
        return module.groups == 1 and module.in_channels * module.kernel_size[0] * module.kernel_size[1] <= MAX_FEATURES
    return False


def _padding(module: nn.Conv2d) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) zero padding of a conv, as ``F.pad`` takes it."""
    if isinstance(module.padding, str):  # "valid" or "same"
        if module.padding == "valid":
            return (0, 0, 0, 0)
        pads = []
        for k, d in zip(reversed(module.kernel_size), reversed(module.dilation)):
            total = d * (k - 1)
            pads += [total // 2, total - total // 2]
        return tuple(pads)  # type: ignore[return-value]
    ph, pw = module.padding
    return (pw, pw, ph, ph)


def _patches(module: nn.Module, x: torch.Tensor, points: int, gen: torch.Generator) -> torch.Tensor:
    """Sample input patches (im2col rows) at ``points`` output positions per image.

    Only the sampled patches are gathered: unfolding the whole feature map
    first would cost ``kernel`` times the activation's memory per layer (tens of
    gigabytes for a few hundred 224x224 images) to keep ten positions of it.
    """
    if isinstance(module, nn.Linear):
        rows = x.reshape(-1, x.shape[-1])
        if len(rows) > points * x.shape[0]:
            rows = rows[torch.randperm(len(rows), generator=gen)[: points * x.shape[0]]]
        return rows.double()
    n, c = x.shape[:2]
    (kh, kw), (sh, sw), (dh, dw) = module.kernel_size, module.stride, module.dilation
    mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
    xp = nn.functional.pad(x, _padding(module), mode=mode)
    oh = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    positions = oh * ow
    pick = torch.stack([torch.randperm(positions, generator=gen)[: min(points, positions)] for _ in range(n)])
    rows = (pick // ow) * sh  # (n, P): top-left corner of each sampled patch
    cols = (pick % ow) * sw
    ys = rows[:, :, None, None] + dh * torch.arange(kh)[None, None, :, None]  # (n, P, kh, 1)
    xs = cols[:, :, None, None] + dw * torch.arange(kw)[None, None, None, :]  # (n, P, 1, kw)
    batch = torch.arange(n)[:, None, None, None]
    patches = xp[batch, :, ys, xs]  # (n, P, kh, kw, C): advanced indices first, then the channel slice
    # unfold's (and the flattened weight's) feature order is channel, then kernel row, then kernel column.
    return patches.permute(0, 1, 4, 2, 3).reshape(n * pick.shape[1], c * kh * kw).double()


def collect_statistics(
    model: nn.Module, graph: ModelGraph, batches: list[tuple[torch.Tensor, torch.Tensor]], *, points: int = 10, seed: int = 0
) -> dict[str, LayerStatistics]:
    """Collect ``X^T X`` / ``X^T Y`` for every layer whose inputs some unit prunes.

    Args:
        model: The unpruned model.
        graph: Its graph (tells which layers lose input channels).
        batches: Calibration batches from the training split.
        points: Output positions sampled per image (bounds the cost).
        seed: Seed for the position sampling.
    """
    modules = dict(model.named_modules())
    targets = {
        lc.name for i, lc in enumerate(graph.layers) if graph.in_terms[i].any() and reconstructable(modules[lc.name])
    }
    stats: dict[str, LayerStatistics] = {}
    gen = torch.Generator().manual_seed(seed)

    def hook(name: str):
        def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            x = _patches(module, inputs[0].detach().cpu(), points, gen)
            w = module.weight.detach().double().cpu().reshape(module.weight.shape[0], -1)
            y = x @ w.T  # the layer's output without bias at the sampled positions
            s = stats.get(name)
            if s is None:
                d = x.shape[1]
                kn = 1 if isinstance(module, nn.Linear) else module.kernel_size[0] * module.kernel_size[1]
                s = stats[name] = LayerStatistics(torch.zeros(d, d, dtype=torch.float64),
                                                  torch.zeros(d, w.shape[0], dtype=torch.float64), kn, 0)
            s.xtx += x.T @ x
            s.xty += x.T @ y
            s.samples += len(x)

        return record

    handles = [modules[name].register_forward_hook(hook(name)) for name in targets]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            for images, _ in batches:
                model(images.to(device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return stats


def refit(module: nn.Module, stats: LayerStatistics, kept_in: np.ndarray, kept_out: np.ndarray, ridge: float = 1e-6) -> None:
    """Set ``module``'s (already pruned) weight to the least-squares fit.

    Args:
        module: The pruned layer; its weight has shape (len(kept_out), len(kept_in), ...).
        stats: Statistics of the unpruned layer.
        kept_in: Kept input channels, in the unpruned numbering.
        kept_out: Kept output channels, in the unpruned numbering.
        ridge: Relative Tikhonov regulariser, for channels that are nearly collinear.
    """
    kn = stats.kernel_numel
    cols = torch.as_tensor((kept_in[:, None] * kn + np.arange(kn)[None, :]).reshape(-1), dtype=torch.long)
    a = stats.xtx.index_select(0, cols).index_select(1, cols)
    b = stats.xty.index_select(0, cols).index_select(1, torch.as_tensor(kept_out, dtype=torch.long))
    a = a + ridge * a.diagonal().mean().clamp_min(1e-12) * torch.eye(len(cols), dtype=a.dtype)
    w = torch.linalg.solve(a, b).T  # (out_kept, in_kept * kn)
    with torch.no_grad():
        module.weight.copy_(w.reshape(module.weight.shape).to(module.weight.dtype))
