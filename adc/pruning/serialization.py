"""Save and load pruned models without pickle.

A saved file holds a JSON header (how to rebuild the unpruned architecture: its
model spec; the kept channel indices of every unit; the policy and free-form
metadata) and a plain state dict. Loading rebuilds the architecture from the
spec, removes the same channels, and loads the weights with
``torch.load(weights_only=True)``: no arbitrary object is ever unpickled.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adc.analysis.graph import analyze
from adc.inputs.models import build_model
from adc.pruning.pruner import PRUNING_ATTR, remove_channels
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
        model: A model built by :func:`adc.models.build_model` (it carries its
            spec), possibly pruned by :func:`adc.prune`.
        path: Destination file; written atomically.
        policy: The policy that produced it, stored for reference.
        meta: JSON-serialisable extra information (metrics, costs).
        spec: The model spec, for a model not built by adc:
            ``{"spec": "file.py:fn", "num_classes": 10, "in_channels": 3}``.

    Raises:
        AdcError: if the model's architecture spec is unknown.
    """
    spec = dict(spec) if spec is not None else getattr(model, SPEC_ATTR, None)
    if not spec:
        raise AdcError(
            "cannot save: the model does not say how to rebuild its architecture; build it with "
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
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {"adc_header": header_text, "state_dict": state}
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
    model = build_model(spec["spec"], num_classes=spec["num_classes"], in_channels=spec["in_channels"])
    pruning = header.get("pruning")
    if pruning and pruning.get("kept"):
        graph = analyze(model, torch.zeros(pruning["example_shape"]))
        remove_channels(model, graph, pruning["kept"])
        setattr(model, PRUNING_ATTR, pruning)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise AdcError(f"model file {str(path)!r} does not fit its own architecture: {str(exc).splitlines()[0]}") from exc
    return model.eval()
