"""Really faster? Measured speedups of pruned models, and latency budgets checked on the real models.

    .venv/bin/python -m benchmarks.speedup            # full: writes benchmarks/results/speedup.{md,csv}
    .venv/bin/python -m benchmarks.speedup --smoke    # a few minutes: writes into benchmarks/cache/ only

Per model, rows (each a search through :func:`adc.search`, then the pruned model it hands back timed side by side
with the unpruned model in this process, in torch and in onnxruntime, batch 1, one thread):

- ``flops=0.5`` with ``round_to 1`` (measured in both runtimes);
- ``flops=0.5`` with ``round_to auto``, once probed in torch and once in onnxruntime (each measured in both);
- ``latency=0.5`` searched for torch and for onnxruntime: the table's prediction, the search's own measured check,
  and this benchmark's measurement of the model handed back.

Zoo rows are searched (``--agent``, ``--episodes``); torchvision rows, with random weights, take the uniform policy
that meets the budget (every policy scores the same without trained weights).

Models: adc's zoo ``plain20``, ``resnet20`` and ``mobilenet`` at Fashion-MNIST size (1x28x28, 10 classes; the
trained references of :func:`benchmarks.run.load_reference`, so the search's accuracy is reported), and
torchvision's ``resnet18``, ``mobilenet_v2`` and ``efficientnet_b0`` (3xSxS, 1000 classes) with random weights:
a model's speed does not depend on the values of its weights, only on its shapes, so no accuracy is reported for
them. Goals: at flops=0.5 a measured speedup of at least 1.8x in both runtimes on every torchvision row (2.0x is
the compute-bound limit); latency=R measured within 5% of R on every row. The page says where a row falls short.
Each finished row is cached (``benchmarks/cache/speedup-<settings hash>/``), so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import adc  # noqa: E402
from adc.analysis.timers import measured_speedup  # noqa: E402
from adc.inputs.models import build_model  # noqa: E402
from adc.utils.errors import AdcError  # noqa: E402
from adc.utils.files import atomic_write_text  # noqa: E402
from adc.utils.formatting import one_line, table_cell  # noqa: E402

ZOO = ("zoo:plain20", "zoo:resnet20", "zoo:mobilenet")
TORCHVISION = ("torchvision:resnet18", "torchvision:mobilenet_v2", "torchvision:efficientnet_b0")
RUNTIMES = ("torch", "onnxruntime")
GOAL_SPEEDUP = 1.8
RESULTS = HERE / "results"
NOTES = RESULTS / "speedup_notes.md"
"""The hand-written reading of the table, appended to the page."""
TOLERANCE = 0.05


@dataclass(frozen=True)
class Settings:
    """Everything that changes the numbers (hashed into the cache folder name)."""

    models: tuple[str, ...]
    size: int                 # torchvision input: 3 x size x size
    agent: str
    episodes: int
    threads: int
    train_epochs: int         # zoo references (benchmarks.run.load_reference)
    val_size: int
    bn_calibration: int
    latency: float = 0.5
    flops: float = 0.5
    rounds: int = 5           # side-by-side timing rounds of the final measurement

    def tag(self) -> str:
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:10]


MODES = {
    "full": Settings(models=ZOO + TORCHVISION, size=224, agent="random", episodes=30, threads=1, train_epochs=8,
                     val_size=1000, bn_calibration=512),
    "smoke": Settings(models=("zoo:plain20", "torchvision:mobilenet_v2"), size=96, agent="uniform", episodes=1,
                      threads=1, train_epochs=1, val_size=300, bn_calibration=128, rounds=3),
}


def plan(settings: Settings) -> list[tuple[str, str, Any, str]]:
    """(model, budget, round_to, runtime of the search) per row."""
    rows = []
    for model in settings.models:
        rows.append((model, f"flops={settings.flops}", 1, "torch"))
        for runtime in RUNTIMES:
            rows.append((model, f"flops={settings.flops}", "auto", runtime))
        for runtime in RUNTIMES:
            rows.append((model, f"latency={settings.latency}", "auto", runtime))
    return rows


class Models:
    """The unpruned models (trained zoo references with their data, random torchvision ones), loaded once."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._cache: dict[str, tuple[Any, torch.Tensor, Any]] = {}

    def get(self, spec: str) -> tuple[Any, torch.Tensor, Any]:
        if spec not in self._cache:
            if spec.startswith("zoo:"):
                from adc.inputs.data import example_input, load_data
                from benchmarks.run import DATA, load_reference

                splits = load_data(DATA)
                model, _ = load_reference(spec.split(":", 1)[1], splits, epochs=self.settings.train_epochs)
                self._cache[spec] = (model.eval(), example_input(splits), splits)
            else:
                torch.manual_seed(0)
                model = build_model(spec, num_classes=1000, in_channels=3).eval()
                self._cache[spec] = (model, torch.randn(1, 3, self.settings.size, self.settings.size), None)
        return self._cache[spec]


