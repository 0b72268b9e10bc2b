"""``adc finetune DIR``: fine-tune a run folder's pruned model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from adc.cli.console import console, progress_bar
from adc.run.finetune_run import finetune_run


def finetune_command(
    run_dir: Annotated[Path, typer.Argument(help="A search's output folder (holds model.pt and config.toml).")],
    data: Annotated[str | None, typer.Option(help="Data spec (default: the search's, from config.toml).")] = None,
    epochs: Annotated[int, typer.Option(help="Fine-tuning epochs; the best by validation top-1 is kept (the model before fine-tuning included).")] = 5,
    lr: Annotated[float, typer.Option(help="Initial SGD learning rate (momentum 0.9, cosine schedule to 0).")] = 0.01,
    distill: Annotated[bool, typer.Option("--distill", help="Distil from the unpruned model (T=4, alpha=0.9).")] = False,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    threads: Annotated[int, typer.Option(help="Torch CPU threads (default 1, as adc search).")] = 1,
) -> None:
    """Fine-tune the pruned model in RUN_DIR; write RUN_DIR/model_finetuned.pt and finetune.json."""
    with progress_bar("finetune") as bar:
        task = bar.add_task("finetune", total=epochs, info="")

        def progress(record: dict[str, Any]) -> None:
            bar.update(task, completed=record["epoch"], info=(
                f"epoch {record['epoch']}: loss {record['train_loss']:.4f}, validation {100 * record['val_top1']:.2f}%, "
                f"test {100 * record['test_top1']:.2f}%"))

        out, summary = finetune_run(run_dir, data=data, epochs=epochs, lr=lr, distill=distill, device=device,
                                    threads=threads, progress=progress, status=lambda s: bar.console.print(s))
    console.print(f"validation top-1 {100 * summary['val_top1_before']:.2f}% -> {100 * summary['val_top1_kept']:.2f}%, "
                  f"test top-1 {100 * summary['test_top1_before']:.2f}% -> {100 * summary['test_top1_kept']:.2f}% "
                  f"(kept {summary['kept']}, chosen on validation)", highlight=False)
    console.print(f"wrote {out} and {Path(run_dir) / 'finetune.json'}", highlight=False)
