"""The Evaluator: a policy in, accuracy metrics out.

Every candidate the search scores goes through one :class:`Evaluator`: prune
a copy of the model to the policy's kept channels (criterion and
least-squares reconstruction in the pruner), re-estimate its batch-norm
statistics on fixed training images (adaptive BN, EagleEye), and score it
with the evaluation function. It is built once and is picklable, so a worker
process or a Ray actor holds its own copy -- model, images, the pruner's
trace and statistics -- and runs episodes without asking for anything again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from adc.inputs.training import evaluate as evaluate_batches
from adc.inputs.training import prepare_batch, recalibrate_bn
from adc.objective.metrics import accuracy_metrics
from adc.pruning.pruner import ChannelPruner
from adc.utils.errors import AdcError
from adc.utils.formatting import one_line

Score = Callable[[nn.Module], Any]
"""``score(model)`` -> top-1 as a float, or a dict with ``top1`` (and optionally ``top5``, ``loss``, ...)."""


class ValidationScore:
    """Accuracy and loss on fixed images, laid out once as the device wants them (picklable).

    Args:
        images: N x C x H x W validation images.
        labels: N labels.
        device: Where the model runs.
        batch_size: Images per forward pass (raise it on a GPU).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, device: str = "cpu", batch_size: int = 128) -> None:
        if len(images) == 0:
            raise AdcError("no validation images to score candidates on")
        self.images, self.labels = images, labels
        self.device, self.batch_size = str(device), int(batch_size)
        self._batches = list(zip(prepare_batch(images, device).split(self.batch_size),
                                 labels.to(device).split(self.batch_size)))

    def __len__(self) -> int:
        return len(self.labels)

    def __call__(self, model: nn.Module) -> dict[str, float]:
        return evaluate_batches(model, self._batches, device=self.device, batch_size=self.batch_size)

    def __getstate__(self) -> dict[str, Any]:  # ship the images once, lay them out on arrival
        return {"images": self.images, "labels": self.labels, "device": self.device, "batch_size": self.batch_size}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["images"], state["labels"], device=state["device"], batch_size=state["batch_size"])

    def to(self, device: str) -> ValidationScore:
        """The same images, laid out for ``device``."""
        return ValidationScore(self.images, self.labels, device=device, batch_size=self.batch_size)


def score_model(score: Score, model: nn.Module, source: str = "evaluate") -> dict[str, float]:
    """``score(model)`` as accuracy metrics; AdcError (one line, naming ``source``) if it raises or returns no top-1."""
    try:
        value = score(model)
    except AdcError:
        raise
    except Exception as exc:  # the user's function may raise anything
        raise AdcError(f"{source} failed: {one_line(exc)}") from exc
    return accuracy_metrics(value, source)


@dataclass(frozen=True)
class Evaluation:
    """What one candidate scored: its accuracy metrics and where the time went."""

    metrics: dict[str, float]
    prune_seconds: float
    evaluate_seconds: float
    worker: int = 0


@dataclass
class Evaluator:
    """Prune to kept channel counts, recalibrate batch norms, score.

    Attributes:
        pruner: Prunes copies of the unpruned model (trace, ranking, reconstruction statistics).
        score: The evaluation function (:class:`ValidationScore` or the user's).
        bn_images: Training images for adaptive BN, or None to keep the stale statistics.
        source: How messages name the score ("evaluate", "the validation split").
    """

    pruner: ChannelPruner
    score: Score
    bn_images: torch.Tensor | None = None
    source: str = "evaluate"

    def __post_init__(self) -> None:
        if self.bn_images is not None and len(self.bn_images) == 0:
            self.bn_images = None

    def model(self, kept: np.ndarray) -> nn.Module:
        """The pruned, recalibrated copy for ``kept`` channels per unit, in eval mode."""
        pruned = self.pruner.prune_kept(kept)
        if self.bn_images is not None:
            recalibrate_bn(pruned, self.bn_images)
        return pruned.eval()

    def __call__(self, kept: np.ndarray) -> Evaluation:
        """Score the candidate keeping ``kept[i]`` channels of unit ``i``."""
        t0 = time.perf_counter()
        pruned = self.pruner.prune_kept(kept)
        t1 = time.perf_counter()
        if self.bn_images is not None:
            recalibrate_bn(pruned, self.bn_images)
        metrics = self._score(pruned)
        return Evaluation(metrics, t1 - t0, time.perf_counter() - t1)

    def unpruned(self) -> dict[str, float]:
        """The unpruned model's metrics (its own batch-norm statistics)."""
        return self._score(self.pruner.model)

    def _score(self, model: nn.Module) -> dict[str, float]:
        return score_model(self.score, model, self.source)

    def with_score(self, score: Score, source: str | None = None) -> Evaluator:
        """The same pruning and recalibration, scored by another function (the final selection's held-out images)."""
        return replace(self, score=score, source=source or self.source)

    def to(self, device: str) -> Evaluator:
        """This evaluator with its model, images and scoring on ``device`` (a worker's GPU)."""
        pruner = self.pruner.to(device)
        score = self.score.to(device) if isinstance(self.score, ValidationScore) else self.score
        bn = prepare_batch(self.bn_images, device) if self.bn_images is not None else None
        return replace(self, pruner=pruner, score=score, bn_images=bn)
