"""One change to the search against benchmark v2's default, on the same rows: ``python -m benchmarks.v2_variants``.

Each variant of :data:`benchmarks.v2.VARIANTS` (a different reward, an agent
option) is run on v2's rows of the strategies it changes, into its own cache::

    python -m benchmarks.v2 --full --variant reward-loss --model resnet20

Everything else is v2's full setting (seeds, episodes, workers, the final
selection of the 8 best policies on the 5,000 held-out validation images,
which ranks by the search's own reward measured there). This module reads
both caches (nothing is run) and writes, per variant with rows,
``benchmarks/results/v2_<variant>.md`` (with the hand-written reading of
``v2_<variant>_notes.md`` when present). Per (model, budget, strategy), on the
seeds run both ways:

- test top-1 of the handed-back model before fine-tuning, mean ± sd, and the
  mean of the paired differences (variant minus default, same seed);
- held-out top-1 (the 5,000 validation images after the reward's) of the
  best-reward policy at episodes 100 and 200 -- what the search would hand
  back without its final selection;
- test top-1 after the distilled 2-epoch fine-tune, seed 0 only on both sides
  (:data:`benchmarks.v2.VARIANT_FINETUNE_SEEDS`; v2's own page averages 3);

and, per cell, the paired differences pooled over strategies and seeds.
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
from benchmarks.v2 import MODES, SEEDED, VARIANTS, V2Settings, Variant, cached_records, plan


def load_rows(settings: V2Settings, strategies: tuple[str, ...]) -> dict[tuple[str, float, str, int], dict[str, Any]]:
    """The full mode's cached search rows of ``strategies`` under ``settings`` (with their fine-tune where cached)."""
    rows = [r for r in plan(settings) if r.strategy in strategies]
    return {(row.model, row.budget, row.strategy, row.seed): record
            for row, record in cached_records("full", settings, rows)}


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


def report(name: str, variant: Variant, default: dict[tuple, dict[str, Any]], changed: dict[tuple, dict[str, Any]]) -> str:
    """The variant's page: one line per cell and strategy run both ways, then the pooled differences."""
    strategies = [s for s in SEEDED if s in variant.strategies]
    cells = sorted({k[:3] for k in default} & {k[:3] for k in changed},
                   key=lambda c: (c[0], -c[1], strategies.index(c[2])))
    lines = [
        f"# Variant `{name}` against benchmark v2's default search",
        "",
        f"- The change: {variant.note}. Settings changed: `{json.dumps(variant.changes)}`; strategies: "
        f"{', '.join(variant.strategies)}.",
        f"- Command: `python -m benchmarks.v2_variants` (reads the cached rows of `python -m benchmarks.v2 --full` and "
        f"`python -m benchmarks.v2 --full --variant {name}`).",
        f"- Everything else is v2's full mode (`{json.dumps(_shown_settings(), sort_keys=True)}`).",
        *([f"- Compared with the default it was measured against; these of its fields have changed since: "
           f"`{json.dumps(variant.baseline)}`."] if variant.baseline else []),
        "- Columns: test top-1 (%) of the handed-back model, mean ± sd over the seeds run both ways; "
        "Δ = mean of the paired differences (variant − default, same seed); held-out @N = top-1 on the 5,000 "
        "validation images after the reward's, of the best-reward policy after N episodes (before the final "
        "selection); fine-tuned = 2 distilled epochs, seed 0 only.",
        "",
        "| model | FLOPs | strategy | seeds | test default | test variant | Δ test | held-out @100 default / variant | "
        "held-out @200 default / variant | fine-tuned default / variant |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model, budget, strategy in cells:
        seeds = sorted(k[3] for k in default if k[:3] == (model, budget, strategy) and k in changed)
        pairs = [(default[(model, budget, strategy, s)], changed[(model, budget, strategy, s)]) for s in seeds]
        test = [[p[i]["test_top1_pruned"] for p in pairs] for i in (0, 1)]
        held = {e: [[v for p in pairs if (v := curve_at(p[i], e)) is not None] for i in (0, 1)] for e in (100, 200)}
        tuned = [[p[i]["test_top1_finetuned"] for p in pairs if "test_top1_finetuned" in p[i]] for i in (0, 1)]
        lines.append(
            f"| {model} | {budget} | {strategy} | {', '.join(map(str, seeds))} | {_pts(test[0])} | {_pts(test[1])} | "
            f"{_diff(*test)} | {_pts(held[100][0])} / {_pts(held[100][1])} | {_pts(held[200][0])} / {_pts(held[200][1])} | "
            f"{_pts(tuned[0])} / {_pts(tuned[1])} |")
    lines += ["", "Pooled over strategies and seeds (paired by strategy and seed; ± is the standard error of the mean):", ""]
    for model, budget in dict.fromkeys(c[:2] for c in cells):
        pairs = [(default[k], changed[k]) for k in default if k[:2] == (model, budget) and k in changed]
        lines.append(f"- {model} at {budget} FLOPs, {len(pairs)} pairs: test top-1 variant − default "
                     f"{_paired([p[0]['test_top1_pruned'] for p in pairs], [p[1]['test_top1_pruned'] for p in pairs])}; "
                     f"held-out top-1 of the best-reward policy at 200 episodes "
                     f"{_paired([curve_at(p[0], 200) for p in pairs], [curve_at(p[1], 200) for p in pairs])}.")
    return "\n".join(lines) + "\n"


def _shown_settings() -> dict[str, Any]:
    """The full mode's settings a reader needs to place the rows."""
    shown = ("episodes", "val_size", "select_size", "select_top", "workers", "criterion", "reward")
    return {k: v for k, v in dataclasses.asdict(MODES["full"]).items() if k in shown}


def _paired(a: list[float | None], b: list[float | None]) -> str:
    d = [100 * (y - x) for x, y in zip(a, b) if x is not None and y is not None]
    if not d:
        return "—"
    se = statistics.stdev(d) / len(d) ** 0.5 if len(d) > 1 else 0.0
    return f"{statistics.mean(d):+.2f} ± {se:.2f} points ({sum(x > 0 for x in d)} of {len(d)} pairs higher with the variant)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.v2_variants", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    written = 0
    for name, variant in VARIANTS.items():
        changed = load_rows(variant.apply(MODES["full"]), variant.strategies)
        if changed:
            default = load_rows(variant.default(MODES["full"]), variant.strategies)
            write_page(args.out, f"v2_{name}", report(name, variant, default, changed))
            written += 1
    if not written:
        print("error: no variant has cached rows: run python -m benchmarks.v2 --full --variant NAME first "
              f"(valid: {', '.join(VARIANTS)})", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
