"""What a search's episodes are scored with: the reward's evaluation, the calibration images, the held-out images.

From the user's inputs -- data splits, or an ``evaluate`` function with
calibration data -- :func:`evaluation_inputs` makes the pieces the task and
the final selection need, and says (through ``note``) where the inputs fall
short of the settings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from adc.engine.options import DATA_CRITERIA, LABEL_CRITERIA, SearchOptions
from adc.engine.selection import MIN_HOLDOUT
from adc.inputs.calibration import calibration_set, fixed_images, image_range, labelled_batches
from adc.inputs.data import DataSplits
from adc.objective.evaluator import Score, ValidationScore
from adc.utils.errors import AdcError

Note = Callable[..., None]
"""``note(text, show=True)``: tell the user (``show=False``: record only)."""


@dataclass
class EvaluationInputs:
    """The scoring of a search.

    Attributes:
        score: The reward's evaluation of a model.
        source: How messages name it (``validation`` or ``evaluate``).
        bn_images: Training images for batch-norm recalibration (None: none).
        batches: Labelled calibration batches for data criteria and reconstruction (None: none).
        reconstruct: Whether layers are refit by least squares.
        holdout: The final selection's held-out scoring (None: no selection).
        calibration: What was used, for the result (source, counts, criterion).
    """

    score: Score
    source: str
    bn_images: torch.Tensor | None
    batches: list | None
    reconstruct: bool
    holdout: Score | None = None
    calibration: dict[str, Any] = field(default_factory=dict)


def has_batch_norm(model: nn.Module) -> bool:
    """Whether ``model`` has a batch norm to recalibrate."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def validation_score(data: DataSplits, options: SearchOptions, device: str = "cpu") -> ValidationScore:
    """The reward's evaluation: top-1 and loss on the first ``val_size`` validation images.

    Raises:
        AdcError: the validation split is empty.
    """
    images, labels = image_range(data.val, 0, options.reward_images)
    if len(labels) == 0:
        raise AdcError(f"the validation split of {data.name!r} is empty; raise the validation fraction")
    return ValidationScore(images, labels, device=device, batch_size=options.eval_batch_size)


def evaluation_inputs(model: nn.Module, options: SearchOptions, device: str, *, data: DataSplits | None,
                      evaluate: Score | None, calibration: Any, note: Note) -> EvaluationInputs:
    """The reward's scoring, BN images, calibration batches, reconstruction and the held-out scoring.

    Raises:
        AdcError: an empty validation split, or ``evaluate=`` without the training images it needs.
    """
    o = options
    needs_bn = o.bn_calibration > 0 and has_batch_norm(model)
    if data is not None:
        reconstruct = True if o.reconstruct is None else o.reconstruct
        bn_images = fixed_images(data.train, o.bn_calibration, o.seed) if needs_bn else None
        batches = (labelled_batches(data.train, o.calibration_size, o.seed)
                   if (o.criterion in DATA_CRITERIA or reconstruct) else None)
        info: dict[str, Any] = {"source": f"the training split of {data.name!r}", "labelled": True}
        holdout = None
        if evaluate is not None:
            score, source = evaluate, "evaluate"
        else:
            score, source = validation_score(data, o, device), "validation"
            if len(score) < o.reward_images:
                note(f"the reward is computed on {len(score)} validation images, not the {o.reward_images} "
                     f"{'asked for' if o.val_size is not None else 'of the default'}: the validation split "
                     f"of {data.name!r} has only {len(data.val)}", show=o.val_size is not None)
            holdout = _holdout(data, o, device, note)
    else:
        if evaluate is None:
            raise AdcError("search needs evaluate= or data=")
        score, source, holdout = evaluate, "evaluate", None
        bn_images, batches, reconstruct, info = _user_calibration(o, calibration, needs_bn, note)
    info.update({"bn_images": 0 if bn_images is None else len(bn_images),
                 "calibration_images": sum(len(x) for x, _ in batches) if batches else 0,
                 "reconstruct": bool(reconstruct), "criterion": o.criterion})
    if o.bn_calibration > 0 and not has_batch_norm(model):
        note("the model has no batch norm: nothing to recalibrate")
    return EvaluationInputs(score, source, bn_images, batches, bool(reconstruct), holdout, info)


def _user_calibration(o: SearchOptions, calibration: Any, needs_bn: bool,
                      note: Note) -> tuple[torch.Tensor | None, list | None, bool, dict[str, Any]]:
    reconstruct = o.reconstruct
    wants_batches = o.criterion in DATA_CRITERIA or reconstruct is not False
    if calibration is None:
        if needs_bn or reconstruct is None or reconstruct or o.criterion in DATA_CRITERIA:
            raise AdcError(
                "adc.search with evaluate= needs training images for batch-norm recalibration, reconstruction "
                f"and the {o.criterion!r} criterion: pass calibration= (a DataLoader, a Dataset of (image, label) "
                "or a tensor of training images) or data=; to search without them, pass bn_calibration=0, "
                "reconstruct=False (a freshly pruned model's accuracy then says little about its policy)")
        return None, None, False, {"source": "none (bn_calibration=0, reconstruct=False)", "labelled": False}
    cal = calibration_set(calibration, bn_count=o.bn_calibration if needs_bn else 0,
                          batch_count=o.calibration_size if wants_batches else 0, seed=o.seed)
    if o.criterion in LABEL_CRITERIA and not cal.labelled:
        raise AdcError(f"criterion {o.criterion!r} needs labelled calibration data: pass a Dataset or DataLoader "
                       "of (image, label), not a tensor of images")
    if needs_bn and cal.bn_count < o.bn_calibration:
        note(f"batch-norm recalibration uses {cal.bn_count} calibration images, not the {o.bn_calibration} "
             "asked for: the calibration data has no more")
    reconstruct = bool(cal.batches) if reconstruct is None else bool(reconstruct)
    return cal.bn_images, (cal.batches or None), reconstruct, {"source": cal.source, "labelled": cal.labelled}


def _holdout(data: DataSplits, o: SearchOptions, device: str, note: Note) -> Score | None:
    """The final selection's held-out validation images after the reward's, when there are enough."""
    if o.select_top <= 1:
        return None
    available = min(o.holdout_images, max(0, len(data.val) - o.reward_images))
    if available < MIN_HOLDOUT:
        # Said aloud only to a user who asked for a selection size; a small split's default search skips it.
        note(f"final selection skipped: {available} validation images remain beyond the reward's "
             f"{min(o.reward_images, len(data.val))} (it needs {MIN_HOLDOUT}); the result is the episode "
             "with the best reward", show=o.select_size is not None)
        return None
    images, labels = image_range(data.val, o.reward_images, o.holdout_images)
    return ValidationScore(images, labels, device=device, batch_size=o.eval_batch_size)
