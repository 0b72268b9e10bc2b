"""The loss reward against the accuracy reward on whole searches: ``python -m benchmarks.reward_search [--out DIR]``.

:mod:`benchmarks.reward_ranking` found that, on the same 1,000 validation
images, the cross-entropy ranks pruned policies better than top-1 does. This
page asks whether that makes whole searches better. It reads benchmark v2's
cached rows (nothing is run): the default reward (``acc``: top-1 on the first
``val_size`` validation images) and ``loss`` (minus the cross-entropy on the
same images), the latter run by::

    python -m benchmarks.v2 --full --reward loss --model resnet20 --strategy cmaes --strategy ddpg ...

Everything else is the same (settings, seeds, episodes, workers, the final
selection on the 5,000 held-out validation images, which ranks by the same
reward measured there). Per (model, budget, strategy), on the seeds searched
under both rewards:

- test top-1 of the handed-back model before fine-tuning, mean ± sd, and the
  mean of the paired differences (loss minus acc, same seed);
- held-out top-1 (the 5,000 validation images after the reward's) of the
  best-reward policy at episodes 100 and 200 -- what the search would hand
  back without its final selection;
- test top-1 after the distilled 2-epoch fine-tune (seed 0 only, as in v2).

Writes ``benchmarks/results/reward_search.md`` (with the hand-written reading
of ``reward_search_notes.md`` when present).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from benchmarks.report import write_page
from benchmarks.run import RESULTS_DIR
from benchmarks.v2 import MODES, cache_dir, plan

REWARDS = ("acc", "loss")
STRATEGIES = ("random", "cmaes", "tpe", "ddpg")


def load_rows(reward: str) -> dict[tuple[str, float, str, int], dict[str, Any]]:
    """The full mode's cached search rows under ``reward`` (with their fine-tune where cached), by cell and seed."""
    settings = dataclasses.replace(MODES["full"], reward=reward)
    cache = cache_dir("full", settings)
    found: dict[tuple[str, float, str, int], dict[str, Any]] = {}
    for row in plan(settings):
        path = cache / f"{row.key}.json"
        if row.strategy in STRATEGIES and path.is_file():
            record = json.loads(path.read_text())
            tuned = cache / f"{row.key}-ft-{settings.finetune_tag()}.json"
            if tuned.is_file():
                record.update(json.loads(tuned.read_text()))
            found[(row.model, row.budget, row.strategy, row.seed)] = record
    return found


def curve_at(record: dict[str, Any], episode: int) -> float | None:
    """Held-out top-1 of the best-reward policy after ``episode`` episodes (None when not checkpointed)."""
    return next((p["heldout_top1"] for p in record["heldout_curve"] if p["episode"] == episode), None)


def _pts(values: list[float]) -> str:
    if not values:
        return "—"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.2f} ± {100 * sd:.2f}" if len(values) > 1 else f"{100 * values[0]:.2f}"


def _diff(a: list[float], b: list[float]) -> str:
    if not a:
        return "—"
    return f"{100 * statistics.mean(y - x for x, y in zip(a, b)):+.2f}"


def report(rows: dict[str, dict[tuple[str, float, str, int], dict[str, Any]]]) -> str:
    """The comparison table, one line per cell and strategy searched under both rewards."""
    acc, loss = rows["acc"], rows["loss"]
    cells = sorted({k[:3] for k in acc} & {k[:3] for k in loss},
                   key=lambda c: (c[0], -c[1], STRATEGIES.index(c[2])))
    lines = [
        "# The loss reward against the accuracy reward, on whole searches",
        "",
        "- Command: `python -m benchmarks.reward_search` (reads benchmark v2's cached rows: "
        "`python -m benchmarks.v2 --full` and `python -m benchmarks.v2 --full --reward loss`).",
        f"- Settings: v2's full mode (`{json.dumps({k: v for k, v in dataclasses.asdict(MODES['full']).items() if k in ('episodes', 'val_size', 'select_size', 'select_top', 'workers', 'criterion')}, sort_keys=True)}`); "
        "`acc` = top-1 on the first 1,000 validation images, `loss` = minus their cross-entropy.",
        "- Columns: test top-1 (%) of the handed-back model, mean ± sd over the seeds searched under both rewards; "
        "Δ = mean of the paired differences (loss − acc, same seed); held-out @N = top-1 on the 5,000 validation "
        "images after the reward's, of the best-reward policy after N episodes (before the final selection); "
        "fine-tuned = 2 distilled epochs, seed 0 only.",
        "",
        "| model | FLOPs | strategy | seeds | test acc | test loss | Δ test | held-out @100 acc / loss | "
        "held-out @200 acc / loss | fine-tuned acc / loss |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model, budget, strategy in cells:
        seeds = sorted(s for (m, b, st, s) in acc if (m, b, st) == (model, budget, strategy)
                       and (m, b, st, s) in loss)
        pairs = [(acc[(model, budget, strategy, s)], loss[(model, budget, strategy, s)]) for s in seeds]
        test = [[p[i]["test_top1_pruned"] for p in pairs] for i in (0, 1)]
        held = {e: [[v for p in pairs if (v := curve_at(p[i], e)) is not None] for i in (0, 1)] for e in (100, 200)}
        tuned = [[p[i]["test_top1_finetuned"] for p in pairs if "test_top1_finetuned" in p[i]] for i in (0, 1)]
        lines.append(
            f"| {model} | {budget} | {strategy} | {', '.join(map(str, seeds))} | {_pts(test[0])} | {_pts(test[1])} | "
            f"{_diff(*test)} | {_pts(held[100][0])} / {_pts(held[100][1])} | {_pts(held[200][0])} / {_pts(held[200][1])} | "
            f"{_pts(tuned[0])} / {_pts(tuned[1])} |")
    if not cells:
        lines.append("| (no cell has rows under both rewards yet) |||||||||| ")
    lines += ["", "Pooled over strategies and seeds (paired by strategy and seed; ± is the standard error of the mean):", ""]
    for model, budget in dict.fromkeys(c[:2] for c in cells):
        pairs = [(acc[k], loss[k]) for k in acc if k[:2] == (model, budget) and k in loss]
        lines.append(f"- {model} at {budget} FLOPs, {len(pairs)} pairs: test top-1 loss − acc "
                     f"{_paired([p[0]['test_top1_pruned'] for p in pairs], [p[1]['test_top1_pruned'] for p in pairs])}; "
                     f"held-out top-1 of the best-reward policy at 200 episodes "
                     f"{_paired([curve_at(p[0], 200) for p in pairs], [curve_at(p[1], 200) for p in pairs])}.")
    return "\n".join(lines) + "\n"


def _paired(a: list[float | None], b: list[float | None]) -> str:
    d = [100 * (y - x) for x, y in zip(a, b) if x is not None and y is not None]
    if not d:
        return "—"
    se = statistics.stdev(d) / len(d) ** 0.5 if len(d) > 1 else 0.0
    return f"{statistics.mean(d):+.2f} ± {se:.2f} points ({sum(x > 0 for x in d)} of {len(d)} pairs higher with loss)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reward_search", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    rows = {reward: load_rows(reward) for reward in REWARDS}
    if not rows["loss"]:
        print("error: no loss-reward rows cached: run python -m benchmarks.v2 --full --reward loss first", file=sys.stderr)
        return 2
    write_page(args.out, "reward_search", report(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
