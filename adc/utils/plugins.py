"""Load a user's callable from ``path/to/file.py:fn`` or ``package.module:fn``.

Models, data sources and rewards all accept such specs, so the loading and its
error messages live in one place.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from adc.utils.errors import AdcError


FILE_MODULE_PREFIX = "adc_plugin_"
"""The name prefix of a module loaded from a ``file.py`` spec (no other process can import it by that name)."""


def file_modules() -> list[ModuleType]:
    """The modules loaded from ``path/to/file.py`` specs in this process.

    A worker process cannot import them, so whatever ships a model, dataset or
    function defined in one to another process (Ray) pickles them by value.
    """
    return [m for name, m in list(sys.modules.items()) if name.startswith(FILE_MODULE_PREFIX)]


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
        mod_name = FILE_MODULE_PREFIX + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16]
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
            hint = ""
            if isinstance(exc, ModuleNotFoundError) and exc.name == target.partition(".")[0]:
                hint = (f" (put its folder on PYTHONPATH, or name the file: "
                        f"{target.replace('.', '/')}.py:{attr})")
            raise AdcError(f"{what} plugin {spec!r}: cannot import module {target!r}: "
                           f"{type(exc).__name__}: {exc}{hint}") from exc
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise AdcError(f"{what} plugin {spec!r}: {target!r} has no callable named {attr!r}")
    return fn
