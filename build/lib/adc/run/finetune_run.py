"""``adc finetune DIR``: fine-tune a run folder's pruned model and keep it only if it got better.

It loads ``model.pt``, finds the data (and, to distil, the unpruned model)
from the folder's settings, fine-tunes with :func:`adc.inputs.finetune.finetune`
-- which chooses on the validation split and never hands back a model worse
than the one it was given -- and writes ``model_finetuned.pt`` (same
:func:`adc.save` format, same pruned structure) and ``finetune.json`` (the
settings, which epoch was kept and why, validation and test top-1 before
and after).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adc.inputs.data import load_data
from adc.inputs.finetune import FinetuneOptions, finetune, kept_epoch
from adc.pruning.serialization import load, read_header, save
from adc.run.config import RunConfig
from adc.run.folder import RunFolder
from adc.run.pipeline import RunHooks, load_model
from adc.utils.device import torch_threads
from adc.utils.errors import AdcError


def finetune_run(
    run_dir: str | Path,
    options: FinetuneOptions | None = None,
    *,
    data: str | None = None,
    distill: bool = False,
    threads: int = 1,
    progress: Callable[[dict[str, Any]], None] | None = None,
    status: Callable[[str], None] | None = None,
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
        progress: Per-epoch callback.
        status: Called with one-line status messages.

    Returns:
        The path of ``model_finetuned.pt`` and the summary written to ``finetune.json``.

    Raises:
        AdcError: on a missing folder or model file, a bad setting, unknown data,
            or distillation without a known unpruned model.
    """
    o = dataclasses.replace(options or FinetuneOptions(), **settings)
    folder = RunFolder(run_dir)
    if not folder.path.is_dir():
        raise AdcError(f"run folder {str(folder)!r} does not exist; pass the --out folder of an adc search")
    if not folder.model.is_file():
        raise AdcError(f"run folder {str(folder)!r} has no model.pt; is the search finished? (adc search --resume it)")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise AdcError(f"--threads {threads!r}: must be a positive integer")
    header, _ = read_header(folder.model)
    settings_of_run = folder.settings()
    data = data or settings_of_run.get("data")
    if not data:
        raise AdcError(f"run folder {str(folder)!r} does not record its data (no config.toml); pass --data SPEC")
    with torch_threads(threads):
        splits = load_data(data)
        teacher = _teacher(folder, settings_of_run, splits, status) if distill else None
        best, records = finetune(load(folder.model), splits, o, teacher=teacher, progress=progress)
    summary = _summary(o, records, data=data, distill=distill, threads=threads)
    meta = dict(header.get("meta") or {})
    meta["finetune"] = {**summary, "history": records}
    save(best.to("cpu"), folder.finetuned, policy=header.get("policy"), meta=meta)
    folder.write_finetune(summary)
    return folder.finetuned, summary


def _teacher(folder: RunFolder, settings: dict[str, Any], splits: Any, status: Callable[[str], None] | None) -> Any:
    """The unpruned model of the run, for distillation."""
    if not settings.get("model"):
        raise AdcError(f"--distill needs the unpruned model, but {str(folder)!r} has no config.toml naming it")
    checkpoint = settings.get("checkpoint")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise AdcError(f"--distill: the unpruned model's checkpoint {checkpoint!r} no longer exists")
    return load_model(RunConfig(model=settings["model"], checkpoint=checkpoint, data=settings.get("data", "")),
                      splits, RunHooks(status=status))


def _summary(o: FinetuneOptions, records: list[dict[str, Any]], *, data: str, distill: bool,
             threads: int) -> dict[str, Any]:
    """``finetune.json``: the settings, which epoch was kept and why, validation and test top-1 before and after."""
    kept = kept_epoch(records)
    return {
        "data": data, **dataclasses.asdict(o), "threads": threads, "schedule": "cosine", "optimizer": "sgd",
        "distill": distill, "temperature": o.temperature if distill else None, "alpha": o.alpha if distill else None,
        "selected_on": "validation top-1", "kept_epoch": kept["epoch"],
        "kept": "the model before fine-tuning (no epoch scored higher on validation)" if kept["epoch"] == 0
        else f"epoch {kept['epoch']}",
        "val_top1_before": records[0]["val_top1"], "val_top1_kept": kept["val_top1"],
        "test_top1_before": records[0]["test_top1"], "test_top1_kept": kept["test_top1"],
        "test_top1_last": records[-1]["test_top1"],
    }
