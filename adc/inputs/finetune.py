"""Fine-tune a pruned model from its kept weights (optionally distilling the unpruned one).

:func:`finetune` trains a copy of a (pruned) classifier with SGD, momentum and
a per-step cosine learning-rate schedule from ``lr`` to 0. It scores the model
on the validation split before training and after every epoch and returns the
best of those models by validation top-1 -- the starting model included, so
fine-tuning never hands back a worse model than it was given. The test split is
only reported, never used to choose. With a ``teacher`` it adds knowledge
distillation (Hinton et al., 2015): the loss is ``alpha * T^2 *
KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * cross-entropy``.
``extra_loss`` adds a term to every batch's loss (the sparsity regularisers of
:mod:`adc.pruning.sparsity`); ``on_epoch_start`` and ``on_epoch_end`` see the
model before and after every epoch's training (soft filter pruning,
:mod:`adc.pruning.soft`, re-zeroes its filters at the end and lets them train
again at the start).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, Subset

from adc.inputs.data import DataSplits, make_loader
from adc.inputs.training import evaluate, make_sgd, train_epoch
from adc.utils.device import check_device
from adc.utils.errors import AdcError

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


@dataclass(frozen=True)
class FinetuneOptions:
    """Settings of a fine-tune, checked when built.

    Attributes:
        epochs: Passes over the training data (>= 1).
        lr: Initial SGD learning rate (cosine schedule to 0, per step).
        momentum, weight_decay, batch_size: SGD settings (no weight decay on batch norms and biases).
        seed: Seeds the shuffling and the training subset.
        device: ``cpu`` or ``cuda``.
        temperature: Softening temperature of the distillation (with a teacher).
        alpha: Weight of the distillation term; ``1 - alpha`` weighs the label loss.
        train_samples: Train on this many training images (a fixed random subset
            chosen with ``seed``) instead of all, for a shorter fine-tune.
        keep_last: Hand back the model after the last epoch instead of the best on
            validation (a sparse training, whose point is the sparsity it reaches).
    """

    epochs: int = 5
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64
    seed: int = 0
    device: str = "cpu"
    temperature: float = 4.0
    alpha: float = 0.9
    train_samples: int | None = None
    keep_last: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise AdcError(f"--epochs {self.epochs!r}: fine-tuning needs at least 1 epoch")
        if not isinstance(self.lr, (int, float)) or not self.lr > 0 or not math.isfinite(self.lr):
            raise AdcError(f"--lr {self.lr!r}: the learning rate must be a positive number")
        if not 0 <= self.momentum < 1:
            raise AdcError(f"momentum {self.momentum!r}: must be in [0, 1)")
        if self.weight_decay < 0:
            raise AdcError(f"weight_decay {self.weight_decay!r}: must be >= 0")
        if self.batch_size < 1:
            raise AdcError(f"batch_size {self.batch_size!r}: must be >= 1")
        if not self.temperature > 0:
            raise AdcError(f"temperature {self.temperature!r}: the distillation temperature must be > 0")
        if not 0 <= self.alpha <= 1:
            raise AdcError(f"alpha {self.alpha!r}: the weight of the distillation term must be in [0, 1]")
        if self.train_samples is not None and self.train_samples < 1:
            raise AdcError(f"train_samples {self.train_samples!r}: must be >= 1 (or None for the whole train split)")
        check_device(self.device)


def _training_subset(splits: DataSplits, options: FinetuneOptions) -> Dataset:
    train_ds = splits.train
    if len(train_ds) == 0:
        raise AdcError(f"the training split of {splits.name!r} is empty; nothing to fine-tune on")
    if options.train_samples is not None and options.train_samples < len(train_ds):
        order = torch.randperm(len(train_ds), generator=torch.Generator().manual_seed(options.seed))
        train_ds = Subset(train_ds, sorted(order[: options.train_samples].tolist()))
    return train_ds


def finetune(
    model: nn.Module,
    splits: DataSplits,
    options: FinetuneOptions | None = None,
    *,
    teacher: nn.Module | None = None,
    extra_loss: Callable[[nn.Module], torch.Tensor] | None = None,
    on_epoch_start: Callable[[nn.Module, int], None] | None = None,
    on_epoch_end: Callable[[nn.Module, int], None] | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    **settings: Any,
) -> tuple[nn.Module, list[dict[str, Any]]]:
    """Fine-tune a copy of ``model`` on ``splits.train``; return the best model and per-epoch records.

    The model is scored on the validation split (and, for the report, on the
    test split) before training (record ``epoch`` 0) and after every epoch; the
    returned model is the one with the highest validation top-1 (the earliest on
    ties, so the starting model when training did not help), in eval mode, with
    the attributes :func:`adc.save` needs kept (the last epoch's with
``keep_last``). ``model`` itself is not modified.

    Args:
        model: The (pruned) classifier.
        splits: Data; trains on ``train``, chooses on ``val``, reports ``test``.
        options: The settings; ``**settings`` overrides single fields (``epochs=2``).
        teacher: The unpruned model to distil from (None: cross-entropy only).
        extra_loss: A term added to every batch's loss, a function of the model (a sparsity regulariser).
        on_epoch_start: Called with the model and the epoch number before each epoch's training.
        on_epoch_end: Called with the model and the epoch number after each epoch's training, before it is scored.
        progress: Called after each epoch with its record.

    Returns:
        ``(best_model, records)``; a record holds ``epoch``, ``lr`` (at the
        epoch's start), ``train_loss``, ``val_top1``, ``test_top1``, ``test_top5``,
        ``test_loss``, ``seconds``. :func:`kept_epoch` tells which one was returned.

    Raises:
        AdcError: on a bad setting (epochs < 1, lr <= 0, ...) or an empty training set.
    """
    o = dataclasses.replace(options or FinetuneOptions(), **settings)
    dev = check_device(o.device)
    loader = make_loader(_training_subset(splits, o), batch_size=o.batch_size, shuffle=True, seed=o.seed)
    student = copy.deepcopy(model).to(dev)
    if teacher is not None:
        teacher = teacher.to(dev).eval()

    def score(epoch: int, lr_now: float, train_loss: float | None, seconds: float) -> dict[str, Any]:
        val = evaluate(student, splits.val, device=str(dev))
        test = evaluate(student, splits.test, device=str(dev))
        return {"epoch": epoch, "lr": lr_now, "train_loss": train_loss, "val_top1": val["top1"], "test_top1": test["top1"],
                "test_top5": test["top5"], "test_loss": test["loss"], "seconds": seconds}

    def loss_fn(logits: torch.Tensor, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if teacher is None:
            loss = F.cross_entropy(logits, labels)
        else:
            with torch.no_grad():
                target = teacher(images)
            loss = distillation_loss(logits, target, labels, temperature=o.temperature, alpha=o.alpha)
        return loss if extra_loss is None else loss + extra_loss(student)

    records: list[dict[str, Any]] = [score(0, o.lr, None, 0.0)]
    best_state = {k: v.detach().clone() for k, v in student.state_dict().items()}
    optimizer = make_sgd(student, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    total_steps = max(1, o.epochs * len(loader))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total_steps)))
    for epoch in range(1, o.epochs + 1):
        started = time.perf_counter()
        epoch_lr = optimizer.param_groups[0]["lr"]
        if on_epoch_start is not None:
            on_epoch_start(student, epoch)
        train_loss = train_epoch(student, loader, optimizer, scheduler, device=dev, epoch=epoch, loss_fn=loss_fn)
        if on_epoch_end is not None:
            on_epoch_end(student, epoch)
        student.eval()
        records.append(score(epoch, epoch_lr, train_loss, time.perf_counter() - started))
        if records[-1]["val_top1"] > max(r["val_top1"] for r in records[:-1]):
            best_state = {k: v.detach().clone() for k, v in student.state_dict().items()}
        if progress is not None:
            progress(records[-1])
    if o.keep_last:
        records[-1]["kept"] = True
        return student.eval(), records
    student.load_state_dict(best_state)
    return student.eval(), records


def kept_epoch(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The record :func:`finetune` returned the model of: highest validation top-1, earliest on ties
    (the last epoch's with ``keep_last``, marked ``"kept"``)."""
    marked = [r for r in records if r.get("kept")]
    return marked[-1] if marked else max(records, key=lambda r: (r["val_top1"], -r["epoch"]))
