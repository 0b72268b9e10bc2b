"""The ``adc`` command line: parses arguments, calls the library, prints with rich.

Every bad input is one line on stderr and exit code 2 (a traceback only with
``--debug``); Ctrl-C during a search writes the best result so far first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from adc.cli_finetune import finetune_command
from adc.cli_latency import latency_table_command
from adc.errors import AdcError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="AMC-style automated channel pruning: find how much of each layer to prune under a budget.")
console = Console()
_state = {"debug": False}


@app.callback()
def _global(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False) -> None:
    _state["debug"] = debug


def _parse_shape(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        shape = tuple(int(p) for p in text.replace("x", ",").split(","))
    except ValueError:
        raise AdcError(f"--input-shape {text!r}: expected C,H,W such as 3,224,224") from None
    if len(shape) != 3 or min(shape) < 1:
        raise AdcError(f"--input-shape {text!r}: expected three positive integers C,H,W")
    return shape


@app.command()
def search(
    model: Annotated[str | None, typer.Option(help="Model spec: zoo:NAME, torchvision:NAME, file.py:fn, package.module:fn.")] = None,
    checkpoint: Annotated[str | None, typer.Option(help="State dict of the trained model (loaded with weights_only=True).")] = None,
    data: Annotated[str | None, typer.Option(help="Data spec: digits, fashion-mnist, cifar10[:ROOT], imagefolder:DIR, fake, file.py:fn.")] = None,
    budget: Annotated[list[str] | None, typer.Option(help="KEY=VALUE, repeatable: flops=0.5, params=1.5M, macs=120M.")] = None,
    episodes: Annotated[int | None, typer.Option(help="Episodes in all (default 100).")] = None,
    agent: Annotated[str | None, typer.Option(help="ddpg, td3, sac, uniform, random, sensitivity.")] = None,
    criterion: Annotated[str | None, typer.Option(help="Channel criterion: l1, l2, fpgm, bn_scale, taylor, apoz, random.")] = None,
    reward: Annotated[str | None, typer.Option(help="acc, acc_flops, acc_params, or package.module:fn / file.py:fn.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed; the same seed gives the same search on the CPU.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu or cuda.")] = None,
    round_to: Annotated[int | None, typer.Option(help="Round kept channels to multiples of this.")] = None,
    min_keep: Annotated[float | None, typer.Option(help="Smallest kept fraction of any unit (default 0.2).")] = None,
    bn_calibration: Annotated[int | None, typer.Option(help="Training images for BN recalibration (0: off).")] = None,
    val_size: Annotated[int | None, typer.Option(help="Validation images the reward is computed on.")] = None,
    select_top: Annotated[int | None, typer.Option(help="Re-score this many best policies on held-out validation images at the end and keep the best there (default 8; 0: off).")] = None,
    select_size: Annotated[int | None, typer.Option(help="Held-out validation images of that final selection (default 5000).")] = None,
    reconstruct: Annotated[bool | None, typer.Option("--reconstruct/--no-reconstruct", help="Refit the layers after each pruned unit by least squares (default on).")] = None,
    fill_budget: Annotated[bool | None, typer.Option("--fill-budget/--no-fill-budget", help="Make every policy use its budget.")] = None,
    warmup: Annotated[int | None, typer.Option(help="Random warm-up episodes of a learning agent.")] = None,
    agent_option: Annotated[list[str] | None, typer.Option(help="KEY=VALUE, repeatable: an agent setting such as noise_sigma=0.3, hidden=64,64, start_uniform=false (an unknown KEY lists the agent's valid ones).")] = None,
    out: Annotated[str | None, typer.Option(help="Output folder (default runs/<time>).")] = None,
    tensorboard: Annotated[bool | None, typer.Option("--tensorboard", help="Log episodes to TensorBoard in OUT/tb.")] = None,
    latency: Annotated[bool | None, typer.Option("--latency", help="Record predicted latency every episode (measures a latency table; a latency budget or acc_latency does so anyway).")] = None,
    runtime: Annotated[str | None, typer.Option(help="Latency runtime: torch or onnxruntime (default torch).")] = None,
    latency_batch: Annotated[int | None, typer.Option(help="Batch size of the latency table's timings (default 1).")] = None,
    cache_dir: Annotated[str | None, typer.Option(help="Latency table cache folder (default ~/.cache/adc/latency).")] = None,
    energy_model: Annotated[str | None, typer.Option(help="TOML file overriding the energy model's per-operation costs.")] = None,
    threads: Annotated[int | None, typer.Option(help="Torch CPU threads (default 1: avoids stalls on busy machines; raise for big models).")] = None,
    config: Annotated[Path | None, typer.Option(help="Rerun the settings of a config.toml (flags override it).")] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue the search in this folder to its planned total.")] = None,
) -> None:
    """Search per-unit sparsity with reinforcement learning under a budget; write the pruned model."""
    given = {k: v for k, v in locals().items() if k not in ("config", "resume") and v is not None}
    if "agent_option" in given:
        given["agent_options"] = given.pop("agent_option")
    from adc.pipeline import SearchConfig, run_search

    source = resume if resume is not None else config
    settings = SearchConfig.from_file(source) if source is not None else SearchConfig()
    if resume is not None:
        settings.out = str(resume)
    settings = dataclasses.replace(settings, **given)
    settings.validate()  # refuse bad flags before the progress bar is drawn

    with Progress(TextColumn("[bold]search"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False) as bar:
        task = bar.add_task("search", total=settings.episodes, info="")

        def progress(record: dict[str, Any], best: dict[str, Any]) -> None:
            m = record["metrics"]
            bar.update(task, completed=record["episode"] + 1, info=(
                f"best {best['reward']:.4f} | this: acc {100 * m['top1']:.1f}% flops {m['flops_ratio']:.3f} ({record['phase']})"))

        started = time.perf_counter()
        def table_progress(done: int, total: int, layer: str) -> None:
            bar.update(task, info=f"measuring latency table {done}/{total}: {layer}")

        result, run_dir = run_search(settings, resume=resume is not None, progress=progress, status=lambda s: bar.console.print(s),
                                     table_progress=table_progress)
    _print_result(result, run_dir, time.perf_counter() - started)
    if result.interrupted:
        console.print("[yellow]interrupted: the best policy so far and its model were written; "
                      f"continue with: adc search --resume {run_dir}")
        raise typer.Exit(130)


def _print_result(result: Any, run_dir: Path, seconds: float) -> None:
    graph = result._pruner.graph
    table = Table(title="Best policy", show_lines=False)
    for col in ("#", "unit", "kind", "channels", "kept", "sparsity"):
        table.add_column(col, justify="right" if col not in ("unit", "kind") else "left")
    for u in graph.units:
        k = result.kept[u.name]
        table.add_row(str(u.index), u.name, u.kind, str(u.channels), str(k), f"{1 - k / u.channels:.2f}")
    console.print(table)
    o, m = result.original, result.metrics
    console.print(
        f"validation top-1 {100 * o['top1']:.2f}% -> {100 * m['top1']:.2f}%  |  "
        f"FLOPs {m['flops_ratio']:.3f}, params {m['params_ratio']:.3f} of the original  |  "
        f"{len(result.history)} episodes in {seconds:.1f} s"
    )
    console.print(f"wrote {run_dir}/: model.pt policy.json history.csv report.md policy.png reward.png config.toml")


@app.command()
def profile(
    model: Annotated[str, typer.Option(help="Model spec: zoo:NAME, torchvision:NAME, file.py:fn.")] = "zoo:plain20",
    data: Annotated[str | None, typer.Option(help="Data spec giving the input shape and classes.")] = None,
    input_shape: Annotated[str | None, typer.Option(help="C,H,W when no data is given (default 3,224,224 for torchvision, 3,32,32 otherwise).")] = None,
    num_classes: Annotated[int | None, typer.Option(help="Classes when no data is given.")] = None,
    energy_model: Annotated[str | None, typer.Option(help="TOML file overriding the energy model's per-operation costs.")] = None,
    latency: Annotated[bool, typer.Option("--latency", help="Also measure a latency table (cached) and show each unit's latency.")] = False,
    runtime: Annotated[str, typer.Option(help="Latency runtime: torch or onnxruntime.")] = "torch",
    device: Annotated[str, typer.Option(help="Latency device: cpu or cuda.")] = "cpu",
    batch: Annotated[int, typer.Option(help="Batch size of the latency timings.")] = 1,
    cache_dir: Annotated[str | None, typer.Option(help="Latency table cache folder.")] = None,
) -> None:
    """Print one row per prunable unit: kind, channels, feature map, MACs, params and energy (and latency) with shares."""
    from adc.cli_latency import table_progress
    from adc.latency import RUNTIMES
    from adc.profile import human, profile_model_full
    from adc.search import check_device

    if latency:
        if runtime not in RUNTIMES:
            raise AdcError(f"--runtime {runtime!r}: valid: {', '.join(RUNTIMES)}")
        check_device(device)
    with table_progress() if latency else _no_progress() as update:
        prof = profile_model_full(model, data=data, input_shape=_parse_shape(input_shape), num_classes=num_classes,
                                  energy_model=energy_model, latency=latency, runtime=runtime, device=device,
                                  batch=batch, cache_dir=cache_dir, progress=update)
    rows = prof.rows
    table = Table(title=f"{model}: {len(rows)} prunable units, input {tuple(prof.shape)}")
    cols = ["#", "unit", "kind", "in", "channels", "feature map", "MACs", "MACs %", "params", "params %", "energy", "energy %"]
    if latency:
        cols += ["latency", "latency %"]
    for col in cols:
        table.add_column(col, justify="left" if col in ("unit", "kind") else "right")
    for r in rows:
        cells = [str(r.index), r.name, r.kind, str(r.in_channels), str(r.channels), f"{r.height}x{r.width}",
                 human(r.macs), f"{100 * r.macs_share:.1f}", human(r.params), f"{100 * r.params_share:.1f}",
                 f"{1e6 * r.energy:.1f} uJ", f"{100 * r.energy_share:.1f}"]
        if latency:
            cells += [f"{1e3 * r.latency:.3f} ms", f"{100 * r.latency_share:.1f}"]
        table.add_row(*cells)
    console.print(table)
    console.print(f"total: {human(prof.macs)} MACs ({human(2 * prof.macs)} FLOPs), {human(prof.params)} params, "
                  f"{1e3 * prof.energy:.4g} mJ modelled energy per sample (adc.energy, Horowitz 45 nm unless --energy-model)"
                  + (f", {1e3 * prof.latency:.3f} ms measured ({prof.latency_info['runtime']}, {prof.latency_info['threads']} "
                     f"threads, batch {prof.latency_info['batch']})" if latency else "") + ". "
                  "A unit's costs are those of every layer whose channels it holds; shares overlap.")


@contextlib.contextmanager
def _no_progress() -> Any:
    yield None


app.command("latency-table")(latency_table_command)
app.command("finetune")(finetune_command)


@app.command()
def export(
    path: Annotated[Path, typer.Argument(help="A search's output folder or a model file written by adc.")],
    format: Annotated[str, typer.Option("--format", help="onnx or torchscript.")] = "onnx",
    output: Annotated[Path | None, typer.Option(help="Destination (default next to the model: model.onnx / model.ts).")] = None,
    input_shape: Annotated[str | None, typer.Option(help="C,H,W if the file does not record it.")] = None,
) -> None:
    """Export a saved model to ONNX or TorchScript and check its outputs against PyTorch."""
    from adc.export import export_saved

    written, max_diff = export_saved(path, format=format, output=output, input_shape=_parse_shape(input_shape))
    console.print(f"wrote {written} ({format}); max |output - torch output| = {max_diff:.2e}")


def main() -> None:
    """Console entry point: AdcError -> one line on stderr, exit code 2."""
    try:
        app()
    except AdcError as exc:
        if _state["debug"]:
            raise
        # One line whatever the terminal width: rich would wrap a long message at 80 columns.
        print("error: " + " ".join(str(exc).splitlines()), file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
