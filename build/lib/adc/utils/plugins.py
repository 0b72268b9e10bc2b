"""Load a user's callable from ``path/to/file.py:fn`` or ``package.module:fn``.

Models, data sources and rewards all accept such specs, so the loading and its
error messages live in one place.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adc.utils.errors import AdcError


def is_plugin_spec(spec: str) -> bool:
    """True if ``spec`` looks like ``file.py:fn`` or ``package.module:fn``."""
    if ":" not in spec:
        return False
    target, _, attr = spec.rpartition(":")
    return bool(target) and bool(attr) and (target.endswith(".py") or "." in target or "/" not in target) and attr.isidentifier()


def load_callable(spec: str, what: str) -> Callable[..., Any]:
    """Import and return the callable named by ``spec``.

    Args:
        spec: ``path/to/file.py:fn`` or ``package.module:fn``.
        what: What the callable is for, used in error messages ("reward").

    Raises:
        AdcError: if the file or module cannot be imported, or has no such callable.
    """
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise AdcError(f"{what} plugin {spec!r}: expected 'path/to/file.py:fn' or 'package.module:fn'")
    if target.endswith(".py"):
        path = Path(target).expanduser()
        if not path.is_file():
            raise AdcError(f"{what} plugin {spec!r}: file {str(path)!r} does not exist")
        mod_name = f"adc_plugin_{abs(hash(str(path.resolve())))}"
        try:
            loader_spec = importlib.util.spec_from_file_location(mod_name, path)
            assert loader_spec is not None and loader_spec.loader is not None
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[mod_name] = module
            loader_spec.loader.exec_module(module)
        except Exception as exc:  # the user's code may raise anything
            raise AdcError(f"{what} plugin {spec!r}: importing {str(path)!r} failed: {type(exc).__name__}: {exc}") from exc
    else:
        try:
            module = importlib.import_module(target)
        except Exception as exc:
            raise AdcError(f"{what} plugin {spec!r}: cannot import module {target!r}: {type(exc).__name__}: {exc}") from exc
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise AdcError(f"{what} plugin {spec!r}: {target!r} has no callable named {attr!r}")
    return fn
