"""``adc export``: ONNX or TorchScript, checked against PyTorch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from adc.cli.console import console
from adc.pruning.export import export_saved
from adc.run.folder import model_file
from adc.run.inspect import parse_shape
from adc.run.quantize_run import quantize_saved
from adc.utils.errors import AdcError
from adc.utils.formatting import human


def export_command(
    path: Annotated[Path, typer.Argument(help="A search's output folder or a model file written by adc.")],
    format: Annotated[str, typer.Option("--format", help="onnx or torchscript.")] = "onnx",
    output: Annotated[Path | None, typer.Option(help="Destination (default next to the model: model.onnx / model.ts).")] = None,
    input_shape: Annotated[str | None, typer.Option(help="C,H,W if the file does not record it.")] = None,
    finetuned: Annotated[bool | None, typer.Option("--finetuned/--searched", help="In a run folder: the fine-tuned model or the searched one (default: the fine-tuned one when there is one).")] = None,
    quantize: Annotated[str | None, typer.Option(help="Also write a static int8 QDQ ONNX model: int8 (every layer) or auto (int8 only where onnxruntime runs it faster, as measured).")] = None,
    data: Annotated[str | None, typer.Option(help="With --quantize: data for calibration and test top-1 (default: the run's).")] = None,
    calibration_images: Annotated[int, typer.Option(help="With --quantize: training images that calibrate the activations.")] = 256,
    threads: Annotated[int, typer.Option(help="With --quantize: onnxruntime threads of the latency timings.")] = 1,
) -> None:
    """Export a saved model to ONNX or TorchScript and check its outputs against PyTorch."""
    if quantize is not None and format != "onnx":
        raise AdcError(f"--quantize writes ONNX; got --format {format!r}")
    source = model_file(path, finetuned=finetuned)
    if quantize is not None:
        done_q = quantize_saved(source, mode=quantize, data=data, output=output,
                                input_shape=parse_shape(input_shape), calibration_images=calibration_images,
                                threads=threads, run_folder=path if path.is_dir() else None)
        _print_quantized(done_q)
        return
    done = export_saved(source, format=format, output=output, input_shape=parse_shape(input_shape))
    checked = "onnxruntime" if format == "onnx" else "torch.jit.load"
    console.print(f"exported {source} to {done.path} ({format}, {done.exporter} exporter); {checked} at batch "
                  f"{' and '.join(map(str, done.batches))}: max |output - torch output| = {done.max_diff:.2e}",
                  highlight=False)


def _print_quantized(s: dict) -> None:
    """What ``adc export --quantize`` wrote, and what onnxruntime measured of it."""
    layers = len(s["int8_layers"]) + len(s["fp32_layers"])
    if s["int8_layers"]:
        which = (f"{len(s['int8_layers'])} of {layers} layers int8"
                 + (f", fp32: {', '.join(s['fp32_layers'])}" if s["fp32_layers"] else ""))
    else:
        which = "int8 made no layer faster: the file is the fp32 graph"
    console.print(f"quantized {s['model']} to {s['output']} ({s['format']}, {s['calibration_images']} calibration "
                  f"images of {s['data']}; {which})", highlight=False)
    console.print(f"onnxruntime, test split ({s['test_images']} images): top-1 {100 * s['test_top1_fp32']:.2f}% fp32 -> "
                  f"{100 * s['test_top1_int8']:.2f}%; size {human(s['size_bytes_fp32'])}B -> "
                  f"{human(s['size_bytes_int8'])}B ({s['size_bytes_int8'] / s['size_bytes_fp32']:.2f}x); latency at batch "
                  f"1, {s['threads']} thread(s), side by side: {1e3 * s['latency_s_fp32']:.3f} ms -> "
                  f"{1e3 * s['latency_s_int8']:.3f} ms ({s['latency_s_fp32'] / s['latency_s_int8']:.2f}x faster); "
                  f"figures in {s['output'].removesuffix('.onnx')}.json", highlight=False)
