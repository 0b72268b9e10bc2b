"""Every torchvision classification model, built small and put through adc end to end (tests and benchmark).

One place says how each model is built for a small input (64x64; the smallest
size a model accepts when it needs more; ViTs built with that ``image_size``)
and what "pruned correctly" means for it: :func:`check_model` analyses the
model, prunes it with a random policy, checks the result (forward pass,
channels, analytic cost == ``FlopCounterMode`` count), saves it with
``adc.save`` without a spec, and exports it to ONNX and compares onnxruntime
with torch. Loading the saved files in a fresh process is batched by the
caller (:func:`load_in_fresh_process`), one interpreter for many models.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn

from adc.analysis.cost import cost, count, kept_vector
from adc.analysis.graph import ModelGraph, analyze
from adc.pruning.export import export, onnx_outputs
from adc.pruning.pruner import ChannelPruner, check_pruned
from adc.pruning.serialization import read_header, save
from adc.utils.errors import AdcError

ALL_MODELS = torchvision.models.list_models(module=torchvision.models)
SIZES = {"inception_v3": 75, "vit_h_14": 56, "maxvit_t": 224, "alexnet": 224,
         **{n: 224 for n in ALL_MODELS if n.startswith("vgg")}}
"""Input side where 64 does not do: Inception-v3 needs 75; ViT-H/14 a multiple of 14; MaxViT's 7x7
partitions need 224; AlexNet's and VGG's adaptive pooling to 6x6 / 7x7 exports to ONNX only from a
feature map of that size (224)."""
REFUSED: dict[str, str] = {}
"""Models adc refuses, with a pattern of the one-line reason (none today)."""


def input_size(name: str) -> int:
    return SIZES.get(name, 64)


def build(name: str, seed: int = 0) -> nn.Module:
    """The model with random weights, 10 classes, and batch norms that look trained (non-trivial statistics).

    Parameters built constant (ViT's all-zero head, layer norms' ones and zeros) get noise, so that no
    output or channel is trivially the same after pruning.
    """
    torch.manual_seed(seed)
    options = {"image_size": input_size(name)} if name.startswith("vit_") else {}
    model = torchvision.models.get_model(name, weights=None, num_classes=10, **options)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.numel() > 1 and bool((p == p.flatten()[0]).all()):
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine and m.track_running_stats:
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    return model.eval()


def example(name: str) -> torch.Tensor:
    size = input_size(name)
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))


def random_policy(graph: ModelGraph, seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    return {u.name: float(rng.uniform(0.0, 0.8)) for u in graph.units}


@dataclass
class Checked:
    """What :func:`check_model` found about one model."""

    name: str
    size: int
    units: int = 0
    excluded: list[tuple[str, str]] = field(default_factory=list)
    flops: tuple[int, int] = (0, 0)  # before, after
    params: tuple[int, int] = (0, 0)
    onnx_error: float = float("nan")
    saved: Path | None = None
    refused: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def check_model(name: str, folder: Path) -> Checked:
    """Analyse, prune (random policy), check, save and export one model; AssertionError on anything wrong.

    A model adc refuses must be refused at analysis with a one-line AdcError
    (returned in ``refused``); the caller compares it with :data:`REFUSED`.
    """
    result = Checked(name, input_size(name))
    clock = time.perf_counter()
    model, x = build(name), example(name)
    try:
        graph = analyze(model, x)
        graph.require_units()
    except AdcError as exc:
        assert "\n" not in str(exc), f"{name}: the refusal spans lines: {exc!r}"
        result.refused = str(exc)
        return result
    result.seconds["analyze"] = time.perf_counter() - clock
    result.units, result.excluded = len(graph.units), list(graph.excluded)
    unit_names = {u.name for u in graph.units}
    assert not unit_names & {n for n, _ in graph.excluded}, f"{name}: a unit is also listed as excluded"

    clock = time.perf_counter()
    policy = random_policy(graph)
    pruned = ChannelPruner(model, x, graph=graph).prune(policy).eval()
    check_pruned(pruned, graph, kept_vector(graph, policy), x)  # runs, channels and costs as predicted
    before, after = count(model, x), count(pruned, x)
    assert after == cost(graph, policy), f"{name}: counted {after}, analysed {cost(graph, policy)}"
    assert after.params < before.params, f"{name}: the random policy removed nothing"
    with torch.no_grad():
        out = pruned(x)
    assert out.shape == (1, 10) and torch.isfinite(out).all(), f"{name}: pruned output {tuple(out.shape)}"
    result.flops, result.params = (before.flops, after.flops), (before.params, after.params)
    result.seconds["prune"] = time.perf_counter() - clock

    clock = time.perf_counter()
    result.saved = save(pruned, folder / f"{name}.pt")  # no spec given: adc infers it for torchvision models
    torch.save({"input": x, "output": out}, folder / f"{name}.io.pt")
    result.seconds["save"] = time.perf_counter() - clock

    clock = time.perf_counter()
    export(pruned, x, folder / f"{name}.onnx")
    result.onnx_error = float(np.abs(onnx_outputs(folder / f"{name}.onnx", x) - out.numpy()).max())
    scale = float(out.abs().max())
    assert result.onnx_error <= 1e-4 * max(scale, 1.0), f"{name}: onnxruntime differs by {result.onnx_error}"
    result.seconds["onnx"] = time.perf_counter() - clock
    return result


LOADER = """
import json, sys, torch
import adc
torch.set_num_threads(1)
report = {}
for path in sys.argv[1:]:
    io = torch.load(path[:-3] + ".io.pt", weights_only=True)
    try:
        model = adc.load(path)
        with torch.no_grad():
            got = model(io["input"])
        report[path] = float((got - io["output"]).abs().max()) if got.shape == io["output"].shape else "shape"
    except Exception as exc:
        report[path] = f"{type(exc).__name__}: {exc}"
print(json.dumps(report))
"""


def load_in_fresh_process(paths: list[Path]) -> dict[str, float | str]:
    """Load each saved model with ``adc.load`` in one new interpreter; the largest output difference per file."""
    for p in paths:
        read_header(p)  # a readable adc file before the subprocess starts
    done = subprocess.run([sys.executable, "-c", LOADER, *map(str, paths)], capture_output=True, text=True,
                          timeout=1800)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
