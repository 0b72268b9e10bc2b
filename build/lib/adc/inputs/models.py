"""Model specs: build a network from a string and load its weights.

A model spec is one of

* ``zoo:NAME`` -- one of adc's own small CNNs (:mod:`adc.zoo`);
* ``torchvision:NAME`` -- a torchvision classification model, untrained
  (``weights=None``; load trained weights with :func:`load_checkpoint`);
* ``path/to/file.py:fn`` or ``package.module:fn`` -- a user's function that
  returns an ``nn.Module``; it gets ``num_classes=`` / ``in_channels=`` when
  its signature accepts them.

:func:`build_model` stamps the spec onto the model (``model.adc_model_spec``)
so that an exported, pruned model can record how to rebuild its original
architecture.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adc.utils.errors import AdcError
from adc.utils.plugins import is_plugin_spec, load_callable
from adc.utils.registry import Registry
from adc.inputs.zoo import ZOO

# A source builds a model from the part of the spec after "prefix:".
ModelSource = Callable[[str, int, int], nn.Module]
MODEL_SOURCES: Registry[ModelSource] = Registry("model source")

_SPEC_FORMS = "'zoo:NAME', 'torchvision:NAME', 'path/to/file.py:fn' or 'package.module:fn'"


@MODEL_SOURCES.register("zoo")
def _zoo_model(name: str, num_classes: int, in_channels: int) -> nn.Module:
    """One of adc's own CNNs (:data:`adc.zoo.ZOO`)."""
    if name not in ZOO:
        raise AdcError(f"unknown zoo model {name!r} in model spec 'zoo:{name}'; valid: {', '.join(ZOO.names())}")
    return ZOO.get(name)(num_classes=num_classes, in_channels=in_channels)


@MODEL_SOURCES.register("torchvision")
def _torchvision_model(name: str, num_classes: int, in_channels: int) -> nn.Module:
    """A torchvision classification model with random weights and ``num_classes`` outputs."""
    import torchvision  # deferred: importing torchvision.models costs ~1 s

    valid = torchvision.models.list_models(module=torchvision.models)
    if name not in valid:
        close = difflib.get_close_matches(name, valid, n=5, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise AdcError(
            f"unknown torchvision model {name!r} in model spec 'torchvision:{name}'; {hint}"
            f"valid names include {', '.join(valid[:12])} ({len(valid)} in all: torchvision.models.list_models())"
        )
    if in_channels != 3:
        raise AdcError(
            f"model spec 'torchvision:{name}' takes 3-channel images but the data has {in_channels}; "
            "use a zoo model (zoo:NAME) or 3-channel data"
        )
    try:
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    except (TypeError, ValueError) as exc:  # e.g. a model that fixes its number of classes
        raise AdcError(f"model spec 'torchvision:{name}': cannot build it with num_classes={num_classes}: {exc}") from exc


def _plugin_model(spec: str, num_classes: int, in_channels: int) -> nn.Module:
    """Call a user's model function with the keyword arguments it accepts."""
    fn = load_callable(spec, "model")
    wanted = {"num_classes": num_classes, "in_channels": in_channels}
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins and some C callables have no signature
        params = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in wanted.items() if takes_any or k in params}
    try:
        model = fn(**kwargs)
    except Exception as exc:  # the user's code may raise anything
        raise AdcError(f"model plugin {spec!r} raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise AdcError(f"model plugin {spec!r} returned {type(model).__name__}; it must return a torch.nn.Module")
    return model


def build_model(spec: str, *, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """Build the (untrained) model named by ``spec``.

    Args:
        spec: ``zoo:NAME``, ``torchvision:NAME``, ``path/to/file.py:fn`` or ``package.module:fn``.
        num_classes: Outputs of the classifier.
        in_channels: Channels of the input images (torchvision models need 3).

    Returns:
        The model, with ``model.adc_model_spec`` set to a JSON-able dict of the arguments.

    Raises:
        AdcError: on an unknown spec or name, or a plugin that does not return a module.
    """
    if num_classes < 1 or in_channels < 1:
        raise AdcError(f"model {spec!r}: num_classes and in_channels must be >= 1, got {num_classes} and {in_channels}")
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in MODEL_SOURCES:
        model = MODEL_SOURCES.get(prefix)(rest, num_classes, in_channels)
    elif is_plugin_spec(spec):
        model = _plugin_model(spec, num_classes, in_channels)
    else:
        hint = f" (did you mean 'zoo:{spec}'?)" if spec in ZOO else ""
        raise AdcError(f"unknown model spec {spec!r}{hint}; use {_SPEC_FORMS}; zoo models: {', '.join(ZOO.names())}")
    model.adc_model_spec = {"spec": spec, "num_classes": num_classes, "in_channels": in_channels}
    return model


def _shape(t: torch.Tensor | torch.Size) -> str:
    """``(10, 64)``-style shape text for error messages."""
    dims = tuple(t.shape if isinstance(t, torch.Tensor) else t)
    return "(" + ", ".join(str(d) for d in dims) + ("," if len(dims) == 1 else "") + ")"


def _extract_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Find the state dict in a loaded checkpoint: raw, or under "state_dict" / "model"."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise AdcError(f"checkpoint {str(path)!r} holds {type(obj).__name__}, not a state dict (a dict of tensors)")
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise AdcError(
                f"checkpoint {str(path)!r} is not a state dict: entry {key!r} is a {type(value).__name__}, not a tensor"
            )
    return dict(obj)


def load_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Load trained weights from ``path`` into ``model`` (in place) and return it.

    Accepts a raw state dict, or a dict holding one under ``"state_dict"`` or
    ``"model"``; a ``module.`` prefix left by ``DataParallel`` is removed. The
    file is read with ``weights_only=True``, so it never runs pickled code.

    Raises:
        AdcError: if the file is missing or not a checkpoint, or its keys or
            shapes do not match the model (the first offending key is named).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise AdcError(f"checkpoint {str(path)!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # garbage makes the unpickler raise anything (KeyError, IndexError, ...)
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AdcError(
            f"checkpoint {str(path)!r} is not a PyTorch checkpoint readable with weights_only=True: {detail[:200]}"
        ) from exc
    state = _extract_state_dict(obj, path)
    expected = model.state_dict()
    if all(k.startswith("module.") for k in state) and not any(k.startswith("module.") for k in expected):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    missing = [k for k in expected if k not in state]
    if missing:
        raise AdcError(
            f"checkpoint {str(path)!r} lacks key {missing[0]!r} that the model needs"
            f" ({len(missing)} missing); was it saved from a different architecture?"
        )
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        raise AdcError(
            f"checkpoint {str(path)!r} has key {unexpected[0]!r} that the model does not have"
            f" ({len(unexpected)} unexpected); was it saved from a different architecture?"
        )
    for key, want in expected.items():
        if state[key].shape != want.shape:
            raise AdcError(
                f"checkpoint {str(path)!r}: checkpoint key {key!r} has shape {_shape(state[key])}"
                f" but the model expects {_shape(want)}"
            )
    model.load_state_dict(state)
    return model
