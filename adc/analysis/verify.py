"""Find, by pruning trial copies, which candidate units can really be pruned as analysed.

Torch-Pruning's grouping is a static reading of the traced graph, and its
reading of reshapes, slices and permutations can be wrong without raising:
ViT's patch embedding feeds a reshape to a fixed width, ShuffleNet's channel
shuffle permutes channels that Torch-Pruning maps one to one. So every
candidate unit is tried on a real copy of the model, with a deterministic,
uneven share of its channels removed (a prime count spread over the channels,
so a width that must stay divisible shows up), and the copy is checked:

1. *Structure*: the channels can be cut, the copy runs, every conv/linear
   layer has the predicted input and output channels, and
   ``FlopCounterMode``'s FLOPs and the parameter count equal the analytic
   cost (so a unit that changes FLOPs the formulas do not model, such as an
   attention product, is caught).
2. *Function*: removing channels must compute what the unpruned model computes
   when those channels' consumers ignore them (their input weights zero).
   A wrong channel mapping (a permutation, a partial slice) breaks this
   equality. Units that pass through a normalisation over channels (layer or
   group norm, attention) change the kept channels' values by design and are
   only checked for structure.

All candidates are tried at once first; only when a trial fails are they split
in halves, recursively, so a model whose units all pass costs one trial of each
kind, and k faulty units among n cost about 2k log2(n/k) trials. The survivors
are then tried together once more; should they fail jointly (units that fail
only in company), they are added back one at a time.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from adc.analysis.counting import count
from adc.analysis.surgery import remove_channels
from adc.analysis.units import ModelGraph, Unit
from adc.utils.errors import AdcError
from adc.utils.formatting import one_line

CHANNEL_MIXING = (nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, nn.MultiheadAttention)
"""Modules whose outputs for one channel depend on the other channels: their units are checked for structure only."""

Fault = Callable[[Sequence[Unit]], "str | None"]


def verify_units(model: nn.Module, example_input: torch.Tensor, graph: ModelGraph) -> ModelGraph:
    """``graph`` less the units whose trial pruning fails; each joins ``graph.excluded`` with the reason.

    Args:
        model: The unpruned model, in eval mode (not modified).
        example_input: An input batch; the first sample is used.
        graph: Its analysed graph, with every candidate unit.
    """
    x = example_input[:1]
    try:
        graph = graph.without(_failing(graph.units, lambda units: _structure_fault(model, x, graph, units)))
        modules = dict(model.named_modules())
        checkable = [u for u in graph.units if not any(
            isinstance(modules.get(m.module), CHANNEL_MIXING) for m in u.members)]
        return graph.without(_failing(checkable, lambda units: _function_fault(model, x, graph, units)))
    except _OutOfMemory as exc:
        size = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
        raise AdcError(f"not enough memory to analyse {type(model).__name__}: trying its units on a copy needs about "
                       f"three times its {size:.0f} MiB of weights ({exc})") from exc


class _OutOfMemory(Exception):
    """A trial ran out of memory: no verdict on the units, so analysis stops."""


def _raise_if_out_of_memory(exc: BaseException) -> None:
    text = str(exc)
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)) or (
            isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)):
        raise _OutOfMemory(one_line(exc)) from exc


def pruning_fault(pruned: nn.Module, graph: ModelGraph, kept: np.ndarray, example_input: torch.Tensor, *,
                  on_error: Callable[[BaseException], None] | None = None) -> str | None:
    """Why ``pruned`` is not what ``graph`` predicts for the kept channel counts, or None when it is.

    Checks that every conv/linear layer has the predicted channels, that the
    model runs on the example input, and that its counted FLOPs and parameters
    equal the analytic ones. ``on_error`` sees an exception of the forward pass
    first (and may raise instead).
    """
    kept = np.asarray(kept, dtype=np.float64)
    modules = dict(pruned.named_modules())
    out_k, in_k = graph.layer_channels(kept)
    for i, lc in enumerate(graph.layers):
        m = modules.get(lc.name)
        if m is None:
            continue
        real = (m.in_features, m.out_features) if isinstance(m, nn.Linear) else (m.in_channels, m.out_channels)
        predicted = (int(round(in_k[i])), int(round(out_k[i])))
        if real != predicted:
            return (f"pruning left layer {lc.name!r} with {real[0]} -> {real[1]} channels, not the predicted "
                    f"{predicted[0]} -> {predicted[1]}")
    try:
        counted = count(pruned, example_input[:1])
    except Exception as exc:  # a broken model raises anything
        if on_error is not None:
            on_error(exc)
        return f"the pruned model fails on its example input: {one_line(exc)}"
    predicted_cost = graph.costs(kept)
    if counted.flops != predicted_cost.flops or counted.params != predicted_cost.params:
        return (f"the pruned model has {counted.flops} FLOPs and {counted.params} params, but the analysis "
                f"predicted {predicted_cost.flops} and {predicted_cost.params}")
    return None


def trial_keep(unit: Unit) -> np.ndarray:
    """The channels a trial keeps: a prime count (per group in grouped units), spread evenly.

    A prime count is not a multiple of any divisor a later reshape might need
    (a channel shuffle's groups, attention heads), so such a unit fails its trial.
    """
    width = unit.channels // unit.channel_groups
    k = _largest_prime_at_most(max(1, width // 2))
    local = np.unique(np.linspace(0, width - 1, k).round().astype(np.int64))
    return (np.arange(unit.channel_groups)[:, None] * width + local[None, :]).reshape(-1)


def _largest_prime_at_most(n: int) -> int:
    for k in range(n, 1, -1):
        if all(k % d for d in range(2, int(k ** 0.5) + 1)):
            return k
    return 1


def _failing(units: Sequence[Unit], fault: Fault) -> dict[str, str]:
    """Unit name -> reason for every unit whose trial fails: halving, then one joint check of the survivors."""
    bad = _split(units, fault, fault(units) if units else None)
    rest = [u for u in units if u.name not in bad]
    if not bad or not rest or fault(rest) is None:
        return bad
    accepted: list[Unit] = []  # units that fail only together: keep each that still passes with those kept so far
    for u in rest:
        reason = fault([*accepted, u])
        if reason is None:
            accepted.append(u)
        else:
            bad[u.name] = f"{reason} (together with other units)"
    return bad


def _split(units: Sequence[Unit], fault: Fault, reason: str | None) -> dict[str, str]:
    """Failing units of a set whose own trial gave ``reason``, trying halves recursively."""
    if reason is None:
        return {}
    if len(units) == 1:
        return {units[0].name: reason}
    halves = (units[: len(units) // 2], units[len(units) // 2:])
    return {k: v for half in halves for k, v in _split(half, fault, fault(half)).items()}


def _trial(model: nn.Module, graph: ModelGraph, units: Sequence[Unit]) -> tuple[nn.Module, dict[str, np.ndarray], np.ndarray]:
    """A copy of ``model`` with each unit cut to its trial channels; the kept indices and counts."""
    keep = {u.name: trial_keep(u) for u in units}
    kept = graph.channels.copy()
    for u in units:
        kept[u.index] = len(keep[u.name])
    pruned = copy.deepcopy(model)
    remove_channels(pruned, graph, keep)
    return pruned, keep, kept


def _structure_fault(model: nn.Module, x: torch.Tensor, graph: ModelGraph, units: Sequence[Unit]) -> str | None:
    try:
        pruned, _, kept = _trial(model, graph, units)
    except Exception as exc:  # torch-pruning's layer functions raise anything on odd members
        _raise_if_out_of_memory(exc)
        return f"its channels cannot be cut: {one_line(exc)}"
    return pruning_fault(pruned, graph, kept, x, on_error=_raise_if_out_of_memory)


def _function_fault(model: nn.Module, x: torch.Tensor, graph: ModelGraph, units: Sequence[Unit]) -> str | None:
    try:
        pruned, keep, _ = _trial(model, graph, units)
        with torch.no_grad(), _full_precision(), _classifier_input(pruned, graph.classifier) as got_features:
            got = [*_tensors(pruned(x)), *got_features]
    except Exception as exc:  # passed alone, fails in this company: say so
        _raise_if_out_of_memory(exc)
        return f"the pruned model fails on its example input: {one_line(exc)}"
    gone = graph.removed_channels(keep).get(graph.classifier, {}).get("in", np.empty(0, np.int64))
    with torch.no_grad(), _full_precision(), _classifier_input(model, graph.classifier, gone) as want_features, \
            _ignoring_removed_inputs(model, graph, keep):
        want = [*_tensors(model(x)), *want_features]
    # The classifier's input too: a freshly built ViT's head is all zeros, which would hide any difference.
    for g, w in zip(got, want):
        scale = float(w.abs().max()) if w.numel() else 0.0
        tol = 1e-4 if w.dtype in (torch.float32, torch.float64) else 1e-2  # half precisions round far more
        if g.shape != w.shape or not torch.allclose(g, w, rtol=tol, atol=tol * max(scale, 1e-6)):
            worst = float((g - w).abs().max()) if g.shape == w.shape else float("nan")
            return (f"after pruning, the kept channels compute something else (differs by {worst:.3g} of "
                    f"{scale:.3g}): a permutation, slice or operation over all channels that torch-pruning does not map")
    return None


@contextlib.contextmanager
def _classifier_input(model: nn.Module, name: str, gone: np.ndarray | None = None) -> Iterator[list[torch.Tensor]]:
    """Within the block, the yielded list receives the input of layer ``name`` (less its ``gone`` input channels)."""
    seen: list[torch.Tensor] = []
    layer = model.get_submodule(name)
    dim = -1 if isinstance(layer, nn.Linear) else 1

    def record(module: nn.Module, args: tuple) -> None:
        features = args[0]
        if gone is not None and len(gone):
            kept = np.setdiff1d(np.arange(features.shape[dim]), gone)
            features = features.index_select(dim, torch.as_tensor(kept, device=features.device))
        seen.append(features)

    handle = layer.register_forward_pre_hook(record)
    try:
        yield seen
    finally:
        handle.remove()


@contextlib.contextmanager
def _full_precision() -> Iterator[None]:
    """No TF32 on CUDA within the block: with its 10-bit mantissa, a layer with fewer input channels and the same
    layer with those inputs zeroed differ by about 1e-3, which would pass for a wrong channel mapping."""
    matmul = torch.backends.cuda.matmul.allow_tf32
    cudnn = torch.backends.cudnn
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic,
                         allow_tf32=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul


def _tensors(output: object) -> Iterator[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        yield output
    elif isinstance(output, (tuple, list)):
        for o in output:
            yield from _tensors(o)
    elif isinstance(output, dict):
        for o in output.values():
            yield from _tensors(o)


@contextlib.contextmanager
def _ignoring_removed_inputs(model: nn.Module, graph: ModelGraph, keep: dict[str, np.ndarray]) -> Iterator[None]:
    """Within the block, the conv/linear layers that would lose input channels see zeros there instead."""
    handles = []
    try:
        for name, dims in graph.removed_channels(keep).items():
            module = model.get_submodule(name) if name not in graph.parameter_axes() else None
            if "in" not in dims or not isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
                continue
            idxs, dim = torch.as_tensor(dims["in"], dtype=torch.long), -1 if isinstance(module, nn.Linear) else 1
            handles.append(module.register_forward_pre_hook(
                lambda m, args, idxs=idxs, dim=dim: (args[0].index_fill(dim, idxs.to(args[0].device), 0), *args[1:])))
        yield
    finally:
        for h in handles:
            h.remove()
