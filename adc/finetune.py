"""Fine-tune a pruned model from its kept weights (optionally distilling the unpruned one).

:func:`finetune` trains a copy of a (pruned) classifier with SGD, momentum and
a per-step cosine learning-rate schedule from ``lr`` to 0, evaluates it on the
test split after every epoch and returns the best epoch's model (by test top-1,
as the benchmark and ``adc finetune`` report it) with one record per epoch.
With a ``teacher`` it adds knowledge distillation (Hinton et al., 2015): the
loss is ``alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) +
(1 - alpha) * cross-entropy``.

:func:`finetune_run` does it for a search's output folder: it loads
``model.pt``, finds the data (and, to distil, the unpruned model) from the
folder's ``config.toml``, and writes ``model_finetuned.pt`` (same
:func:`adc.save` format, same pruned structure) and ``finetune.json`` (the
settings and the result, one flat JSON object).
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Subset

from adc.data import DataSplits, make_loader
from adc.errors import AdcError
from adc.training import evaluate, make_sgd, train_epoch

FINETUNED_FILE = "model_finetuned.pt"
SETTINGS_FILE = "finetune.json"


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, *,
                      temperature: float, alpha: float) -> torch.Tensor:
    """``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, labels)``.

    The ``T^2`` factor keeps the soft term's gradients on the scale of the hard
    term's whatever the temperature (Hinton et al., 2015).
    """
    soft = F.kl_div(F.log_softmax(student / temperature, dim=1), F.log_softmax(teacher / temperature, dim=1),
                    reduction="batchmean", log_target=True)
    hard = F.cross_entropy(student, labels)
    return alpha * temperature * temperature * soft + (1.0 - alpha) * hard


def _check_settings(epochs: int, lr: float, momentum: float, weight_decay: float, batch_size: int,
                    temperature: float, alpha: float, train_samples: int | None) -> None:
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise AdcError(f"--epochs {epochs!r}: fine-tuning needs at least 1 epoch")
    if not lr > 0 or not math.isfinite(lr):
        raise AdcError(f"--lr {lr!r}: the learning rate must be a positive number")
    if not 0 <= momentum < 1:
        raise AdcError(f"momentum {momentum!r}: must be in [0, 1)")
    if weight_decay < 0:
        raise AdcError(f"weight_decay {weight_decay!r}: must be >= 0")
    if batch_size < 1:
        raise AdcError(f"batch_size {batch_size!r}: must be >= 1")
    if not temperature > 0:
        raise AdcError(f"temperature {temperature!r}: the distillation temperature must be > 0")
    if not 0 <= alpha <= 1:
        raise AdcError(f"alpha {alpha!r}: the weight of the distillation term must be in [0, 1]")
    if train_samples is not None and train_samples < 1:
        raise AdcError(f"train_samples {train_samples!r}: must be >= 1 (or None for the whole train split)")


def finetune(
    model: nn.Module,
    splits: DataSplits,
    *,
    epochs: int,
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    batch_size: int = 64,
    seed: int = 0,
    device: str = "cpu",
    teacher: nn.Module | None = None,
    temperature: float = 4.0,
    alpha: float = 0.9,
    train_samples: int | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[nn.Module, list[dict[str, Any]]]:
    """Fine-tune a copy of ``model`` on ``splits.train``; return the best epoch's model and per-epoch records.

    SGD with momentum (no weight decay on batch-norm parameters and biases) and
    a per-step cosine schedule from ``lr`` to 0, starting from the kept weights.
    The model is evaluated on the test split before training (record ``epoch`` 0)
    and after every epoch; the returned model is the fine-tuned epoch with the
    highest test top-1 (the first one on ties), in eval mode, with the
    attributes :func:`adc.save` needs (``adc_model_spec``, ``adc_pruning``) kept.
    ``model`` itself is not modified.

    Args:
        model: The (pruned) classifier.
        splits: Data; trains on ``train``, reports ``test``.
        epochs: Passes over the training data (>= 1).
        lr: Initial learning rate; momentum, weight_decay, batch_size: SGD settings.
        seed: Seeds the shuffling and the training subset.
        device: ``cpu`` or ``cuda``.
        teacher: The unpruned model to distil from (None: cross-entropy only).
        temperature: Softening temperature ``T`` of the distillation.
        alpha: Weight of the distillation term; ``1 - alpha`` weighs the label loss.
        train_samples: Train on this many training images (a fixed random subset
            chosen with ``seed``) instead of all, for a shorter fine-tune.
        progress: Called after each epoch with its record.

    Returns:
        ``(best_model, records)``; a record holds ``epoch``, ``lr`` (at the
        epoch's start), ``train_loss``, ``test_top1``, ``test_top5``, ``test_loss``, ``seconds``.

    Raises:
        AdcError: on a bad setting (epochs < 1, lr <= 0, ...) or an empty training set.
    """
    from adc.search import check_device

    _check_settings(epochs, lr, momentum, weight_decay, batch_size, temperature, alpha, train_samples)
    dev = check_device(device)
    train_ds = splits.train
    if len(train_ds) == 0:
        raise AdcError(f"the training split of {splits.name!r} is empty; nothing to fine-tune on")
    if train_samples is not None and train_samples < len(train_ds):
        order = torch.randperm(len(train_ds), generator=torch.Generator().manual_seed(seed))[:train_samples]
        train_ds = Subset(train_ds, sorted(order.tolist()))

    student = copy.deepcopy(model).to(dev)
    if teacher is not None:
        teacher = teacher.to(dev).eval()
    before = evaluate(student, splits.test, device=str(dev))
    records: list[dict[str, Any]] = [{"epoch": 0, "lr": lr, "train_loss": None, "test_top1": before["top1"],
                                      "test_top5": before["top5"], "test_loss": before["loss"], "seconds": 0.0}]

    optimizer = make_sgd(student, lr=lr, momentum=momentum, weight_decay=weight_decay)
    loader = make_loader(train_ds, batch_size=batch_size, shuffle=True, seed=seed)
    total_steps = max(1, epochs * len(loader))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total_steps)))

    loss_fn = None
    if teacher is not None:
        def loss_fn(logits: torch.Tensor, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                target = teacher(images)
            return distillation_loss(logits, target, labels, temperature=temperature, alpha=alpha)

    best_state: dict[str, torch.Tensor] | None = None
    best_top1 = -1.0
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        epoch_lr = optimizer.param_groups[0]["lr"]
        train_loss = train_epoch(student, loader, optimizer, scheduler, device=dev, epoch=epoch, loss_fn=loss_fn)
        student.eval()
        test = evaluate(student, splits.test, device=str(dev))
        record = {"epoch": epoch, "lr": epoch_lr, "train_loss": train_loss, "test_top1": test["top1"],
                  "test_top5": test["top5"], "test_loss": test["loss"], "seconds": time.perf_counter() - started}
        records.append(record)
        if test["top1"] > best_top1:
            best_top1 = test["top1"]
            best_state = {k: v.detach().clone() for k, v in student.state_dict().items()}
        if progress is not None:
            progress(record)
    assert best_state is not None
    student.load_state_dict(best_state)
    return student.eval(), records


def _run_settings(run_dir: Path, header: dict[str, Any]) -> dict[str, Any]:
    """The search settings of a run folder: its config.toml, else those stored in model.pt."""
    from adc.outputs import CONFIG_FILE, read_config

    if (run_dir / CONFIG_FILE).is_file():
        return read_config(run_dir / CONFIG_FILE)
    return dict((header.get("meta") or {}).get("settings") or {})


def finetune_run(
    run_dir: str | Path,
    *,
    data: str | None = None,
    epochs: int,
    distill: bool = False,
    device: str = "cpu",
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    batch_size: int = 64,
    seed: int = 0,
    temperature: float = 4.0,
    alpha: float = 0.9,
    train_samples: int | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    status: Callable[[str], None] | None = None,
) -> Path:
    """Fine-tune the pruned model of a search's output folder; write ``model_finetuned.pt`` and ``finetune.json``.

    Args:
        run_dir: A folder written by ``adc search`` (holds ``model.pt`` and ``config.toml``).
        data: Data spec (default: the search's, from ``config.toml``). The
            train / validation split is the default one, as in the search.
        epochs, lr, momentum, weight_decay, batch_size, seed, device,
        temperature, alpha, train_samples: See :func:`finetune`.
        distill: Distil from the unpruned model (the search's model and checkpoint).
        progress: Per-epoch callback (see :func:`finetune`).
        status: Called with one-line status messages.

    Returns:
        The path of ``model_finetuned.pt``.

    Raises:
        AdcError: on a missing folder or model file, a bad setting, unknown data,
            or distillation without a known unpruned model.
    """
    from adc.data import load_data
    from adc.pipeline import SearchConfig, load_model
    from adc.search import check_device
    from adc.serialization import atomic_write_text, load, read_header, save

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise AdcError(f"run folder {str(run_dir)!r} does not exist; pass the --out folder of an adc search")
    model_file = run_dir / "model.pt"
    if not model_file.is_file():
        raise AdcError(f"run folder {str(run_dir)!r} has no model.pt; is the search finished? (adc search --resume it)")
    _check_settings(epochs, lr, momentum, weight_decay, batch_size, temperature, alpha, train_samples)
    check_device(device)
    header, _ = read_header(model_file)
    settings = _run_settings(run_dir, header)
    data = data or settings.get("data")
    if not data:
        raise AdcError(f"run folder {str(run_dir)!r} does not record its data (no config.toml); pass --data SPEC")
    splits = load_data(data)
    model = load(model_file)

    teacher = None
    if distill:
        if not settings.get("model"):
            raise AdcError(f"--distill needs the unpruned model, but {str(run_dir)!r} has no config.toml naming it")
        config = SearchConfig(model=settings["model"], checkpoint=settings.get("checkpoint"), data=data)
        if config.checkpoint is not None and not Path(config.checkpoint).is_file():
            raise AdcError(f"--distill: the unpruned model's checkpoint {config.checkpoint!r} no longer exists")
        teacher = load_model(config, splits, status)

    best, records = finetune(model, splits, epochs=epochs, lr=lr, momentum=momentum, weight_decay=weight_decay,
                             batch_size=batch_size, seed=seed, device=device, teacher=teacher,
                             temperature=temperature, alpha=alpha, train_samples=train_samples, progress=progress)
    best_record = max(records[1:], key=lambda r: r["test_top1"])
    result = {
        "data": data, "epochs": epochs, "lr": lr, "momentum": momentum, "weight_decay": weight_decay,
        "batch_size": batch_size, "seed": seed, "device": device, "schedule": "cosine", "optimizer": "sgd",
        "distill": distill, "temperature": temperature if distill else None, "alpha": alpha if distill else None,
        "train_samples": train_samples, "test_top1_before": records[0]["test_top1"],
        "test_top1_best": best_record["test_top1"], "best_epoch": best_record["epoch"],
        "test_top1_last": records[-1]["test_top1"],
    }
    meta = dict(header.get("meta") or {})
    meta["finetune"] = {**result, "history": records}
    out = run_dir / FINETUNED_FILE
    save(best.to("cpu"), out, policy=header.get("policy"), meta=meta)
    atomic_write_text(run_dir / SETTINGS_FILE, json.dumps(result, indent=2) + "\n")
    return out
