"""The commands that look at a model without searching: its profile, its latency table.

Both build the model from a spec (input shape and classes from a data spec,
or given), trace it, and -- for latency -- measure (or read from the cache)
its per-layer latency table with the same defaults as ``adc search``, so a
table measured ahead of time is the one a search reuses.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from adc.analysis.energy import load_energy_model
from adc.analysis.graph import analyze
from adc.analysis.latency import LatencyTable, build_latency_table
from adc.analysis.profile import Profile, profile
from adc.analysis.space import PolicySpace
from adc.analysis.timers import RUNTIMES
from adc.inputs.calibration import fixed_images
from adc.inputs.data import example_input, load_data
from adc.inputs.models import build_model
from adc.pruning.pruner import ChannelPruner
from adc.pruning.quantize import PrecisionChoice, choose_precisions
from adc.utils.device import check_device
from adc.utils.errors import AdcError


def parse_shape(text: str | None) -> tuple[int, ...] | None:
    """``3,224,224`` (or ``3x224x224``) -> (3, 224, 224).

    Raises:
        AdcError: unless it is three positive integers.
    """
    if text is None:
        return None
    try:
        shape = tuple(int(p) for p in text.replace("x", ",").split(","))
    except ValueError:
        raise AdcError(f"--input-shape {text!r}: expected C,H,W such as 3,224,224") from None
    if len(shape) != 3 or min(shape) < 1:
        raise AdcError(f"--input-shape {text!r}: expected three positive integers C,H,W")
    return shape


def model_and_input(spec: str, *, data: str | None = None, input_shape: tuple[int, ...] | None = None,
                    num_classes: int | None = None) -> tuple[nn.Module, torch.Tensor]:
    """The model of ``spec`` (in eval mode) and a batch-1 input.

    Shape and classes come from ``data`` when given; otherwise from
    ``input_shape`` / ``num_classes``, defaulting to ImageNet's 3x224x224 and
    1000 classes for torchvision models and CIFAR's 3x32x32 and 10 otherwise.
    """
    if data is not None:
        splits = load_data(data)
        x = example_input(splits)
        classes = splits.num_classes
    else:
        imagenet = spec.startswith("torchvision:")
        shape = input_shape or ((3, 224, 224) if imagenet else (3, 32, 32))
        x = torch.zeros(1, *shape)
        classes = num_classes or (1000 if imagenet else 10)
    return build_model(spec, num_classes=classes, in_channels=x.shape[1]).eval(), x


def latency_table_of(model: nn.Module, x: torch.Tensor, *, runtime: str = "torch", device: str = "cpu",
                     threads: int = 1, batch: int = 1, min_keep: float = 0.2, round_to: int = 1, points: int = 5,
                     cache_dir: str | None = None,
                     progress: Callable[[int, int, str], None] | None = None) -> LatencyTable:
    """Measure (or read from the cache) ``model``'s latency table, as a search with these settings would.

    Raises:
        AdcError: an unknown runtime, an absent device, or bad numbers.
    """
    if runtime not in RUNTIMES:
        raise AdcError(f"--runtime {runtime!r}: valid: {', '.join(RUNTIMES)}")
    check_device(device)
    if not 0 < min_keep <= 1:
        raise AdcError(f"--min-keep {min_keep}: must be in (0, 1]")
    for name, value in (("--points", points), ("--batch", batch), ("--round-to", round_to), ("--threads", threads)):
        if value < 1:
            raise AdcError(f"{name} {value}: must be a positive integer")
    pruner = ChannelPruner(model, x, round_to=round_to)
    space = PolicySpace(pruner.graph, min_keep=min_keep, round_to=round_to)
    return build_latency_table(model, x, space, prune_to=pruner.prune_kept, batch=batch, runtime=runtime,
                               device=device, threads=threads, cache_dir=cache_dir, points=points, progress=progress)


def profile_spec(spec: str, *, data: str | None = None, input_shape: tuple[int, ...] | None = None,
                 num_classes: int | None = None, energy_model: str | None = None, latency: bool = False,
                 runtime: str = "torch", device: str = "cpu", threads: int = 1, batch: int = 1,
                 cache_dir: str | None = None, progress: Callable[[int, int, str], None] | None = None) -> Profile:
    """Profile the model of ``spec``: per-unit channels, MACs, params, energy (and measured latency)."""
    em = load_energy_model(energy_model)
    model, x = model_and_input(spec, data=data, input_shape=input_shape, num_classes=num_classes)
    table = None
    if latency:
        table = latency_table_of(model, x, runtime=runtime, device=device, threads=threads, batch=batch,
                                 cache_dir=cache_dir, progress=progress)
        graph = table.graph
    else:
        graph = analyze(model, x)
    return profile(graph, energy_model=em, latency_table=table)


def precision_profile(spec: str, *, data: str | None = None, input_shape: tuple[int, ...] | None = None,
                      num_classes: int | None = None, threads: int = 1) -> PrecisionChoice:
    """Each layer of ``spec``'s model timed in fp32 and in int8 (static QDQ) on onnxruntime, in context.

    Calibration images are the data's training images when ``data`` is given,
    else seeded random inputs (a layer's speed depends on its shapes only).
    """
    if threads < 1:
        raise AdcError(f"--threads {threads}: must be a positive integer")
    model, x = model_and_input(spec, data=data, input_shape=input_shape, num_classes=num_classes)
    if data is not None:
        images = fixed_images(load_data(data).train, 64, seed=0)
    else:
        images = torch.randn(16, *x.shape[1:], generator=torch.Generator().manual_seed(0))
    return choose_precisions(model, torch.randn(x.shape, generator=torch.Generator().manual_seed(1)), images,
                             threads=threads)
