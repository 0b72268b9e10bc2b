"""Save and load pruned models without pickle.

A saved file holds a JSON header (how to rebuild the unpruned architecture: its
model spec; the kept channel indices of every unit; the policy and free-form
metadata) and a plain state dict. Loading rebuilds the architecture from the
spec, removes the same channels, and loads the weights with
``torch.load(weights_only=True)``: no arbitrary object is ever unpickled.

A model built by :func:`adc.build_model` carries its spec. For a torchvision
model built directly, the spec is inferred (:func:`adc.inputs.models.torchvision_specs`)
and confirmed before anything is written: the candidate is rebuilt and pruned
as :func:`load` will do, must take the weights, and must give the same outputs.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adc.analysis.graph import analyze
from adc.analysis.surgery import remove_channels
from adc.inputs.models import build_model, torchvision_specs
from adc.pruning.pruner import PRUNING_ATTR
from adc.utils.errors import AdcError
from adc.utils.files import atomic_write

FORMAT = "adc-model/1"
SPEC_ATTR = "adc_model_spec"


def save(
    model: nn.Module,
    path: str | Path,
    *,
    policy: Mapping[str, float] | None = None,
    meta: Mapping[str, Any] | None = None,
    spec: Mapping[str, Any] | None = None,
) -> Path:
    """Save a (pruned) model so that :func:`load` can rebuild it in any process.

    Args:
        model: A model built by :func:`adc.build_model` (it carries its spec) or
            by torchvision (its spec is inferred), possibly pruned by adc.
        path: Destination file; written atomically.
        policy: The policy that produced it, stored for reference.
        meta: JSON-serialisable extra information (metrics, costs).
        spec: The model spec, for any other model:
            ``{"spec": "file.py:fn", "num_classes": 10, "in_channels": 3}``.

    Raises:
        AdcError: if the model's architecture spec is unknown and cannot be inferred.
    """
    spec = dict(spec) if spec is not None else getattr(model, SPEC_ATTR, None) or _inferred_spec(model)
    if not spec:
        raise AdcError(
            f"cannot save {type(model).__name__}: the model does not say how to rebuild its architecture; build it with "
            "adc.build_model(spec) or pass spec={'spec': 'file.py:fn', 'num_classes': N, 'in_channels': C}"
        )
    header = {
        "format": FORMAT,
        "model": spec,
        "pruning": getattr(model, PRUNING_ATTR, None),
        "policy": dict(policy) if policy is not None else None,
        "meta": dict(meta) if meta is not None else {},
    }
    try:
        header_text = json.dumps(header)
    except TypeError as exc:
        raise AdcError(f"cannot save: meta or policy is not JSON-serialisable: {exc}") from exc
    payload = {"adc_header": header_text, "state_dict": _cpu_state(model)}
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def read_header(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read a saved file's header and state dict (safely).

    Raises:
        AdcError: if the file is missing or not an adc model file.
    """
    path = Path(path)
    if not path.is_file():
        raise AdcError(f"model file {str(path)!r} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise AdcError(f"model file {str(path)!r} is not an adc model file ({type(exc).__name__})") from exc
    if not isinstance(payload, dict) or "adc_header" not in payload or "state_dict" not in payload:
        raise AdcError(f"model file {str(path)!r} is not an adc model file (no adc header); was it written by adc.save?")
    try:
        header = json.loads(payload["adc_header"])
    except (TypeError, ValueError) as exc:
        raise AdcError(f"model file {str(path)!r} has a corrupt adc header ({type(exc).__name__}); save the model again") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        found = header.get("format") if isinstance(header, dict) else type(header).__name__
        raise AdcError(f"model file {str(path)!r} has format {found!r}; this adc reads {FORMAT!r}")
    return header, payload["state_dict"]


def is_model_file(path: str | Path) -> bool:
    """Whether ``path`` is a file written by :func:`save` (as opposed to a plain state dict)."""
    try:
        read_header(path)
    except AdcError:
        return False
    return True


def load(path: str | Path) -> nn.Module:
    """Load a model written by :func:`save`, pruned exactly as it was saved.

    Args:
        path: The saved file.

    Returns:
        The model in eval mode, with ``adc_model_spec`` (and ``adc_pruning`` if
        pruned) set, so it can be saved again.
    """
    header, state = read_header(path)
    spec = header.get("model")
    if not isinstance(spec, dict) or not {"spec", "num_classes", "in_channels"} <= spec.keys():
        raise AdcError(f"model file {str(path)!r} does not say how to rebuild its architecture (header 'model': {spec!r})")
    model = _rebuild(spec, header.get("pruning"))
    try:
        model.load_state_dict(state)
    except (RuntimeError, ValueError) as exc:  # ValueError: a module's own check of its saved version
        raise AdcError(f"model file {str(path)!r} does not fit its own architecture: {str(exc).splitlines()[0]}") from exc
    return model.eval()


def _cpu_state(model: nn.Module) -> OrderedDict[str, torch.Tensor]:
    """The model's state dict on the CPU, with its per-module metadata (MNASNet refuses weights without its version)."""
    state = model.state_dict()
    cpu = OrderedDict((k, v.detach().cpu()) for k, v in state.items())
    cpu._metadata = getattr(state, "_metadata", None)  # type: ignore[attr-defined]
    return cpu


def _rebuild(spec: Mapping[str, Any], pruning: Mapping[str, Any] | None) -> nn.Module:
    """The architecture of ``spec`` with the channels ``pruning`` records removed (random weights)."""
    model = build_model(spec["spec"], num_classes=spec["num_classes"], in_channels=spec["in_channels"],
                        options=spec.get("options"))
    if pruning and pruning.get("kept"):
        # The saved units were confirmed by the analysis that pruned the model: trace, do not re-verify.
        graph = analyze(model, torch.zeros(pruning["example_shape"]), verify=False)
        remove_channels(model, graph, pruning["kept"])
        setattr(model, PRUNING_ATTR, dict(pruning))
    return model


def _inferred_spec(model: nn.Module) -> dict[str, Any] | None:
    """The first torchvision candidate spec that rebuilds ``model`` exactly: same weights' shapes, same outputs."""
    pruning = getattr(model, PRUNING_ATTR, None)
    state = _cpu_state(model)
    for spec in torchvision_specs(model):
        try:
            rebuilt = _rebuild(spec, pruning)
            rebuilt.load_state_dict(state)
        except (AdcError, RuntimeError, ValueError):  # not this candidate
            continue
        if not pruning or _same_outputs(model, rebuilt.eval(), pruning["example_shape"]):
            return spec
    return None


def _same_outputs(model: nn.Module, rebuilt: nn.Module, shape: list[int]) -> bool:
    """Whether two models give the same outputs on a random input (``model``'s mode is left as it was)."""
    was_training = model.training
    model.eval()
    try:
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            want = model(x.to(next(model.parameters()).device)).cpu()
            got = rebuilt(x)
    finally:
        model.train(was_training)
    return got.shape == want.shape and torch.allclose(got, want, rtol=1e-5, atol=1e-6 * float(want.abs().max()))
