"""``adc profile``: one row per prunable unit, and the channel groups that are not units, with why."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from adc.cli.console import console, no_progress, table_progress
from adc.pruning.quantize import PrecisionChoice
from adc.run.inspect import parse_shape, precision_profile, profile_spec
from adc.utils.formatting import energy, human, seconds


def profile_command(
    model: Annotated[str, typer.Option(help="Model spec: zoo:NAME, torchvision:NAME, file.py:fn.")] = "zoo:plain20",
    data: Annotated[str | None, typer.Option(help="Data spec giving the input shape and classes.")] = None,
    input_shape: Annotated[str | None, typer.Option(help="C,H,W when no data is given (default 3,224,224 for torchvision, 3,32,32 otherwise).")] = None,
    num_classes: Annotated[int | None, typer.Option(help="Classes when no data is given.")] = None,
    energy_model: Annotated[str | None, typer.Option(help="TOML file overriding the energy model's per-operation costs.")] = None,
    latency: Annotated[bool, typer.Option("--latency", help="Also measure a latency table (cached) and show each unit's latency.")] = False,
    runtime: Annotated[str, typer.Option(help="Latency runtime: torch or onnxruntime.")] = "torch",
    device: Annotated[str, typer.Option(help="Latency device: cpu or cuda.")] = "cpu",
    threads: Annotated[int, typer.Option(help="CPU threads of the latency timings (default 1, as adc search).")] = 1,
    batch: Annotated[int, typer.Option(help="Batch size of the latency timings.")] = 1,
    cache_dir: Annotated[str | None, typer.Option(help="Latency table cache folder.")] = None,
    precision: Annotated[bool, typer.Option("--precision", help="Also time every convolution and linear layer in fp32 and in int8 (static QDQ on onnxruntime, inside the model) and show the faster.")] = False,
) -> None:
    """Print one row per prunable unit: kind, channels, feature map, MACs, params and energy (and latency) with shares."""
    with table_progress() if latency else no_progress() as update:
        prof = profile_spec(model, data=data, input_shape=parse_shape(input_shape), num_classes=num_classes,
                            energy_model=energy_model, latency=latency, runtime=runtime, device=device, threads=threads,
                            batch=batch, cache_dir=cache_dir, progress=update)
    table = Table(title=f"{model}: {len(prof.rows)} prunable units, input {tuple(prof.shape)}")
    cols = ["#", "unit", "kind", "in", "channels", "feature map", "MACs", "MACs %", "params", "params %", "energy", "energy %"]
    if latency:
        cols += ["latency", "latency %"]
    for col in cols:
        table.add_column(col, justify="left" if col in ("unit", "kind") else "right")
    for r in prof.rows:
        cells = [str(r.index), r.name, r.kind, str(r.in_channels), str(r.channels), f"{r.height}x{r.width}",
                 human(r.macs), f"{100 * r.macs_share:.1f}", human(r.params), f"{100 * r.params_share:.1f}",
                 energy(r.energy), f"{100 * r.energy_share:.1f}"]
        if latency and r.latency is not None:
            cells += [seconds(r.latency), f"{100 * (r.latency_share or 0):.1f}"]
        table.add_row(*cells)
    console.print(table)
    measured = (f", {seconds(prof.latency)} measured ({prof.latency_info['runtime']}, {prof.latency_info['threads']} "
                f"threads, batch {prof.latency_info['batch']})" if latency and prof.latency is not None else "")
    console.print(f"total: {human(prof.macs)} MACs ({human(2 * prof.macs)} FLOPs), {human(prof.params)} params, "
                  f"{energy(prof.energy)} modelled energy per sample (adc.analysis.energy, Horowitz 45 nm unless "
                  f"--energy-model){measured}. A unit's costs are those of every layer whose channels it holds; "
                  "shares overlap.", highlight=False)
    for name, reason in prof.excluded:
        console.print(f"not a prunable unit: {name}: {reason}", highlight=False)
    if precision:
        with console.status("timing every layer in fp32 and int8 on onnxruntime"):
            choice = precision_profile(model, data=data, input_shape=parse_shape(input_shape),
                                       num_classes=num_classes, threads=threads)
        _print_precisions(choice, threads)


def _print_precisions(choice: PrecisionChoice, threads: int) -> None:
    """One row per layer: what its int8 saves inside the all-int8 model, and the precision chosen."""
    table = Table(title="precision per layer (onnxruntime, batch 1, static int8 QDQ against fp32, timed in the model)")
    for col in ("#", "layer", "int8 saves", "precision"):
        table.add_column(col, justify="left" if col == "layer" else "right")
    precisions = choice.precisions
    for i, (name, saved) in enumerate(choice.savings.items()):
        table.add_row(str(i), name, f"{1e3 * saved:+.3f} ms", precisions[name])
    if choice.savings:
        console.print(table)
    if choice.note:
        console.print(f"one precision for the whole model: {choice.note}", highlight=False)
    console.print(f"whole model, {threads} thread(s), side by side: fp32 {1e3 * choice.fp32_s:.3f} ms, every layer "
                  f"int8 {1e3 * choice.int8_s:.3f} ms ({choice.fp32_s / choice.int8_s:.2f}x), the faster per layer "
                  f"{1e3 * choice.chosen_s:.3f} ms ({choice.fp32_s / choice.chosen_s:.2f}x); int8 saves: the model "
                  "with that layer alone in fp32 minus the all-int8 model (negative: int8 slows that layer)",
                  highlight=False)
