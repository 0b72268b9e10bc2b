"""``adc finetune``: fine-tune a run folder's pruned model, or train a model from its checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from adc.cli.console import console, progress_bar
from adc.inputs.finetune import FinetuneOptions
from adc.run.finetune_run import SparseTraining, finetune_run, train_run
from adc.utils.errors import AdcError


def finetune_command(
    run_dir: Annotated[Path | None, typer.Argument(help="A search's output folder (holds model.pt and config.toml); or give --model and --out.")] = None,
    model: Annotated[str | None, typer.Option(help="Train this model from --checkpoint instead of a run folder's (zoo:NAME, torchvision:NAME, file.py:fn).")] = None,
    checkpoint: Annotated[str | None, typer.Option(help="With --model: its trained weights (a state dict or an adc model file).")] = None,
    out: Annotated[str | None, typer.Option(help="With --model: the folder to write model.pt and finetune.json into.")] = None,
    data: Annotated[str | None, typer.Option(help="Data spec (default: the search's, from config.toml; with --model: digits).")] = None,
    epochs: Annotated[int, typer.Option(help="Fine-tuning epochs; the best by validation top-1 is kept (the model before fine-tuning included).")] = 5,
    lr: Annotated[float, typer.Option(help="Initial SGD learning rate (momentum 0.9, cosine schedule to 0).")] = 0.01,
    train_samples: Annotated[int | None, typer.Option(help="Train on this many training images per epoch (a fixed subset) instead of all.")] = None,
    distill: Annotated[bool, typer.Option("--distill", help="Distil from the unpruned model (T=4, alpha=0.9).")] = False,
    sparsity: Annotated[str | None, typer.Option(help="Sparsity regulariser: slimming (L1 on BN scales) or group_lasso; keeps the last epoch.")] = None,
    sparsity_strength: Annotated[float | None, typer.Option(help="Strength of --sparsity (default 1e-4).")] = None,
    soft: Annotated[bool, typer.Option("--soft", help="Soft filter pruning: zeroed filters stay trainable and are re-chosen every epoch; pruned for real at the end (to the run's policy, or with --model to a uniform width meeting --budget).")] = False,
    budget: Annotated[list[str] | None, typer.Option(help="With --model --soft: KEY=VALUE budget of the uniform width, repeatable.")] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    threads: Annotated[int, typer.Option(help="Torch CPU threads (default 1, as adc search).")] = 1,
) -> None:
    """Fine-tune the pruned model in RUN_DIR (writes model_finetuned.pt), or train --model into --out."""
    if (run_dir is None) == (model is None):
        raise AdcError("adc finetune: give a run folder (adc finetune DIR) or --model SPEC --out DIR, not both")
    if model is not None and out is None:
        raise AdcError("adc finetune --model needs --out DIR (where the trained model.pt goes)")
    if run_dir is not None and (checkpoint or out or budget):
        raise AdcError("adc finetune DIR: --checkpoint, --out and --budget go with --model (the run folder has its own)")
    options = FinetuneOptions(epochs=epochs, lr=lr, device=device, train_samples=train_samples)
    shaping = SparseTraining(sparsity=sparsity, strength=sparsity_strength, soft=soft)
    with progress_bar("finetune") as bar:
        task = bar.add_task("finetune", total=epochs, info="")

        def progress(record: dict[str, Any]) -> None:
            bar.update(task, completed=record["epoch"], info=(
                f"epoch {record['epoch']}: loss {record['train_loss']:.4f}, validation {100 * record['val_top1']:.2f}%, "
                f"test {100 * record['test_top1']:.2f}%"))

        common = dict(options=options, distill=distill, threads=threads, shaping=shaping, progress=progress,
                      status=lambda s: bar.console.print(s))
        if run_dir is not None:
            written, summary = finetune_run(run_dir, data=data, **common)
        else:
            written, summary = train_run(model, out, checkpoint=checkpoint, budget=budget or (),
                                         **({"data": data} if data else {}), **common)
    console.print(f"validation top-1 {100 * summary['val_top1_before']:.2f}% -> {100 * summary['val_top1_kept']:.2f}%, "
                  f"test top-1 {100 * summary['test_top1_before']:.2f}% -> {100 * summary['test_top1_kept']:.2f}% "
                  f"(kept {summary['kept']}, chosen on {summary['selected_on']})", highlight=False)
    if summary.get("sparsity"):
        console.print(f"{summary['sparsity_target']}: {summary['sparsity_target_before']:.4g} -> "
                      f"{summary['sparsity_target_after']:.4g}", highlight=False)
    console.print(f"wrote {written} and {written.parent / 'finetune.json'}", highlight=False)
    if model is not None:
        console.print(f"search it with: adc search --model {model} --checkpoint {written}"
                      f"{' --data ' + data if data else ''}", highlight=False)