def run_row(models: Models, spec: str, budget: str, round_to: Any, runtime: str, settings: Settings,
            cache_dir: Path) -> dict[str, Any]:
    """One search, then the model it hands back timed side by side with the unpruned one in both runtimes."""
    from adc.inputs.training import evaluate

    model, x, splits = models.get(spec)
    # Random weights score nothing: a search among policies of equal reward is pointless, so the torchvision
    # rows take the uniform policy that meets the budget (speed is all they measure).
    agent, episodes = (settings.agent, settings.episodes) if splits is not None else ("uniform", 1)
    options = dict(budget=budget, agent=agent, episodes=episodes, round_to=round_to,
                   runtime=runtime, threads=settings.threads, cache_dir=str(cache_dir / "latency"), select_top=0)
    started = time.perf_counter()
    row: dict[str, Any] = {"model": spec, "input": "x".join(map(str, x.shape[1:])), "budget": budget,
                           "round_to_setting": str(round_to), "search_runtime": runtime}
    try:
        if splits is not None:
            result = adc.search(model, x, data=splits, val_size=settings.val_size,
                                bn_calibration=settings.bn_calibration, **options)
        else:  # random weights: speed only; no data, no accuracy
            result = adc.search(model, x, evaluate=lambda m: 0.0, bn_calibration=0, reconstruct=False, **options)
    except AdcError as exc:
        row.update({"error": one_line(exc, 400), "search_s": time.perf_counter() - started})
        return row
    pruned = result.prune()
    row.update({"search_s": time.perf_counter() - started, "round_to": result.round_to,
                "flops_ratio": result.metrics["flops_ratio"], "alignment": (result.alignment or {}).get("reason"),
                "val_top1": result.metrics["top1"] if splits is not None else None,
                "original_val_top1": result.original["top1"] if splits is not None else None,
                "predicted_latency_ratio": result.metrics.get("latency_ratio")})
    if splits is not None:
        row["test_top1"] = evaluate(pruned, splits.test)["top1"]
        row["original_test_top1"] = evaluate(model, splits.test)["top1"]
    check = result.measured_latency
    if check:
        row.update({"search_measured_ratio": check["measured_ratio"], "corrections": result.latency_hold["corrections"]})
    for rt in RUNTIMES:
        speed = measured_speedup(model, pruned, x, runtime=rt, threads=settings.threads, batch=1, rounds=settings.rounds)
        row[f"{rt}_speedup"] = speed["speedup"]
        row[f"{rt}_original_ms"] = 1e3 * speed["original_s"]
        row[f"{rt}_pruned_ms"] = 1e3 * speed["pruned_s"]
    row["measured_ratio"] = 1.0 / row[f"{runtime}_speedup"]
    return row


def verdict(row: dict[str, Any], settings: Settings) -> str:
    """Whether the row meets its goal, and if not, by how much."""
    if "error" in row:
        return f"refused: {row['error']}"
    if row["budget"].startswith("latency="):
        limit = settings.latency * (1 + TOLERANCE)
        ok = row["measured_ratio"] <= limit
        return ("holds" if ok else "MISSES") + f" ({row['measured_ratio']:.3f} vs <= {limit:.3f} in {row['search_runtime']})"
    if row["round_to_setting"] == "auto" and row["model"].startswith("torchvision:"):
        speed = row[f"{row['search_runtime']}_speedup"]
        ok = speed >= GOAL_SPEEDUP
        return ("meets" if ok else "SHORT") + f" ({speed:.2f}x vs >= {GOAL_SPEEDUP}x in {row['search_runtime']})"
    return "(reference)"




COLUMNS = ("model", "input", "budget", "round_to_setting", "search_runtime", "round_to", "flops_ratio",
           "predicted_latency_ratio", "search_measured_ratio", "measured_ratio", "torch_speedup", "onnxruntime_speedup",
           "torch_original_ms", "torch_pruned_ms", "onnxruntime_original_ms", "onnxruntime_pruned_ms", "val_top1",
           "test_top1", "original_test_top1", "search_s", "verdict", "alignment", "error")


