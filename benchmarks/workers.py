"""Parallel search on this machine: episodes per minute with 1 and 2 workers, side by side.

``python -m benchmarks.workers [--episodes 40] [--repeats 2]`` searches plain20 and resnet20 on Fashion-MNIST
(the reference models of ``benchmarks.run``) with the default settings (reconstruction and BN recalibration on,
1,000 validation images, one torch thread per worker), alternating 1 and 2 workers so both see the same
machine, and reports the steady episode rate (after the first round; Ray's start and shipping the evaluator to
the workers are reported apart) and their ratio. Writes ``benchmarks/results/workers.md`` and ``.csv``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def one_search(model, x, splits, *, workers: int, agent: str, episodes: int) -> dict:
    import adc

    stamps: list[float] = []
    t0 = time.perf_counter()
    result = adc.search(model, x, data=splits, agent=agent, episodes=episodes, workers=workers, seed=0, select_top=0,
                        progress=lambda r, b: stamps.append(time.perf_counter()))
    total = time.perf_counter() - t0
    first = stamps[workers - 1]
    steady = (len(stamps) - workers) / (stamps[-1] - first) * 60
    return {"workers": workers, "agent": agent, "episodes": len(result.history), "episodes_per_min": steady,
            "first_round_s": first - t0,
            "wall_s": total, "rewards": [h["reward"] for h in result.history]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.workers", description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2, help="alternations of 1 and 2 workers per model and agent")
    parser.add_argument("--models", nargs="*", default=["plain20", "resnet20"])
    parser.add_argument("--agents", nargs="*", default=["random", "ddpg"])
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)

    import ray
    import torch

    from adc.inputs.data import example_input, load_data
    from benchmarks.run import DATA, load_reference

    torch.set_num_threads(1)
    splits = load_data(DATA)
    x = example_input(splits)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    rows = []
    for name in args.models:
        model, _ = load_reference(name, splits)
        for agent in args.agents:
            for rep in range(args.repeats):
                for workers in ((1, 2) if rep % 2 == 0 else (2, 1)):
                    row = one_search(model, x, splits, workers=workers, agent=agent, episodes=args.episodes)
                    row.update(model=name, repeat=rep)
                    rows.append(row)
                    print(json.dumps({k: v for k, v in row.items() if k != "rewards"}), flush=True)
    ray.shutdown()
    write(rows, args)
    return 0


def write(rows: list[dict], args: argparse.Namespace) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    fields = ["model", "agent", "repeat", "workers", "episodes", "episodes_per_min", "wall_s"]
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    (args.out / "workers.csv").write_text(buf.getvalue())
    lines = ["# Parallel search: episodes per minute, 1 vs 2 workers (this 2-core machine)", "",
             f"Command: `python -m benchmarks.workers --episodes {args.episodes} --repeats {args.repeats}`. "
             "Fashion-MNIST, default search settings (reconstruction and BN recalibration on, 1,000 validation "
             "images), one torch thread per worker, 1 and 2 workers alternated so both see the same machine. "
             "The rate is taken after the first round (Ray's start and shipping the evaluator to the workers are "
             "in the wall time, not in the rate).", "",
             "| model | agent | 1 worker (episodes/min) | 2 workers (episodes/min) | ratio | same rewards |",
             "|---|---|---|---|---|---|"]
    for model in args.models:
        for agent in args.agents:
            one = [r for r in rows if r["model"] == model and r["agent"] == agent and r["workers"] == 1]
            two = [r for r in rows if r["model"] == model and r["agent"] == agent and r["workers"] == 2]
            if not one or not two:
                continue
            a = statistics.median(r["episodes_per_min"] for r in one)
            b = statistics.median(r["episodes_per_min"] for r in two)
            same = "yes" if agent == "random" and one[0]["rewards"] == two[0]["rewards"] else (
                "n/a (ddpg acts on 2 envs a round)" if agent != "random" else "NO")
            lines.append(f"| {model} | {agent} | {a:.1f} | {b:.1f} | **{b / a:.2f}x** | {same} |")
    (args.out / "workers.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
