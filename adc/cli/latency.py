"""``adc latency-table``: measure a model's per-layer latency table ahead of a search (cached on disk)."""

from __future__ import annotations

from typing import Annotated

import typer

from adc.cli.console import console, table_progress
from adc.run.inspect import latency_table_of, model_and_input, parse_shape
from adc.utils.formatting import seconds


def latency_table_command(
    model: Annotated[str, typer.Option(help="Model spec: zoo:NAME, torchvision:NAME, file.py:fn.")] = "zoo:plain20",
    data: Annotated[str | None, typer.Option(help="Data spec giving the input shape and classes.")] = None,
    input_shape: Annotated[str | None, typer.Option(help="C,H,W when no data is given (default 3,224,224 for torchvision, 3,32,32 otherwise).")] = None,
    num_classes: Annotated[int | None, typer.Option(help="Classes when no data is given.")] = None,
    batch: Annotated[int, typer.Option(help="Batch size of every timing.")] = 1,
    runtime: Annotated[str, typer.Option(help="torch or onnxruntime.")] = "torch",
    device: Annotated[str, typer.Option(help="cpu or cuda (torch runtime only).")] = "cpu",
    threads: Annotated[int, typer.Option(help="CPU threads (default 1, as adc search, so a search reuses the table).")] = 1,
    min_keep: Annotated[float, typer.Option(help="Smallest kept fraction the search will allow (the grid's lower end).")] = 0.2,
    round_to: Annotated[int, typer.Option(help="The search's --round-to (after auto: the multiple its report names).")] = 1,
    points: Annotated[int, typer.Option(help="Grid points per channel axis.")] = 5,
    cache_dir: Annotated[str | None, typer.Option(help="Cache folder (default ~/.cache/adc/latency, or $ADC_CACHE_DIR/latency).")] = None,
) -> None:
    """Measure the per-layer latency lookup table of a model (NetAdapt) and cache it for later searches."""
    net, x = model_and_input(model, data=data, input_shape=parse_shape(input_shape), num_classes=num_classes)
    with table_progress() as update:
        table = latency_table_of(net, x, runtime=runtime, device=device, threads=threads, batch=batch, min_keep=min_keep,
                                 round_to=round_to, points=points, cache_dir=cache_dir, progress=update)
    info = table.info
    entries = sum(len(g_in) * len(g_out) for g_in, g_out in zip(table.grid_in, table.grid_out))
    console.print(
        f"{model}: {len(table.layers)} layers, {entries} grid entries ({table.measurements} measured now, the rest cached); "
        f"{info['runtime']} {info['version']} on {info['device']}, {info['threads']} threads, batch {info['batch']}, "
        f"input {tuple(info['input_shape'])}", highlight=False)
    console.print(f"end-to-end {seconds(table.measured_total)}, of which {seconds(table.constant)} outside the "
                  f"table's layers; cache: {info['cache']}", highlight=False)