def write_results(rows: list[dict[str, Any]], settings: Settings, md: Path, wall: float, command: str) -> None:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(COLUMNS)
    for r in rows:
        writer.writerow(["" if r.get(c) is None else r.get(c) for c in COLUMNS])
    atomic_write_text(md.with_suffix(".csv"), buf.getvalue())
    torch_version = torch.__version__
    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = "not installed"
    lines = [
        "# Measured speedups of pruned models",
        "",
        f"`{command}` — {wall / 60:.1f} min on {platform.processor() or platform.machine()}, torch {torch_version}, "
        f"onnxruntime {ort_version}, {settings.threads} thread(s), batch 1. Zoo models at 1x28x28 (Fashion-MNIST "
        f"references trained {settings.train_epochs} epoch(s)), searched by agent `{settings.agent}` with "
        f"{settings.episodes} episode(s); torchvision models at 3x{settings.size}x{settings.size} with random "
        "weights, pruned by the uniform policy that meets the budget: speed depends on the shapes, not on the "
        "weights' values, so they have no accuracy (and a search among equal rewards would be pointless).",
        "",
        "Every ratio is measured side by side with the unpruned model in this run (interleaved rounds, median "
        f"of {settings.rounds} per-round ratios; each timing the fastest of several samples of the process's CPU "
        "time, which with one thread is the latency on an idle core). *predicted*: the latency table's prediction for the policy; "
        "*search check*: the search's own measurement before it handed the model back; *measured*: this "
        "benchmark's measurement of the model handed back, in the runtime the search targeted. Goals: flops=0.5 "
        f"with round_to auto >= {GOAL_SPEEDUP}x in its runtime on torchvision rows; latency=R measured <= R x 1.05.",
        "",
        "| model | budget | round_to | searched for | chosen | FLOPs | predicted | search check | measured | "
        "torch speedup | onnxruntime speedup | test top-1 (unpruned) | goal |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        test = (f"{table_cell(r.get('test_top1'), 'pct')} ({table_cell(r.get('original_test_top1'), 'pct')})"
                if r.get("test_top1") is not None else "")
        lines.append(
            f"| {r['model']} {r['input']} | {r['budget']} | {r['round_to_setting']} | {r['search_runtime']} | "
            f"{table_cell(r.get('round_to'))} | {table_cell(r.get('flops_ratio'), 'ratio')} | {table_cell(r.get('predicted_latency_ratio'), 'ratio')} | "
            f"{table_cell(r.get('search_measured_ratio'), 'ratio')} | {table_cell(r.get('measured_ratio'), 'ratio')} | "
            f"{table_cell(r.get('torch_speedup'), 'speed')} | {table_cell(r.get('onnxruntime_speedup'), 'speed')} | {test} | "
            f"{r['verdict']} |")
    loads = [r["load"] for r in rows if r.get("load") is not None]
    if loads:
        lines[3:3] = ["", f"Machine load while the rows ran (1-minute load average, {os.cpu_count()} cores): "
                          f"{min(loads):.1f} to {max(loads):.1f}."]
    short = [r for r in rows if "SHORT" in r["verdict"] or "MISSES" in r["verdict"] or "refused" in r["verdict"]]
    lines += ["", "## Where it falls short", ""]
    lines += [f"- {r['model']} {r['budget']} (round_to {r['round_to_setting']}, {r['search_runtime']}): {r['verdict']}"
              for r in short] or ["- nowhere: every goal was met."]
    lines += ["", "## Why round_to auto chose what it chose", ""]
    lines += [f"- {r['model']} ({r['search_runtime']}, {r['budget']}): {r['alignment']}" for r in rows
              if r.get("alignment")]
    if md.parent == RESULTS and NOTES.is_file():
        lines += ["", NOTES.read_text().rstrip()]
    atomic_write_text(md, "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="two models, uniform agent, small input: a few minutes")
    parser.add_argument("--models", nargs="*", default=None, help="override the mode's models")
    parser.add_argument("--size", type=int, default=None, help="torchvision input size (full: 224)")
    parser.add_argument("--agent", default=None)
    parser.add_argument("--episodes", type=int, default=None)
    parser.add_argument("--report-only", action="store_true", help="rebuild the page from the cached rows, run nothing")
    args = parser.parse_args()
    mode = "smoke" if args.smoke else "full"
    settings = MODES[mode]
    overrides = {k: v for k, v in {"models": tuple(args.models) if args.models else None, "size": args.size,
                                   "agent": args.agent, "episodes": args.episodes}.items() if v is not None}
    settings = dataclasses.replace(settings, **overrides)
    torch.set_num_threads(settings.threads)
    cache = HERE / "cache" / f"speedup-{mode}-{settings.tag()}"
    cache.mkdir(parents=True, exist_ok=True)
    models = Models(settings)
    rows = []
    started = time.perf_counter()
    for spec, budget, round_to, runtime in plan(settings):
        key = f"{spec}-{budget}-{round_to}-{runtime}".replace(":", "_").replace("=", "")
        path = cache / f"{key}.json"
        if path.is_file():
            row = json.loads(path.read_text())
        elif args.report_only:
            continue
        else:
            t0 = time.perf_counter()
            row = run_row(models, spec, budget, round_to, runtime, settings, cache)
            row["verdict"] = verdict(row, settings)
            row["load"] = os.getloadavg()[0]
            row["row_s"] = time.perf_counter() - t0
            atomic_write_text(path, json.dumps(row, indent=1))
            print(f"{spec} {budget} round_to={round_to} {runtime}: {row['verdict']} ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
        rows.append(row)
    wall = sum(r.get("row_s", 0.0) for r in rows) or time.perf_counter() - started
    command = " ".join(["python -m benchmarks.speedup", *[a for a in sys.argv[1:] if a != "--report-only"]])
    md = (cache / "speedup.md") if args.smoke else (HERE / "results" / "speedup.md")
    write_results(rows, settings, md, wall, command)
    times = [r.get("search_s", 0.0) for r in rows]
    print(f"wrote {md} and {md.with_suffix('.csv')} ({len(rows)} rows, {wall / 60:.1f} min; median search "
          f"{statistics.median(times):.0f} s)")


if __name__ == "__main__":
    main()
