"""Files and folders: atomic writes that respect the umask, adc's cache folders, one-line file-system errors.

Every file adc writes goes through :func:`atomic_write`: a temporary sibling,
then a rename, so a crash never leaves half a file. The temporary file is
created private (``mkstemp``); before the rename it gets the mode an ordinary
``open()`` would have given it (``0o666`` less the umask), as other tools do.

``$ADC_CACHE_DIR`` (default ``~/.cache/adc``) is the root of every cache:
``models/`` (reference models trained on first use), ``latency/`` (latency
tables and channel-alignment probes) and ``data/`` (downloaded data sets).
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adc.utils.errors import AdcError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def describe_os_error(exc: OSError) -> str:
    """A short reason for a file-system failure: 'not writable', 'disk full', ..."""
    reasons = {errno.EACCES: "permission denied", errno.EPERM: "permission denied", errno.ENOSPC: "no space left on the device",
               errno.EROFS: "read-only file system", errno.ENOTDIR: "a path component is a file, not a folder",
               errno.EEXIST: "a file is in the way", errno.EISDIR: "it is a folder", errno.EDQUOT: "disk quota exceeded"}
    return reasons.get(exc.errno or 0, exc.strerror or type(exc).__name__)


def atomic_write(path: str | Path, write: Callable[[str], Any]) -> Path:
    """Write a file through a temporary sibling and a rename.

    Args:
        path: Destination.
        write: Callable taking the temporary path and writing it.

    Raises:
        AdcError: when the folder cannot be created or written (permission, full disk, a file in the way):
            one line naming the path and the reason.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise AdcError(f"cannot write {str(path)!r}: {describe_os_error(exc)}") from exc
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as exc:
        raise AdcError(f"cannot write {str(path)!r}: {describe_os_error(exc)}") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write text atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write bytes atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def cache_root() -> Path:
    """``$ADC_CACHE_DIR`` if set, else ``~/.cache/adc``: the root of adc's caches."""
    env = os.environ.get("ADC_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "adc"


def cache_dir(kind: str) -> Path:
    """The cache folder of one kind: ``models``, ``latency`` or ``data`` under :func:`cache_root`.

    ``$ADC_DATA_DIR``, when set, overrides the data folder (data sets are often shared).
    """
    if kind == "data" and os.environ.get("ADC_DATA_DIR"):
        return Path(os.environ["ADC_DATA_DIR"]).expanduser()
    return cache_root() / kind
