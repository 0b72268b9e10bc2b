"""Model specs: build a network from a string and load its weights.

A model spec is one of

* ``zoo:NAME`` -- one of adc's own small CNNs (:mod:`adc.zoo`);
* ``torchvision:NAME`` -- a torchvision classification model, untrained
  (``weights=None``; load trained weights with :func:`load_checkpoint`);
  builder options such as ViT's ``image_size`` go in ``options``;
* ``path/to/file.py:fn`` or ``package.module:fn`` -- a user's function that
  returns an ``nn.Module``; it gets ``num_classes=`` / ``in_channels=`` when
  its signature accepts them.

:func:`build_model` stamps the spec onto the model (``model.adc_model_spec``)
so that an exported, pruned model can record how to rebuild its original
architecture; :func:`torchvision_specs` infers candidate specs for a
torchvision model built without adc.
"""

from __future__ import annotations

import difflib
import inspect
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from adc.utils.errors import AdcError
from adc.utils.formatting import one_line
from adc.utils.plugins import is_plugin_spec, load_callable
from adc.utils.registry import Registry
from adc.inputs.zoo import ZOO

# A source builds a model from the part of the spec after "prefix:", the classes, the input channels and options.
ModelSource = Callable[[str, int, int, Mapping[str, Any]], nn.Module]
MODEL_SOURCES: Registry[ModelSource] = Registry("model source")

_SPEC_FORMS = "'zoo:NAME', 'torchvision:NAME', 'path/to/file.py:fn' or 'package.module:fn'"


TORCHVISION_OPTIONS = ("image_size", "representation_size", "aux_logits", "transform_input")
"""Builder keywords of torchvision classification models that the built model keeps as attributes of the same
name and that change its weights' shapes or its forward pass: what :func:`torchvision_specs` must carry over."""


@MODEL_SOURCES.register("zoo")
def _zoo_model(name: str, num_classes: int, in_channels: int, options: Mapping[str, Any]) -> nn.Module:
    """One of adc's own CNNs (:data:`adc.zoo.ZOO`)."""
    if name not in ZOO:
        raise AdcError(f"unknown zoo model {name!r} in model spec 'zoo:{name}'; valid: {', '.join(ZOO.names())}")
    if options:
        raise AdcError(f"model spec 'zoo:{name}' takes no options, got {', '.join(sorted(options))}")
    return ZOO.get(name)(num_classes=num_classes, in_channels=in_channels)


@MODEL_SOURCES.register("torchvision")
def _torchvision_model(name: str, num_classes: int, in_channels: int, options: Mapping[str, Any]) -> nn.Module:
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
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **options)
    except (TypeError, ValueError) as exc:  # e.g. a model that fixes its number of classes
        shown = ", ".join(f"{k}={v!r}" for k, v in {"num_classes": num_classes, **options}.items())
        raise AdcError(f"model spec 'torchvision:{name}': cannot build it with {shown}: {one_line(exc)}") from exc


class _LargeTensorsOnMeta(TorchFunctionMode):
    """Tensor factories asked for more than 65,536 elements allocate on the meta device, and in-place
    initialisations of meta tensors are skipped: a model's weights cost neither memory nor time, while the
    small tensors a builder computes with stay real (RegNet derives its widths with
    ``torch.pow(...).tolist()``, which the plain meta device refuses)."""

    FACTORIES = frozenset({torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn, torch.randint})

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = dict(kwargs or {})
        name = getattr(func, "__name__", "")
        if name.endswith("_") and not name.startswith("_") and args and isinstance(args[0], torch.Tensor) \
                and args[0].is_meta:
            return args[0]  # an in-place initialisation of a meta tensor computes nothing, yet costs milliseconds
        if func in self.FACTORIES and kwargs.get("device") is None:
            size = kwargs.get("size", args[0] if args and isinstance(args[0], (tuple, list, torch.Size)) else
                              [a for a in args if isinstance(a, int)])
            if math.prod(size) > 1 << 16:
                kwargs["device"] = "meta"
        return func(*args, **kwargs)


