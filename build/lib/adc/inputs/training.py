"""Train, evaluate and BN-recalibrate classifiers.

These three are what the search needs around a model: a trained starting
point (:func:`train_classifier`), a score for each pruned candidate
(:func:`evaluate`), and adaptive batch-norm (:func:`recalibrate_bn`), which
re-estimates BN statistics after pruning so that a candidate's accuracy
reflects the channels it kept rather than stale statistics (EagleEye, Li et
al., ECCV 2020).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from adc.inputs.data import make_loader
from adc.utils.errors import AdcError


def prepare_batch(x: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """Move a batch to ``device``; on CPU use channels_last, which oneDNN convs run several times faster."""
    x = x.to(device, non_blocking=True)
    if x.ndim == 4 and x.device.type == "cpu":
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def make_sgd(model: nn.Module, *, lr: float, momentum: float, weight_decay: float, nesterov: bool = False) -> torch.optim.SGD:
    """SGD over the trainable parameters, with no weight decay on batch norms and biases
    (decaying them only fights the normalisation)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return torch.optim.SGD(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, momentum=momentum, nesterov=nesterov,
    )


LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``loss(logits, images, labels)``: the loss of one batch."""


def train_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                scheduler: torch.optim.lr_scheduler.LRScheduler, *, device: torch.device | str, epoch: int,
                loss_fn: LossFn | None = None, batch_progress: Callable[[int], None] | None = None) -> float:
    """One pass over ``loader`` in train mode, stepping ``optimizer`` and ``scheduler`` every batch.

    Shared by :func:`train_classifier` and :func:`adc.finetune.finetune`.

    Args:
        loss_fn: The batch loss (default: cross-entropy with the labels).
        epoch: Its number, for the error message.
        batch_progress: Called with the number of batches done after every batch.

    Returns:
        The mean training loss over the epoch's images.

    Raises:
        AdcError: when a batch's loss is not finite (the learning rate is too high).
    """
    model.train()
    loss_sum, seen = 0.0, 0
    for batch, (images, labels) in enumerate(loader, 1):
        images, labels = prepare_batch(images, device), torch.as_tensor(labels).to(device)
        logits = model(images)
        loss = F.cross_entropy(logits, labels) if loss_fn is None else loss_fn(logits, images, labels)
        value = loss.item()
        if not math.isfinite(value):
            lr = optimizer.param_groups[0].get("initial_lr", optimizer.param_groups[0]["lr"])
            raise AdcError(f"training diverged at epoch {epoch} (loss {value}); lower the learning rate (now {lr})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        loss_sum += value * len(labels)
        seen += len(labels)
        if batch_progress is not None:
            batch_progress(batch)
    return loss_sum / seen


def train_classifier(
    model: nn.Module,
    train_ds: Dataset,
    *,
    epochs: int,
    lr: float = 0.1,
    batch_size: int = 64,
    weight_decay: float = 5e-4,
    seed: int = 0,
    device: str = "cpu",
    progress: Callable[[int, float], None] | None = None,
    batch_progress: Callable[[int, int], None] | None = None,
) -> nn.Module:
    """Train ``model`` in place with cross-entropy and return it in eval mode.

    SGD with Nesterov momentum 0.9 and weight decay, a per-step cosine learning
    rate schedule from ``lr`` to 0, and shuffling seeded with ``seed`` (the
    weights' initialisation is the caller's business).

    Args:
        model: The classifier.
        train_ds: Yields (image, label) pairs.
        epochs: Passes over ``train_ds``; 0 trains nothing.
        progress: Called after each epoch with (epoch, mean training loss), epochs counted from 1.
        batch_progress: Called after every batch with (batches done, batches in all).

    Raises:
        AdcError: on a negative ``epochs`` or an empty data set.
    """
    if epochs < 0:
        raise AdcError(f"epochs must be >= 0, got {epochs}")
    if len(train_ds) == 0:
        raise AdcError("the training set is empty")
    model.to(device)
    if epochs == 0:
        return model.eval()
    loader = make_loader(train_ds, batch_size=batch_size, shuffle=True, seed=seed)
    optimizer = make_sgd(model, lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True)
    total_steps = epochs * len(loader)
    # A linear warm-up over the first epoch (at most a tenth of training) keeps
    # deep nets such as ResNet-56 from diverging at lr 0.1 (He et al. warm up ResNet-110).
    warmup = max(1, min(len(loader), total_steps // 10))

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    for epoch in range(1, epochs + 1):
        done_before = (epoch - 1) * len(loader)
        on_batch = None if batch_progress is None else (lambda b, d=done_before: batch_progress(d + b, total_steps))
        loss = train_epoch(model, loader, optimizer, scheduler, device=device, epoch=epoch, batch_progress=on_batch)
        if progress is not None:
            progress(epoch, loss)
    return model.eval()


# What evaluate() scores: a Dataset, a DataLoader, or a list of ready
# (images, labels) batches (the search evaluates the same ones every episode).
EvalData = Dataset | DataLoader | list[tuple[torch.Tensor, torch.Tensor]]


def _batches(data: EvalData, batch_size: int, max_samples: int | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of (images, labels) from ``data``, at most ``max_samples`` images in all."""
    if isinstance(data, DataLoader) or (isinstance(data, list) and data and isinstance(data[0], tuple)):
        loader = data  # already batched
    else:
        if max_samples is not None and max_samples < len(data):
            data = Subset(data, range(max_samples))  # the first images: deterministic
        loader = make_loader(data, batch_size=batch_size)
    left = max_samples
    for images, labels in loader:
        if left is not None:
            if left <= 0:
                return
            images, labels = images[:left], labels[:left]
            left -= len(labels)
        yield images, torch.as_tensor(labels)


