"""``adc search``: flags -> :class:`~adc.run.config.RunConfig` -> :func:`~adc.run.pipeline.run_search`, with progress."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from adc.cli.console import LazyBar, console, warn
from adc.engine.result import SearchResult
from adc.run.config import RunConfig
from adc.run.folder import RunFolder
from adc.run.iterative import IterativeResult, run_iterations
from adc.run.pipeline import RunHooks, run_search


def search_command(
    model: Annotated[str | None, typer.Option(help="Model spec: zoo:NAME, torchvision:NAME, file.py:fn, package.module:fn.")] = None,
    checkpoint: Annotated[str | None, typer.Option(help="State dict of the trained model (loaded with weights_only=True).")] = None,
    data: Annotated[str | None, typer.Option(help="Data spec: digits, fashion-mnist, cifar10[:ROOT], imagefolder:DIR, fake, file.py:fn.")] = None,
    budget: Annotated[list[str] | None, typer.Option(help="KEY=VALUE, repeatable: flops=0.5, params=1.5M, macs=120M, latency=0.6, energy=2mJ; a range latency=0.3:0.9[:STEP] gives a front of models.")] = None,
    episodes: Annotated[int | None, typer.Option(help="Episodes in all (default 100).")] = None,
    agent: Annotated[str | None, typer.Option(help="ddpg, td3, sac, uniform, random, sensitivity, ...")] = None,
    criterion: Annotated[str | None, typer.Option(help="Channel criterion: l1, l2, fpgm, bn_scale, taylor, apoz, random, ...")] = None,
    reward: Annotated[str | None, typer.Option(help="acc, loss, acc_flops, acc_params, acc_latency, acc_energy, or package.module:fn / file.py:fn.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed; the same seed gives the same search on the CPU.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu or cuda.")] = None,
    round_to: Annotated[str | None, typer.Option(help="Round kept channels to multiples of this, or auto (default): a short measured probe on --runtime picks among 1, 4, 8, 16, 32.")] = None,
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
    threads: Annotated[int | None, typer.Option(help="Torch CPU threads, per worker (default 1: avoids stalls on busy machines; raise for big models).")] = None,
    workers: Annotated[int | None, typer.Option(help="Candidate policies evaluated at the same time (default 1; more needs Ray: pip install 'adc[ray]').")] = None,
    ray_address: Annotated[str | None, typer.Option(help="Join this Ray cluster (auto, HOST:PORT, ray://HOST:PORT) instead of starting one.")] = None,
    eval_batch_size: Annotated[int | None, typer.Option(help="Images per forward pass when evaluating candidates (default 128; raise on a GPU).")] = None,
    gpus_per_worker: Annotated[float | None, typer.Option(help="GPU share of each worker with --device cuda (default 1/workers).")] = None,
    iterations: Annotated[int | None, typer.Option(help="Search and prune in N steps toward the budget, each from the last step's model (geometric steps against the original's cost; default 1).")] = None,
    iteration_finetune: Annotated[int | None, typer.Option(help="Fine-tuning epochs between those steps (default 0).")] = None,
    config: Annotated[Path | None, typer.Option(help="Rerun the settings of a config.toml or run folder (flags override it).")] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue the search in this folder to its planned total (same settings).")] = None,
) -> None:
    """Search per-unit sparsity with reinforcement learning under a budget; write the pruned model."""
    flags = {k: v for k, v in locals().items() if k not in ("config", "resume", "out") and v is not None}
    if "agent_option" in flags:
        flags["agent_options"] = flags.pop("agent_option")
    source = resume if resume is not None else config
    base = RunConfig.from_file(source) if source is not None else RunConfig()
    settings = base.with_values(flags) if flags else base  # refuses bad flags before the progress bar is drawn
    out_dir = resume if resume is not None else out

    started = time.perf_counter()
    if settings.iterations > 1:
        _iterate(settings, out_dir, resume is not None, started)
        return
    with LazyBar("search", settings.search.episodes) as bar:
        result, folder = run_search(settings, out=out_dir, resume=resume is not None, hooks=_bar_hooks(bar))
    print_result(result, folder, time.perf_counter() - started)
    if result.interrupted:
        warn("interrupted: the best policy so far and its model were written; "
             f"continue with: adc search --resume {folder}")
        raise typer.Exit(130)


def _iterate(settings: RunConfig, out_dir: Any, resume: bool, started: float) -> None:
    """``--iterations N``: one progress bar over every step's episodes, then the steps' table."""
    total = settings.search.episodes * settings.iterations
    with LazyBar("search", total) as bar:
        run = run_iterations(settings, out=out_dir, resume=resume, hooks=_bar_hooks(bar))
    print_iterations(run, time.perf_counter() - started)


def _bar_hooks(bar: LazyBar) -> RunHooks:
    """The run's hooks drawing on the progress bar: episodes, training batches, latency-table layers, notes."""

    def episode(record: dict[str, Any], best: dict[str, Any]) -> None:
        m = record["metrics"]
        bar.update(completed=record["episode"] + 1, info=(
            f"best {best['reward']:.4f} | this: acc {100 * m['top1']:.1f}% flops {m['flops_ratio']:.3f} ({record['phase']})"))

    def training(done: int, total: int) -> None:
        bar.update(info=f"training the reference model: batch {done}/{total}")

    def table(done: int, total: int, layer: str) -> None:
        bar.update(info=f"measuring latency table {done}/{total}: {layer}")

    return RunHooks(episode=episode, status=bar.print, note=lambda s: bar.print(f"[yellow]note: {s}"),
                    training=training, table=table)


