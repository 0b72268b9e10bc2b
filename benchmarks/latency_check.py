"""How well does the latency lookup table predict a pruned model's measured latency?

For each model: build (or read from the cache) its per-layer latency table,
then for several random policies prune the model for real and compare the
table's prediction with the pruned model's measured end-to-end latency (same
runtime, threads and batch). Also, for one budget target, the uniform policy
that meets ``flops=T`` vs the one that meets ``latency=T``: their measured
latencies side by side (accuracy is not involved: no search is run).

    .venv/bin/python benchmarks/latency_check.py                 # writes benchmarks/results/latency_check.md
    .venv/bin/python benchmarks/latency_check.py --runtime onnxruntime --models zoo:plain20

Timings on a busy machine are noisy; the script uses 1 thread by default
(two threads on two cores shared with other work stall at every barrier).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adc.analysis.graph import analyze  # noqa: E402
from adc.analysis.latency import build_latency_table  # noqa: E402
from adc.analysis.space import PolicySpace  # noqa: E402
from adc.analysis.timers import make_timer  # noqa: E402
from adc.envs.task import ModelTask  # noqa: E402
from adc.utils.errors import AdcError  # noqa: E402
from adc.inputs.models import build_model  # noqa: E402
from adc.pruning.pruner import ChannelPruner  # noqa: E402

DEFAULT_MODELS = {
    "zoo:plain20": (3, 32, 32), "zoo:resnet20": (3, 32, 32), "zoo:mobilenet": (3, 32, 32), "zoo:vgg_small": (3, 32, 32),
    "torchvision:resnet18": (3, 64, 64), "torchvision:mobilenet_v2": (3, 64, 64),
}


def check_model(spec: str, shape: tuple[int, ...], args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    model = build_model(spec, num_classes=10, in_channels=shape[0]).eval()
    x = torch.randn(1, *shape)
    graph = analyze(model, x)
    timer = make_timer(args.runtime, "cpu", args.threads, warmup=3, repeats=args.repeats, min_sample=0.005,
                       statistic=args.statistic)
    t0 = time.perf_counter()
    pruner = ChannelPruner(model, x, round_to=args.round_to, graph=graph)
    space = PolicySpace(graph, round_to=args.round_to)
    table = build_latency_table(model, x, space, prune_to=pruner.prune_kept, timer=timer, cache_dir=args.cache_dir,
                                points=args.points)
    build_s = time.perf_counter() - t0
    rng = np.random.default_rng(args.seed)
    rows = []
    for p in range(args.policies):
        sparsity = rng.uniform(0.0, 0.8, len(graph.units))
        policy = {u.name: float(s) for u, s in zip(graph.units, sparsity)}
        kept = np.array([u.kept(policy[u.name], args.round_to) for u in graph.units], dtype=float)
        pruned = pruner.prune(policy).eval()
        measured = timer.time(pruned, x)
        predicted = table.price(kept)
        rows.append({"policy": p, "predicted": predicted, "measured": measured, "error": (predicted - measured) / measured})
    full_again = timer.time(model, x)
    comparison = budget_comparison(model, x, table, timer, pruner, args.target) if args.target else None
    return {"model": spec, "shape": shape, "rows": rows, "build_s": build_s, "measurements": table.measurements,
            "table_total": table.measured_total, "constant": table.constant, "full_again": full_again,
            "info": table.info, "comparison": comparison}


def budget_comparison(model, x, table, timer, pruner, target: float) -> dict:
    """Uniform policy under flops=T vs latency=T (the environment's clipping), measured."""
    out = {}
    for key in ("flops", "latency"):
        try:
            task = ModelTask.build(model, x, score=lambda m: 0.0, budgets=[f"{key}={target}"], latency_table=table,
                                   pruner=pruner)
        except AdcError as exc:  # e.g. a latency target the table says is unreachable
            out[key] = {"error": str(exc)}
            continue
        kept, _ = task.play_actions(task.uniform_actions())
        policy = task.space.policy_of(kept)
        record = task.recorder.record(kept, {"top1": 0.0})
        out[key] = {"measured": timer.time(pruner.prune(policy).eval(), x), "flops_ratio": record["flops_ratio"],
                    "predicted_latency_ratio": record["latency_ratio"]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(DEFAULT_MODELS))
    parser.add_argument("--input-size", type=int, default=None, help="H=W for every model (default: 32 zoo, 64 torchvision)")
    parser.add_argument("--runtime", default="torch")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--policies", type=int, default=5)
    parser.add_argument("--points", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--round-to", type=int, default=1)
    parser.add_argument("--target", type=float, default=0.75, help="budget fraction of the flops-vs-latency comparison (0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--statistic", default="min", help="median or min of the timed samples (min: steadier on a busy machine)")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "latency_check.md"))
    args = parser.parse_args()

    results = []
    for spec in args.models:
        shape = DEFAULT_MODELS.get(spec, (3, 32, 32))
        if args.input_size:
            shape = (shape[0], args.input_size, args.input_size)
        r = check_model(spec, shape, args)
        errs = [abs(row["error"]) for row in r["rows"]]
        print(f"{spec} {shape}: median |error| {100 * statistics.median(errs):.1f}%, mean {100 * statistics.mean(errs):.1f}%, max {100 * max(errs):.1f}% "
              f"({len(errs)} policies; table built in {r['build_s']:.1f} s, {r['measurements']} timings)", flush=True)
        results.append(r)
    write_markdown(Path(args.out), results, args)


