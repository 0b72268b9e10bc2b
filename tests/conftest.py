"""Shared fixtures: one trained reference model for the whole session.

Training the embedded default (``zoo:plain20`` on digits, what ``adc search``
uses when no model is given) is the slowest thing the tests need, so it
happens once per session, in a session cache that ``$ADC_CACHE_DIR`` points to
for the rest of the session -- the CLI tests (in-process and subprocesses)
then find the same file instead of training again. Set
``ADC_TEST_CACHE_DIR=/some/dir`` to reuse that cache across test runs.

To keep ``make test`` fast on two busy cores the model is trained for
``TEST_EPOCHS`` rather than the CLI's ``DEFAULT_EPOCHS`` (about 96% instead of
98% test top-1 on digits), and the session cache is seeded with it under the
name ``adc search`` looks for: the tests check the pipeline, not the last
points of accuracy.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from filelock import FileLock
from torch import nn

from adc.inputs.data import DataSplits, load_data
from adc.inputs.models import build_model, load_checkpoint
from adc.inputs.pretrained import DEFAULT_DATA, DEFAULT_EPOCHS, DEFAULT_MODEL, cache_path, ensure_trained

TEST_EPOCHS = 8


@pytest.fixture(scope="session")
def adc_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``$ADC_CACHE_DIR`` for the session: ``$ADC_TEST_CACHE_DIR`` if set, else a fresh temporary folder."""
    shared = os.environ.get("ADC_TEST_CACHE_DIR")
    if shared:
        path = Path(shared)
    elif os.environ.get("PYTEST_XDIST_WORKER"):  # one folder for every xdist worker of this run: trained once
        path = tmp_path_factory.getbasetemp().parent / "adc-cache"
    else:
        path = tmp_path_factory.mktemp("adc-cache")
    path.mkdir(parents=True, exist_ok=True)
    old = os.environ.get("ADC_CACHE_DIR")
    os.environ["ADC_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("ADC_CACHE_DIR", None)
    else:
        os.environ["ADC_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def digits() -> DataSplits:
    """The digits splits the default model was trained on (same seed and validation fraction)."""
    return load_data(DEFAULT_DATA)


@pytest.fixture(scope="session")
def trained_checkpoint(adc_cache_dir: Path) -> Path:
    """State dict of the embedded default model (``TEST_EPOCHS``), also where ``adc search`` looks for it."""
    with FileLock(str(adc_cache_dir / "trained.lock")):  # xdist workers wait for the first one's training
        path = ensure_trained(DEFAULT_MODEL, DEFAULT_DATA, epochs=TEST_EPOCHS, seed=0)
        default = cache_path(DEFAULT_MODEL, DEFAULT_DATA, epochs=DEFAULT_EPOCHS, seed=0)
        if not default.is_file():
            shutil.copyfile(path, default)
    return path


@pytest.fixture(scope="session")
def make_trained(trained_checkpoint: Path, digits: DataSplits) -> Callable[[], nn.Module]:
    """A factory of fresh copies of the trained default model (tests may change their copy)."""

    def make() -> nn.Module:
        model = build_model(DEFAULT_MODEL, num_classes=digits.num_classes, in_channels=digits.in_channels)
        return load_checkpoint(model, trained_checkpoint).eval()

    return make


@pytest.fixture
def trained(make_trained: Callable[[], nn.Module]) -> nn.Module:
    """A fresh copy of the trained default model."""
    return make_trained()


@pytest.fixture(scope="session")
def digits_input(digits: DataSplits) -> torch.Tensor:
    return torch.zeros(1, digits.in_channels, *digits.image_size)


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Run the suite on one intra-op thread (and tell subprocesses to).

    The models here are tiny (8x8 digits), so a second thread buys little,
    while on a busy 2-core machine spinning OpenMP threads stalled forwards
    by 10-100x (measured: densenet121 at 64x64 took 9.4 s with 2 threads, 0.06 s with 1).
    """
    previous = torch.get_num_threads()
    old_env = os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    torch.set_num_threads(previous)
    if old_env is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = old_env
