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

from collections.abc import Callable
from pathlib import Path
from typing import Any

from adc.inputs.data import load_data
from adc.inputs.finetune import finetune, kept_epoch
from adc.pruning.serialization import load, read_header, save
from adc.run.config import RunConfig
from adc.run.folder import RunFolder
from adc.run.pipeline import RunHooks, load_model
from adc.utils.device import check_device, torch_threads
from adc.utils.errors import AdcError


def finetune_run(
    run_dir: str | Path,
    *,
    data: str | None = None,
    epochs: int,
    distill: bool = False,
    device: str = "cpu",
    threads: int = 1,
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
) -> tuple[Path, dict[str, Any]]:
    """Fine-tune the pruned model of a run folder; write ``model_finetuned.pt`` and ``finetune.json``.

    Args:
        run_dir: A folder written by ``adc search`` (holds ``model.pt`` and ``config.toml``).
        data: Data spec (default: the search's). The train / validation split is the search's.
        threads: Torch CPU threads (default 1, as ``adc search``).
        epochs, lr, momentum, weight_decay, batch_size, seed, device,
        temperature, alpha, train_samples: See :func:`adc.inputs.finetune.finetune`.
        distill: Distil from the unpruned model (the search's model and checkpoint).
        progress: Per-epoch callback.
        status: Called with one-line status messages.

    Returns:
        The path of ``model_finetuned.pt`` and the summary written to ``finetune.json``.

    Raises:
        AdcError: on a missing folder or model file, a bad setting, unknown data,
            or distillation without a known unpruned model.
    """
    folder = RunFolder(run_dir)
    if not folder.path.is_dir():
        raise AdcError(f"run folder {str(folder)!r} does not exist; pass the --out folder of an adc search")
    if not folder.model.is_file():
        raise AdcError(f"run folder {str(folder)!r} has no model.pt; is the search finished? (adc search --resume it)")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise AdcError(f"--threads {threads!r}: must be a positive integer")
    check_device(device)
    header, _ = read_header(folder.model)
    settings = folder.settings()
    data = data or settings.get("data")
    if not data:
        raise AdcError(f"run folder {str(folder)!r} does not record its data (no config.toml); pass --data SPEC")
    with torch_threads(threads):
        splits = load_data(data)
        model = load(folder.model)
        teacher = None
        if distill:
            if not settings.get("model"):
                raise AdcError(f"--distill needs the unpruned model, but {str(folder)!r} has no config.toml naming it")
            checkpoint = settings.get("checkpoint")
            if checkpoint is not None and not Path(checkpoint).is_file():
                raise AdcError(f"--distill: the unpruned model's checkpoint {checkpoint!r} no longer exists")
            teacher = load_model(RunConfig(model=settings["model"], checkpoint=checkpoint, data=data), splits,
                                 RunHooks(status=status))
        best, records = finetune(model, splits, epochs=epochs, lr=lr, momentum=momentum, weight_decay=weight_decay,
                                 batch_size=batch_size, seed=seed, device=device, teacher=teacher,
                                 temperature=temperature, alpha=alpha, train_samples=train_samples, progress=progress)
    kept = kept_epoch(records)
    summary = {
        "data": data, "epochs": epochs, "lr": lr, "momentum": momentum, "weight_decay": weight_decay,
        "batch_size": batch_size, "seed": seed, "device": device, "threads": threads, "schedule": "cosine",
        "optimizer": "sgd", "distill": distill, "temperature": temperature if distill else None,
        "alpha": alpha if distill else None, "train_samples": train_samples,
        "selected_on": "validation top-1", "kept_epoch": kept["epoch"],
        "kept": "the model before fine-tuning (no epoch scored higher on validation)" if kept["epoch"] == 0
        else f"epoch {kept['epoch']}",
        "val_top1_before": records[0]["val_top1"], "val_top1_kept": kept["val_top1"],
        "test_top1_before": records[0]["test_top1"], "test_top1_kept": kept["test_top1"],
        "test_top1_last": records[-1]["test_top1"],
    }
    meta = dict(header.get("meta") or {})
    meta["finetune"] = {**summary, "history": records}
    save(best.to("cpu"), folder.finetuned, policy=header.get("policy"), meta=meta)
    folder.write_finetune(summary)
    return folder.finetuned, summary