def write_markdown(path: Path, results: list[dict], args: argparse.Namespace) -> None:
    info = results[0]["info"]
    lines = [
        "# Latency table: predicted vs measured end-to-end latency",
        "",
        f"Runtime {info['runtime']} {info['version']} on {info['device']} ({platform.machine()}), {info['threads']} thread(s), "
        f"batch {info['batch']}; {args.points} grid points per axis, {args.policies} random policies per model "
        f"(per-unit sparsity uniform in [0, 0.8], seed {args.seed}), timings are the {args.statistic} of {args.repeats} samples. "
        "The machine had 2 cores shared with other jobs, so timings are noisy. Zoo models at 3x32x32, torchvision "
        "models at 3x64x64 (3x224x224 is too slow here).",
        "",
        "| model | input | median abs error | mean abs error | max abs error | unpruned: table / re-measured | "
        "table build (s) | timings |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        errs = [abs(row["error"]) for row in r["rows"]]
        lines.append(f"| {r['model']} | {'x'.join(map(str, r['shape']))} | {100 * statistics.median(errs):.1f}% | "
                     f"{100 * statistics.mean(errs):.1f}% | "
                     f"{100 * max(errs):.1f}% | {1e3 * r['table_total']:.3f} / {1e3 * r['full_again']:.3f} ms | "
                     f"{r['build_s']:.1f} | {r['measurements']} |")
    lines += ["", "## Per policy", "", "| model | policy | predicted (ms) | measured (ms) | error |", "|---|---|---|---|---|"]
    for r in results:
        for row in r["rows"]:
            lines.append(f"| {r['model']} | {row['policy']} | {1e3 * row['predicted']:.3f} | {1e3 * row['measured']:.3f} | "
                         f"{100 * row['error']:+.1f}% |")
    if any(r["comparison"] for r in results):
        lines += ["", f"## Uniform policy at flops={args.target} vs latency={args.target}", "",
                  "Measured latency of the pruned model (the unpruned model's is in the first table).", "",
                  "| model | budget | FLOPs ratio | predicted latency ratio | measured (ms) | measured ratio |",
                  "|---|---|---|---|---|---|"]
        for r in results:
            for key, c in (r["comparison"] or {}).items():
                if "error" in c:
                    lines.append(f"| {r['model']} | {key}={args.target} | {c['error']} | | | |")
                    continue
                lines.append(f"| {r['model']} | {key}={args.target} | {c['flops_ratio']:.3f} | "
                             f"{c['predicted_latency_ratio']:.3f} | {1e3 * c['measured']:.3f} | "
                             f"{c['measured'] / r['full_again']:.3f} |")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