def print_result(result: SearchResult, folder: RunFolder, seconds: float) -> None:
    """The chosen policy as a table, its accuracy and costs, and the files written."""
    table = Table(title="Chosen policy", show_lines=False)
    for col in ("#", "unit", "kind", "channels", "kept", "sparsity"):
        table.add_column(col, justify="right" if col not in ("unit", "kind") else "left")
    for u in result.graph.units:
        k = result.kept[u.name]
        table.add_row(str(u.index), u.name, u.kind, str(u.channels), str(k), f"{1 - k / u.channels:.2f}")
    console.print(table)
    o, m = result.original, result.metrics
    console.print(
        f"validation top-1 {100 * o['top1']:.2f}% -> {100 * m['top1']:.2f}%  |  "
        f"FLOPs {m['flops_ratio']:.3f}, params {m['params_ratio']:.3f} of the original  |  "
        f"{len(result.history)} episodes in {seconds:.1f} s", highlight=False)
    console.print(f"wrote {folder}/: {' '.join(folder.written())}", highlight=False)


def print_iterations(run: IterativeResult, seconds: float) -> None:
    """One row per step, then the final model's counted costs against the original."""
    table = Table(title="Iterative pruning", show_lines=False)
    for col in ("step", "budget (of the original)", "validation top-1", "test top-1", "fine-tuned test top-1"):
        table.add_column(col, justify="left" if col.startswith("budget") else "right")
    for s in run.steps:
        tuned = (s.get("finetune") or {}).get("test_top1_kept")
        table.add_row(str(s["step"]), ", ".join(f"{k} {v:.3f}" for k, v in s["budget_of_original"].items()),
                      f"{100 * s['val_top1']:.2f}%", "-" if s["test_top1"] is None else f"{100 * s['test_top1']:.2f}%",
                      "-" if tuned is None else f"{100 * tuned:.2f}%")
    console.print(table)
    f = run.final
    console.print(f"final model: FLOPs {f['flops_ratio']:.3f}, params {f['params_ratio']:.3f} of the original (counted); "
                  f"test top-1 {100 * f['test_top1']['original']:.2f}% -> {100 * f['test_top1']['pruned']:.2f}% | "
                  f"{len(run.steps)} steps in {seconds:.1f} s", highlight=False)
    console.print(f"wrote {run.folder}/: model.pt policy.json iterations.json report.md config.toml "
                  f"{' '.join(s['folder'] + '/' for s in run.steps)}", highlight=False)
