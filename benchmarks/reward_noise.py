"""How noisy is the search's reward? ``python -m benchmarks.reward_noise [--cache DIR] [--out DIR]``.

Reads the cached rows of benchmark v2 (:mod:`benchmarks.v2`; nothing is run)
and, for every search row, looks at its final selection: the 8 policies with
the best rewards (top-1 on the first ``val_size`` = 1,000 validation images),
each re-scored on the 5,000 validation images after them that the reward
never saw. If the reward could rank good policies, the two scores would agree
on their order. Reported per row:

- ``optimism``: the mean of reward minus held-out score over the 8 (the
  winner's curse: the best of many noisy rewards is partly the luckiest);
- ``rho``: Spearman's rank correlation of the two scores over the 8;
- ``best-reward pick``: the held-out score of the best-reward policy, against
  the best held-out score among the 8 (what the final selection recovers);
- the binomial standard error of a top-1 measured on the reward's images, at
  the rows' accuracy: two policies closer than about twice that are not told
  apart by one reward each (shared images make a paired difference somewhat
  less noisy; the rows do not store per-image results to measure that).

Writes ``benchmarks/results/reward_noise.md`` (with the hand-written reading of
``reward_noise_notes.md`` when present).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks.report import write_page
from benchmarks.run import RESULTS_DIR
from benchmarks.v2 import MODES, cache_dir


def rows(cache: Path) -> list[dict[str, Any]]:
    """The search rows of a v2 cache folder whose final selection scored at least 3 policies."""
    found = []
    for path in sorted(cache.glob("*-rec*-bn*.json")):
        record = json.loads(path.read_text())
        if "selection" in record and len(record.get("selection") or []) >= 3:
            found.append(record)
    return found


def measure(record: dict[str, Any], val_size: int) -> dict[str, Any]:
    """The selection's reward against held-out agreement figures of one row (see the module docs)."""
    from scipy.stats import spearmanr

    selection = record["selection"]
    rewards = [s["reward"] for s in selection]
    heldout = [s["holdout_top1"] for s in selection]
    best_reward = max(range(len(rewards)), key=lambda i: (rewards[i], -i))
    top1 = statistics.mean(rewards)
    return {
        "model": record["model"], "budget": record["budget_flops"], "strategy": record["strategy"],
        "seed": record["seed"], "n": len(selection),
        "reward_range": (min(rewards), max(rewards)), "heldout_range": (min(heldout), max(heldout)),
        "optimism": statistics.mean(r - h for r, h in zip(rewards, heldout)),
        "rho": float(spearmanr(rewards, heldout).statistic),
        "best_reward_heldout": heldout[best_reward], "best_heldout": max(heldout),
        "standard_error": (top1 * (1 - top1) / val_size) ** 0.5,
    }


def report(measured: list[dict[str, Any]], cache: Path, val_size: int, select_size: int) -> str:
    pts = lambda v: f"{100 * v:.2f}"  # noqa: E731 -- points of top-1
    lines = ["# How noisy is the search's reward?", "",
             f"- Command: `python -m benchmarks.reward_noise` (reads `{cache.relative_to(cache.parents[2])}`; runs nothing).",
             f"- Each search's final selection: its 8 best-reward policies (reward: top-1 on {val_size:,} validation "
             f"images), re-scored on {select_size:,} held-out validation images. Points of top-1.", "",
             "| model | FLOPs | strategy | seed | reward of the 8 | held-out of the 8 | optimism | rho | "
             "best-reward policy held-out / best held-out | SE of one reward |",
             "|---|---|---|---|---|---|---:|---:|---|---:|"]
    for m in measured:
        lines.append(
            f"| {m['model']} | {m['budget']} | {m['strategy']} | {m['seed']} | "
            f"{pts(m['reward_range'][0])}-{pts(m['reward_range'][1])} | "
            f"{pts(m['heldout_range'][0])}-{pts(m['heldout_range'][1])} | +{pts(m['optimism'])} | {m['rho']:+.2f} | "
            f"{pts(m['best_reward_heldout'])} / {pts(m['best_heldout'])} | {pts(m['standard_error'])} |")
    lines += ["", "## Per cell", "",
              "| model | FLOPs | rows | median rho | mean optimism | held-out lost by taking the best reward (mean) |",
              "|---|---|---:|---:|---:|---:|"]
    cells: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for m in measured:
        cells[(m["model"], m["budget"])].append(m)
    for (model, budget), ms in sorted(cells.items()):
        lines.append(f"| {model} | {budget} | {len(ms)} | {statistics.median(m['rho'] for m in ms):+.2f} | "
                     f"+{pts(statistics.mean(m['optimism'] for m in ms))} | "
                     f"{pts(statistics.mean(m['best_heldout'] - m['best_reward_heldout'] for m in ms))} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reward_noise", description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=None,
                        help="a v2 cache folder (default: the full run's, acc reward)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    cache = args.cache or cache_dir("full", MODES["full"])
    if not cache.is_dir():
        print("error: --cache: no v2 cache folder (run `python -m benchmarks.v2 --full` first)", file=sys.stderr)
        return 2
    settings = json.loads((cache / "settings.json").read_text()) if (cache / "settings.json").is_file() else {}
    val_size, select_size = int(settings.get("val_size") or 1000), int(settings.get("select_size") or 5000)
    measured = [measure(r, val_size) for r in rows(cache)]
    if not measured:
        print(f"error: --cache {cache}: no search row with a final selection", file=sys.stderr)
        return 2
    write_page(args.out, "reward_noise", report(measured, cache.resolve(), val_size, select_size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