def evaluate(
    model: nn.Module,
    dataset_or_loader: EvalData,
    *,
    device: str = "cpu",
    batch_size: int = 128,
    max_samples: int | None = None,
) -> dict[str, float | int]:
    """Accuracy and loss of ``model`` on a data set, without gradients, in eval mode.

    The model's train/eval mode is restored afterwards.

    Args:
        dataset_or_loader: A Dataset, a DataLoader, or a list of ready
            (images, labels) batches (cheapest when the same images are scored many times).
        max_samples: Score only the first this many samples (None: all).

    Returns:
        ``{"top1", "top5", "loss", "samples"}``: accuracies in [0, 1] (top5
        uses min(5, classes)), mean cross-entropy, and the number of samples.

    Raises:
        AdcError: if there is nothing to evaluate.
    """
    was_training = model.training
    model.eval()
    correct1 = correct5 = 0
    loss_sum, seen = 0.0, 0
    try:
        with torch.inference_mode():
            for images, labels in _batches(dataset_or_loader, batch_size, max_samples):
                labels = labels.to(device)
                logits = model(prepare_batch(images, device))
                loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
                k = min(5, logits.shape[1])
                topk = logits.topk(k, dim=1).indices
                hits = topk.eq(labels[:, None])
                correct1 += int(hits[:, 0].sum())
                correct5 += int(hits.any(dim=1).sum())
                seen += len(labels)
    finally:
        model.train(was_training)
    if seen == 0:
        raise AdcError("nothing to evaluate: the data set is empty (or max_samples is 0)")
    return {"top1": correct1 / seen, "top5": correct5 / seen, "loss": loss_sum / seen, "samples": seen}


def recalibrate_bn(model: nn.Module, images: torch.Tensor, *, batch_size: int = 64) -> nn.Module:
    """Re-estimate every BatchNorm's running mean and variance on ``images`` (adaptive BN).

    Statistics are reset and then accumulated as a cumulative average over
    all the images (like ``momentum=None``, but weighting each batch by its
    size), with only the BN layers in train mode so dropout and the like stay
    off; the layers' momenta are restored afterwards. The model is returned in eval mode; a
    model without batch norm is returned unchanged (in eval mode).

    Args:
        model: The (usually freshly pruned) model; modified in place.
        images: A batch of input images, N x C x H x W, N >= 2.
        batch_size: Images per forward pass.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    model.eval()
    if not bns:
        return model
    if len(images) < 2:
        raise AdcError(f"recalibrate_bn needs at least 2 images to estimate batch statistics, got {len(images)}")
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    momenta = [bn.momentum for bn in bns]
    try:
        for bn in bns:
            bn.reset_running_stats()
            bn.train()
        # Never leave a last batch of one image: BN cannot take batch statistics of a single 1x1 map.
        starts = list(range(0, len(images), batch_size))
        if len(starts) > 1 and len(images) - starts[-1] == 1:
            starts.pop()
        seen = 0
        with torch.no_grad():
            for i, start in enumerate(starts):
                end = starts[i + 1] if i + 1 < len(starts) else len(images)
                # momentum = b / (seen + b) makes the running values the average of
                # the batch statistics weighted by batch size, so every image counts
                # the same (momentum=None would over-weight a short last batch).
                for bn in bns:
                    bn.momentum = (end - start) / (seen + end - start)
                model(prepare_batch(images[start:end], device))
                seen += end - start
    finally:
        for bn, momentum in zip(bns, momenta):
            bn.momentum = momentum
        model.eval()
    return model
