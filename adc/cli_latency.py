"""``adc latency-table``: measure a model's per-layer latency table ahead of a search (cached on disk)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Annotated, Any, Iterator

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console()


@contextmanager
def table_progress(label: str = "latency table") -> Iterator[Any]:
    """A rich progress bar; yields a ``(done, total, layer)`` callback for :func:`adc.latency.build_latency_table`."""
    with Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[layer]}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False) as bar:
        task = bar.add_task(label, total=None, layer="")

        def update(done: int, total: int, layer: str) -> None:
            bar.update(task, completed=done, total=total, layer=layer)

        yield update


def latency_table_command(
    model: Annotated[str, typer.Option(help="Model spec: zoo:NAME, torchvision:NAME, file.py:fn.")] = "zoo:plain20",
    data: Annotated[str | None, typer.Option(help="Data spec giving the input shape and classes.")] = None,
    input_shape: Annotated[str | None, typer.Option(help="C,H,W when no data is given (default 3,224,224 for torchvision, 3,32,32 otherwise).")] = None,
    num_classes: Annotated[int | None, typer.Option(help="Classes when no data is given.")] = None,
    batch: Annotated[int, typer.Option(help="Batch size of every timing.")] = 1,
    runtime: Annotated[str, typer.Option(help="torch or onnxruntime.")] = "torch",
    device: Annotated[str, typer.Option(help="cpu or cuda (torch runtime only).")] = "cpu",
    threads: Annotated[int | None, typer.Option(help="CPU threads (default: torch's current setting).")] = None,
    min_keep: Annotated[float, typer.Option(help="Smallest kept fraction the search will allow (the grid's lower end).")] = 0.2,
    round_to: Annotated[int, typer.Option(help="The search's --round-to.")] = 1,
    points: Annotated[int, typer.Option(help="Grid points per channel axis.")] = 5,
    cache_dir: Annotated[str | None, typer.Option(help="Cache folder (default ~/.cache/adc/latency, or $ADC_CACHE_DIR/latency).")] = None,
) -> None:
    """Measure the per-layer latency lookup table of a model (NetAdapt) and cache it for later searches."""
    from adc.cli import _parse_shape
    from adc.errors import AdcError
    from adc.graph import analyze
    from adc.latency import RUNTIMES, build_latency_table
    from adc.profile import build_for_profile
    from adc.search import check_device

    if runtime not in RUNTIMES:
        raise AdcError(f"--runtime {runtime!r}: valid: {', '.join(RUNTIMES)}")
    check_device(device)
    if not 0 < min_keep <= 1:
        raise AdcError(f"--min-keep {min_keep}: must be in (0, 1]")
    if points < 1 or batch < 1 or round_to < 1:
        raise AdcError("--points, --batch and --round-to must be positive integers")
    net, x = build_for_profile(model, data=data, input_shape=_parse_shape(input_shape), num_classes=num_classes)
    graph = analyze(net, x)
    with table_progress() as update:
        table = build_latency_table(net, x, graph=graph, batch=batch, runtime=runtime, device=device, threads=threads,
                                    cache_dir=cache_dir, min_keep=min_keep, round_to=round_to, points=points,
                                    progress=update)
    info = table.info
    entries = sum(len(g_in) * len(g_out) for g_in, g_out in zip(table.grid_in, table.grid_out))
    console.print(
        f"{model}: {len(table.layers)} layers, {entries} grid entries ({table.measurements} measured now, the rest cached); "
        f"{info['runtime']} {info['version']} on {info['device']}, {info['threads']} threads, batch {info['batch']}, "
        f"input {tuple(info['input_shape'])}")
    console.print(f"end-to-end {1e3 * table.measured_total:.3f} ms, of which {1e3 * table.constant:.3f} ms outside the "
                  f"table's layers; cache: {info['cache']}")
