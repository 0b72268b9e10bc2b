"""Train-once, cache-forever reference models.

The search prunes a *trained* network. When the user brings none (the
embedded default, the tests, the benchmarks), :func:`ensure_trained` trains
one on the data's train split -- never on the validation split, which the
search's reward uses -- and caches its state dict on disk, so the second call
costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import torch

from adc.inputs.data import load_data
from adc.inputs.models import build_model
from adc.inputs.training import evaluate, train_classifier
from adc.utils.files import atomic_write, atomic_write_text
from adc.utils.files import cache_dir as adc_cache_dir

# The embedded default: Plain-20 (AMC's CIFAR network) on scikit-learn's digits: 30 epochs take seconds on a CPU
# and reach about 98% test top-1, so `make demo` needs no download and no long training.
DEFAULT_MODEL = "zoo:plain20"
DEFAULT_DATA = "digits"
DEFAULT_EPOCHS = 30

# Training settings that are part of the cache key (the split must match the search's).
_TRAIN_SETTINGS = {"lr": 0.1, "batch_size": 64, "weight_decay": 5e-4}


def default_cache_dir() -> Path:
    """``$ADC_CACHE_DIR/models`` (default ``~/.cache/adc/models``)."""
    return adc_cache_dir("models")


def cache_path(
    model_spec: str,
    data_spec: str,
    *,
    epochs: int,
    seed: int = 0,
    split_seed: int = 0,
    val_fraction: float = 0.1,
    cache_dir: Path | None = None,
) -> Path:
    """Where :func:`ensure_trained` keeps the state dict for these arguments.

    The file name carries a readable slug and a hash of everything that
    changes the weights, including the torch version.
    """
    key = {
        "model": model_spec,
        "data": data_spec,
        "epochs": epochs,
        "seed": seed,
        "split_seed": split_seed,
        "val_fraction": val_fraction,
        "torch": torch.__version__,
        **_TRAIN_SETTINGS,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{model_spec}-{data_spec}")[-60:].strip("_")
    return Path(cache_dir or default_cache_dir()) / f"{slug}-e{epochs}-s{seed}-{digest}.pt"


def ensure_trained(
    model_spec: str,
    data_spec: str,
    *,
    epochs: int,
    seed: int = 0,
    split_seed: int = 0,
    val_fraction: float = 0.1,
    cache_dir: Path | None = None,
    progress: Callable[[int, float], None] | None = None,
    batch_progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Return the path of a state dict of ``model_spec`` trained on ``data_spec``, training it if not cached.

    The model is initialised and trained with ``seed`` and sees only the
    train split of ``load_data(data_spec, seed=split_seed, val_fraction=...)``;
    the search must use the same split so that its validation images stay
    unseen. The file is written atomically (temporary file, then rename), with
    a ``.json`` beside it recording the arguments, test accuracy and time.

    Args:
        model_spec: See :func:`adc.models.build_model`.
        data_spec: See :func:`adc.data.load_data`.
        epochs: Training epochs.
        seed: Seed of the weight initialisation and the shuffling.
        split_seed: Seed of the train / validation split.
        val_fraction: Share of the training data held out for validation.
        cache_dir: Folder of the cache (default :func:`default_cache_dir`).
        progress: Called with (epoch, mean loss) after each training epoch.
        batch_progress: Called with (batches done, batches in all) after every training batch.
    """
    path = cache_path(
        model_spec, data_spec, epochs=epochs, seed=seed, split_seed=split_seed, val_fraction=val_fraction, cache_dir=cache_dir
    )
    if path.is_file():
        return path
    splits = load_data(data_spec, seed=split_seed, val_fraction=val_fraction)
    # Seed the global RNG only inside fork_rng: weight init of torchvision and
    # plugin models draws from it, and the caller's RNG state is restored after.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(model_spec, num_classes=splits.num_classes, in_channels=splits.in_channels)
    start = time.perf_counter()
    train_classifier(model, splits.train, epochs=epochs, seed=seed, progress=progress, batch_progress=batch_progress,
                     **_TRAIN_SETTINGS)
    seconds = time.perf_counter() - start
    meta = {
        "model": model_spec,
        "data": data_spec,
        "epochs": epochs,
        "seed": seed,
        "split_seed": split_seed,
        "val_fraction": val_fraction,
        "torch": torch.__version__,
        "train_seconds": round(seconds, 2),
        "test_top1": evaluate(model, splits.test)["top1"],
        **_TRAIN_SETTINGS,
    }
    atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=2))
    state = model.state_dict()
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    return path


def is_trained(model_spec: str, data_spec: str, *, epochs: int, seed: int = 0) -> bool:
    """Whether :func:`ensure_trained` would find these weights in the cache (and train nothing)."""
    return cache_path(model_spec, data_spec, epochs=epochs, seed=seed).is_file()
