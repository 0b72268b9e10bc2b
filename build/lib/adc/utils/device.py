"""Devices and CPU threads: checked once, set around a piece of work and restored."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from adc.utils.errors import AdcError

DEVICES = ("cpu", "cuda")


def check_device(device: str) -> torch.device:
    """The torch device named ``device``, or a one-line refusal when it is unknown or absent.

    Raises:
        AdcError: for a name other than ``cpu``, ``cuda`` or ``cuda:N``, or a CUDA device this machine lacks.
    """
    if not isinstance(device, str) or (device not in DEVICES and not device.startswith("cuda:")):
        raise AdcError(f"unknown device {device!r}; valid: {', '.join(DEVICES)} (or cuda:N)")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise AdcError(f"device {device!r} is not available on this machine (torch.cuda.is_available() is False); "
                           "use --device cpu")
        index = device.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise AdcError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                           f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return torch.device(device)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the body with ``threads`` torch intra-op threads (None or 0: leave as is), then restore.

    One thread is adc's default: on a shared 2-core machine torch's default
    (one per core) made OpenMP spin and stalled small searches many times over.
    """
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)