def torchvision_specs(model: nn.Module) -> list[dict[str, Any]]:
    """Specs that may rebuild a torchvision model built without adc, most likely first.

    The candidates are torchvision's classification builders defined in the
    model's own module (``resnet50``, ``wide_resnet50_2``... for a ResNet), built
    with their weights on the meta device (no memory, no initialisation cost) with the model's
    number of classes and :data:`TORCHVISION_OPTIONS`, and kept when their
    weights have the same names and, dimension by dimension, no smaller shapes
    (a pruned model's are smaller); an exact match comes first. The caller
    confirms a candidate by rebuilding it (as :func:`adc.load` would).

    Returns:
        ``{"spec": "torchvision:NAME", "num_classes": N, "in_channels": 3[, "options": {...}]}`` dicts;
        empty for a model torchvision did not build.
    """
    module = type(model).__module__
    params = list(model.parameters())
    if not module.startswith("torchvision.models.") or not params or params[-1].dim() == 0:
        return []
    import torchvision  # deferred: importing torchvision.models costs ~1 s

    num_classes = int(params[-1].shape[0])  # torchvision's classifiers are registered last
    options = {k: getattr(model, k) for k in TORCHVISION_OPTIONS if isinstance(getattr(model, k, None), (bool, int))}
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    ranked: list[tuple[int, str]] = []
    for name in torchvision.models.list_models(module=torchvision.models):
        if torchvision.models.get_model_builder(name).__module__ != module:
            continue
        try:
            with _LargeTensorsOnMeta():
                candidate = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **options)
        except Exception:  # a builder that does not take these options is not the one
            continue
        theirs = {k: tuple(v.shape) for k, v in candidate.state_dict().items()}
        if type(candidate) is type(model) and theirs.keys() == shapes.keys() and all(
                len(theirs[k]) == len(s) and all(a >= b for a, b in zip(theirs[k], s)) for k, s in shapes.items()):
            ranked.append((sum(math.prod(theirs[k]) - math.prod(s) for k, s in shapes.items()), name))
    return [{"spec": f"torchvision:{name}", "num_classes": num_classes, "in_channels": 3,
             **({"options": options} if options else {})} for _, name in sorted(ranked)]


def _plugin_model(spec: str, num_classes: int, in_channels: int, options: Mapping[str, Any]) -> nn.Module:
    """Call a user's model function with the keyword arguments it accepts."""
    if options:
        raise AdcError(f"model plugin {spec!r} takes no options, got {', '.join(sorted(options))}")
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


def build_model(spec: str, *, num_classes: int = 10, in_channels: int = 3,
                options: Mapping[str, Any] | None = None) -> nn.Module:
    """Build the (untrained) model named by ``spec``.

    Args:
        spec: ``zoo:NAME``, ``torchvision:NAME``, ``path/to/file.py:fn`` or ``package.module:fn``.
        num_classes: Outputs of the classifier.
        in_channels: Channels of the input images (torchvision models need 3).
        options: More keyword arguments for a torchvision builder (``{"image_size": 64}`` for a ViT).

    Returns:
        The model, with ``model.adc_model_spec`` set to a JSON-able dict of the arguments.

    Raises:
        AdcError: on an unknown spec or name, or a plugin that does not return a module.
    """
    if num_classes < 1 or in_channels < 1:
        raise AdcError(f"model {spec!r}: num_classes and in_channels must be >= 1, got {num_classes} and {in_channels}")
    options = dict(options or {})
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in MODEL_SOURCES:
        model = MODEL_SOURCES.get(prefix)(rest, num_classes, in_channels, options)
    elif is_plugin_spec(spec):
        model = _plugin_model(spec, num_classes, in_channels, options)
    else:
        hint = f" (did you mean 'zoo:{spec}'?)" if spec in ZOO else ""
        raise AdcError(f"unknown model spec {spec!r}{hint}; use {_SPEC_FORMS}; zoo models: {', '.join(ZOO.names())}")
    model.adc_model_spec = {"spec": spec, "num_classes": num_classes, "in_channels": in_channels,
                            **({"options": options} if options else {})}
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
        pickled = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if pickled:  # torch.save(model) rather than torch.save(model.state_dict())
            raise AdcError(
                f"checkpoint {str(path)!r} holds a pickled object ({pickled.group(1)}), not only tensors: adc reads "
                "checkpoints with weights_only=True and never runs pickled code; save the weights instead: "
                "torch.save(model.state_dict(), PATH)") from exc
        detail = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
        detail = detail.splitlines()[0] if detail else type(exc).__name__
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
