"""``adc export``: ONNX or TorchScript, checked against PyTorch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from adc.cli.console import console
from adc.pruning.export import export_saved
from adc.run.folder import model_file
from adc.run.inspect import parse_shape


def export_command(
    path: Annotated[Path, typer.Argument(help="A search's output folder or a model file written by adc.")],
    format: Annotated[str, typer.Option("--format", help="onnx or torchscript.")] = "onnx",
    output: Annotated[Path | None, typer.Option(help="Destination (default next to the model: model.onnx / model.ts).")] = None,
    input_shape: Annotated[str | None, typer.Option(help="C,H,W if the file does not record it.")] = None,
    finetuned: Annotated[bool | None, typer.Option("--finetuned/--searched", help="In a run folder: the fine-tuned model or the searched one (default: the fine-tuned one when there is one).")] = None,
) -> None:
    """Export a saved model to ONNX or TorchScript and check its outputs against PyTorch."""
    source = model_file(path, finetuned=finetuned)
    done = export_saved(source, format=format, output=output, input_shape=parse_shape(input_shape))
    checked = "onnxruntime" if format == "onnx" else "torch.jit.load"
    console.print(f"exported {source} to {done.path} ({format}, {done.exporter} exporter); {checked} at batch "
                  f"{' and '.join(map(str, done.batches))}: max |output - torch output| = {done.max_diff:.2e}",
                  highlight=False)
