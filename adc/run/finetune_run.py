"""``adc finetune``: fine-tune a run folder's pruned model, or train a model from its checkpoint.

Two doors, one recipe (:func:`adc.inputs.finetune.finetune`, which chooses on
the validation split and never hands back a model worse than it was given):

- :func:`finetune_run` -- a search's folder: fine-tune ``model.pt`` from its
  kept weights; ``soft=True`` instead trains the search's *unpruned* model
  with soft filter pruning (:mod:`adc.pruning.soft`) to the policy's kept
  channel counts and prunes it at the end. Writes ``model_finetuned.pt``
  (same :func:`adc.save` format, same pruned structure) and ``finetune.json``.
- :func:`train_run` -- a model spec and its checkpoint (the train-from-
  checkpoint path): a sparse fine-tune before a search (``sparsity=``), or
  soft filter pruning to a uniform width meeting a budget (``soft=True``,
  ``budget=``). Writes ``OUT/model.pt`` and ``OUT/finetune.json``; a later
  ``adc search --model SPEC --checkpoint OUT/model.pt`` searches it.

A sparsity regulariser (:data:`adc.pruning.sparsity.SPARSITY`) can be added to
either; with one, the model after the last epoch is kept (the point is the
sparsity it reaches), and ``finetune.json`` says how much its target shrank.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adc.analysis.graph import analyze
from adc.analysis.space import PolicySpace
from adc.inputs.data import DataSplits, example_input, load_data
from adc.inputs.finetune import FinetuneOptions, finetune, kept_epoch
from adc.inputs.pretrained import DEFAULT_DATA
from adc.objective.budgets import resolve_budgets, uniform_kept
from adc.pruning.serialization import load, read_header, save
from adc.pruning.soft import soft_prune
from adc.pruning.sparsity import SPARSITY, Regulariser, Sparsity
from adc.run.config import RunConfig
from adc.run.folder import RunFolder
from adc.run.pipeline import RunHooks, load_model
from adc.utils.device import torch_threads
from adc.utils.errors import AdcError

Progress = Callable[[dict[str, Any]], None] | None
Status = Callable[[str], None] | None


@dataclasses.dataclass(frozen=True)
class SparseTraining:
    """How a fine-tune shapes the model besides the loss.

    Attributes:
        sparsity: A name in :data:`~adc.pruning.sparsity.SPARSITY`, or None.
        strength: Its strength (None: the regulariser's default).
        soft: Soft filter pruning to the kept channel counts, pruned at the end.
    """

    sparsity: str | None = None
    strength: float | None = None
    soft: bool = False

    def __post_init__(self) -> None:
        if self.sparsity is not None:
            SPARSITY.get(self.sparsity)
        if self.strength is not None:
            if self.sparsity is None:
                raise AdcError(f"--sparsity-strength {self.strength}: give --sparsity too ({', '.join(SPARSITY.names())})")
            if isinstance(self.strength, bool) or not isinstance(self.strength, (int, float)) or not (
                    math.isfinite(self.strength) and self.strength > 0):
                raise AdcError(f"--sparsity-strength {self.strength!r}: must be a positive number")

    @property
    def method(self) -> Sparsity | None:
        return SPARSITY.get(self.sparsity) if self.sparsity else None

    def regulariser(self, model: nn.Module, x: torch.Tensor) -> Regulariser | None:
        """The loss term for ``model`` (its units traced with ``x``), or None without ``sparsity``."""
        method = self.method
        return None if method is None else method.regulariser(analyze(model, x), self.strength)

    def target(self, model: nn.Module, x: torch.Tensor) -> float | None:
        """What the regulariser shrinks, measured on ``model`` (None without one)."""
        method = self.method
        if method is None:
            return None
        with torch.no_grad():
            return float(method.penalty(model, analyze(model, x)))


def _check_threads(threads: Any) -> None:
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise AdcError(f"--threads {threads!r}: must be a positive integer")


def _train(model: nn.Module, x: torch.Tensor, splits: DataSplits, o: FinetuneOptions, shaping: SparseTraining, *,
           kept: dict[str, int] | None, teacher: nn.Module | None, progress: Progress) -> tuple[nn.Module, dict[str, Any]]:
    """Fine-tune (or soft-prune to ``kept``) with the regulariser; the model and the summary's training part."""
    regulariser = shaping.regulariser(model, x)
    if regulariser is not None:
        o = dataclasses.replace(o, keep_last=True)
    before = shaping.target(model, x)
    extra: dict[str, Any] = {}
    if shaping.soft:
        assert kept is not None
        soft = soft_prune(model, x, kept, splits, o, extra_loss=regulariser, teacher=teacher, progress=progress)
        best, records = soft.model, soft.records
        changed = [sum(len(set(a.get(u, [])) ^ set(b.get(u, []))) // 2 for u in a) for a, b in zip(soft.masks, soft.masks[1:])]
        extra["soft_changed_channels"] = ",".join(str(c) for c in changed)  # zeroed channels swapped at each epoch's end
    else:
        best, records = finetune(model, splits, o, extra_loss=regulariser, teacher=teacher, progress=progress)
    if shaping.sparsity:
        method = shaping.method
        assert method is not None
        extra.update({"sparsity_target": method.target, "sparsity_target_before": before,
                      "sparsity_target_after": shaping.target(best, x),
                      "sparsity_strength": shaping.strength if shaping.strength is not None else method.default_strength})
    return best, {"records": records, **extra}


def finetune_run(
    run_dir: str | Path,
    options: FinetuneOptions | None = None,
    *,
    data: str | None = None,
    distill: bool = False,
    threads: int = 1,
    shaping: SparseTraining | None = None,
    progress: Progress = None,
    status: Status = None,
    **settings: Any,
) -> tuple[Path, dict[str, Any]]:
    """Fine-tune the pruned model of a run folder; write ``model_finetuned.pt`` and ``finetune.json``.

    Args:
        run_dir: A folder written by ``adc search`` (holds ``model.pt`` and ``config.toml``).
        options: The fine-tune's settings (:class:`~adc.inputs.finetune.FinetuneOptions`);
            ``**settings`` overrides single fields (``epochs=1``).
        data: Data spec (default: the search's). The train / validation split is the search's.
        distill: Distil from the unpruned model (the search's model and checkpoint).
        threads: Torch CPU threads (default 1, as ``adc search``).
        shaping: A sparsity regulariser, or soft filter pruning of the search's
            unpruned model to the chosen policy's kept channels (instead of fine-tuning ``model.pt``).
        progress: Per-epoch callback.
        status: Called with one-line status messages.

    Returns:
        The path of ``model_finetuned.pt`` and the summary written to ``finetune.json``.

    Raises:
        AdcError: on a missing folder or model file, a bad setting, unknown data,
            or distillation without a known unpruned model.
    """
    o = dataclasses.replace(options or FinetuneOptions(), **settings)
    shaping = shaping or SparseTraining()
    folder = RunFolder(run_dir)
    if not folder.path.is_dir():
        raise AdcError(f"run folder {str(folder)!r} does not exist; pass the --out folder of an adc search")
    if not folder.model.is_file():
        raise AdcError(f"run folder {str(folder)!r} has no model.pt; is the search finished? (adc search --resume it)")
    _check_threads(threads)
    header, _ = read_header(folder.model)
    settings_of_run = folder.settings()
    data = data or settings_of_run.get("data")
    if not data:
        raise AdcError(f"run folder {str(folder)!r} does not record its data (no config.toml); pass --data SPEC")
    with torch_threads(threads):
        splits = load_data(data)
        unpruned = _unpruned(folder, settings_of_run, splits, status, "--distill" if distill else "--soft") \
            if (distill or shaping.soft) else None
        start = unpruned if shaping.soft else load(folder.model)
        kept = _policy_kept(folder) if shaping.soft else None
        best, trained = _train(start, example_input(splits), splits, o, shaping, kept=kept,
                               teacher=unpruned if distill else None, progress=progress)
    summary = _summary(o, trained, data=data, distill=distill, threads=threads, shaping=shaping)
    meta = dict(header.get("meta") or {})
    meta["finetune"] = {**summary, "history": trained["records"]}
    save(best.to("cpu"), folder.finetuned, policy=header.get("policy"), meta=meta)
    folder.write_finetune(summary)
    return folder.finetuned, summary


def _unpruned(folder: RunFolder, settings: dict[str, Any], splits: Any, status: Status, why: str) -> nn.Module:
    """The model the run searched (its model and checkpoint), for distillation or soft pruning."""
    if not settings.get("model"):
        raise AdcError(f"{why} needs the unpruned model, but {str(folder)!r} has no config.toml naming it")
    checkpoint = settings.get("checkpoint")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise AdcError(f"{why}: the unpruned model's checkpoint {checkpoint!r} no longer exists")
    return load_model(RunConfig(model=settings["model"], checkpoint=checkpoint, data=settings.get("data", "")),
                      splits, RunHooks(status=status))


def _policy_kept(folder: RunFolder) -> dict[str, int]:
    """The kept channels per unit of the run's chosen policy (``policy.json``)."""
    path = folder.file("policy.json")
    if not path.is_file():
        raise AdcError(f"--soft: run folder {str(folder)!r} has no policy.json to take the kept channels from")
    return {name: int(k) for name, k in json.loads(path.read_text())["kept"].items()}


def train_run(
    model: str,
    out: str | Path,
    options: FinetuneOptions | None = None,
    *,
    checkpoint: str | None = None,
    data: str = DEFAULT_DATA,
    shaping: SparseTraining | None = None,
    budget: Sequence[str] = (),
    min_keep: float = 0.2,
    distill: bool = False,
    threads: int = 1,
    progress: Progress = None,
    status: Status = None,
    **settings: Any,
) -> tuple[Path, dict[str, Any]]:
    """Train a model from its checkpoint: a sparse fine-tune before a search, or soft pruning to a budget.

    Args:
        model: Model spec (``zoo:NAME``, ``torchvision:NAME``, ``file.py:fn``).
        out: The folder to write (``model.pt``, ``finetune.json``); it must not hold a model yet.
        options: The fine-tune's settings; ``**settings`` overrides single fields.
        checkpoint: Its trained weights (a state dict or an :func:`adc.save` file;
            zoo models without one use adc's trained default).
        data: Data spec.
        shaping: The sparsity regulariser and / or soft filter pruning (one of them is needed).
        budget: With soft pruning: the budgets a uniform width must meet (``["flops=0.5"]``).
        min_keep: With soft pruning: the smallest kept fraction of any unit.
        distill: Distil from the model as it was given.
        threads: Torch CPU threads.

    Returns:
        The path of ``OUT/model.pt`` and the summary written to ``OUT/finetune.json``.

    Raises:
        AdcError: a bad combination (soft pruning without a budget, a budget without it,
            neither a regulariser nor soft pruning), a bad setting, or an existing model in ``out``.
    """
    o = dataclasses.replace(options or FinetuneOptions(), **settings)
    shaping = shaping or SparseTraining()
    _check_training(shaping, budget)
    _check_threads(threads)
    folder = RunFolder(out)
    config = RunConfig(model=model, checkpoint=checkpoint, data=data)
    fresh = folder.prepare(resume=False)
    try:
        with torch_threads(threads):
            splits = load_data(config.data)
            start = load_model(config, splits, RunHooks(status=status))
            x = example_input(splits)
            kept = _uniform_kept(start, x, budget, min_keep) if shaping.soft else None
            best, trained = _train(start, x, splits, o, shaping, kept=kept, teacher=start if distill else None,
                                   progress=progress)
    except AdcError:
        if fresh:
            folder.remove()  # refused or failed before writing anything: leave no empty folder
        raise
    summary = {"model": config.model, "checkpoint": config.checkpoint,
               **_summary(o, trained, data=config.data, distill=distill, threads=threads, shaping=shaping)}
    if shaping.soft:
        summary["budget"] = " ".join(budget)
    meta = {"settings": {"model": config.model, "checkpoint": config.checkpoint, "data": config.data},
            "finetune": {**summary, "history": trained["records"]}, "example_shape": list(x.shape)}
    save(best.to("cpu"), folder.model, meta=meta)
    folder.write_finetune(summary)
    return folder.model, summary


def _check_training(shaping: SparseTraining, budget: Sequence[str]) -> None:
    """Training an unpruned model needs a regulariser or soft pruning; soft pruning needs a budget, and only it."""
    if not shaping.sparsity and not shaping.soft:
        raise AdcError(f"adc finetune --model: give --sparsity ({', '.join(SPARSITY.names())}) or --soft with "
                       "--budget; to fine-tune a pruned model, pass its run folder instead")
    if shaping.soft != bool(budget):
        raise AdcError("--soft with --model needs --budget (the uniform width it prunes to)" if shaping.soft else
                       "--budget with adc finetune needs --soft (soft filter pruning to that budget)")


def _uniform_kept(model: nn.Module, x: torch.Tensor, budget: Sequence[str], min_keep: float) -> dict[str, int]:
    """Kept channels per unit of the uniform width that meets ``budget``."""
    graph = analyze(model, x)
    space = PolicySpace(graph, min_keep=min_keep)
    kept = uniform_kept(space, resolve_budgets(list(budget), space))
    return {u.name: int(k) for u, k in zip(graph.units, kept)}


def _summary(o: FinetuneOptions, trained: dict[str, Any], *, data: str, distill: bool, threads: int,
             shaping: SparseTraining) -> dict[str, Any]:
    """``finetune.json``: the settings, which epoch was kept and why, validation and test top-1 before and after."""
    records = trained["records"]
    kept = kept_epoch(records)
    chosen = "the last epoch (sparse training keeps it)" if kept.get("kept") else "validation top-1"
    extra = {k: v for k, v in trained.items() if k != "records"}
    return {
        "data": data, **dataclasses.asdict(o), "threads": threads, "schedule": "cosine", "optimizer": "sgd",
        "distill": distill, "temperature": o.temperature if distill else None, "alpha": o.alpha if distill else None,
        "sparsity": shaping.sparsity, "soft": shaping.soft,
        "selected_on": chosen, "kept_epoch": kept["epoch"],
        "kept": "the model before fine-tuning (no epoch scored higher on validation)" if kept["epoch"] == 0
        else f"epoch {kept['epoch']}",
        "val_top1_before": records[0]["val_top1"], "val_top1_kept": kept["val_top1"],
        "test_top1_before": records[0]["test_top1"], "test_top1_kept": kept["test_top1"],
        "test_top1_last": records[-1]["test_top1"], **extra,
    }
