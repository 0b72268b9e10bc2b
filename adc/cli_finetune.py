"""``adc finetune DIR``: fine-tune a search's pruned model (registered in :mod:`adc.cli`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console()


def finetune_command(
    run_dir: Annotated[Path, typer.Argument(help="A search's output folder (holds model.pt and config.toml).")],
    data: Annotated[str | None, typer.Option(help="Data spec (default: the search's, from config.toml).")] = None,
    epochs: Annotated[int, typer.Option(help="Fine-tuning epochs; the best by test top-1 is saved.")] = 5,
    lr: Annotated[float, typer.Option(help="Initial SGD learning rate (momentum 0.9, cosine schedule to 0).")] = 0.01,
    distill: Annotated[bool, typer.Option("--distill", help="Distil from the unpruned model (T=4, alpha=0.9).")] = False,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
) -> None:
    """Fine-tune the pruned model in RUN_DIR; write RUN_DIR/model_finetuned.pt and finetune.json."""
    from adc.finetune import SETTINGS_FILE, finetune_run

    with Progress(TextColumn("[bold]finetune"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False) as bar:
        task = bar.add_task("finetune", total=epochs, info="")
        best = [0.0]

        def progress(record: dict[str, Any]) -> None:
            best[0] = max(best[0], record["test_top1"])
            bar.update(task, completed=record["epoch"], info=(
                f"epoch {record['epoch']}: loss {record['train_loss']:.4f}, test {100 * record['test_top1']:.2f}% "
                f"(best {100 * best[0]:.2f}%)"))

        out = finetune_run(run_dir, data=data, epochs=epochs, lr=lr, distill=distill, device=device,
                           progress=progress, status=lambda s: bar.console.print(s))
    import json

    summary = json.loads((Path(run_dir) / SETTINGS_FILE).read_text())
    console.print(f"test top-1 {100 * summary['test_top1_before']:.2f}% after pruning -> "
                  f"{100 * summary['test_top1_best']:.2f}% after fine-tuning (best epoch {summary['best_epoch']})")
    console.print(f"wrote {out} and {Path(run_dir) / SETTINGS_FILE}")
