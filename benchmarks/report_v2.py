"""Write benchmark v2's page from cached rows: markdown, CSV and plots (accuracy, policies, held-out curves).

The page states, per model and budget, whether each searcher beats uniform
pruning and random search, and whether ddpg beats the best rival; tabulates
test top-1 before and after the distilled fine-tune; and shows sample
efficiency: the held-out score of the best-so-far policy against episodes,
and the episode at which each strategy first reaches random search's final
best. The hand-written reading, ``{stem}_notes.md`` (kept in git), is
included after the verdicts; rebuilding the page never touches it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import statistics
from collections import defaultdict
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from adc.utils.files import atomic_write_text
from benchmarks.report import COLORS, STRATEGY_ORDER, _grid, _notes, _num, _pct, _save_figure, plot_accuracy, plot_policies

SEARCHERS = ("random", "cmaes", "tpe", "ddpg")
RIVALS = ("uniform", "sensitivity", "random", "cmaes", "tpe")
CSV_COLUMNS = [
    "model", "budget_flops", "strategy", "seed", "test_top1_unpruned", "test_top1_pruned", "test_top1_finetuned",
    "val_top1_best", "heldout_final", "macs_fraction", "params_fraction", "episodes", "evaluations", "workers",
    "search_wall_s", "episode_mean_s", "curve_s", "finetune_s", "chosen_episode", "heldout_curve", "kept_fraction",
    "finetuned_top1_by_seed",
]


def groups(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (model, budget, strategy): means and sds over the rows that have each column.

    The fine-tuned column averages every fine-tune of the group's rows (``n_ft`` of them): one per seeded row,
    one per fine-tune seed of uniform's and sensitivity's one row (:func:`finetuned_values`).
    """
    out = []
    for (model, budget), by_strategy in _cells(records).items():
        for strategy in sorted(by_strategy, key=_order):
            rows = by_strategy[strategy]
            g: dict[str, Any] = {"model": model, "budget_flops": budget, "strategy": strategy, "variant": "default",
                                 "n": len(rows)}
            for col in ("test_top1_pruned", "test_top1_finetuned", "heldout_final", "macs_fraction", "search_wall_s",
                        "episodes", "evaluations", "test_top1_unpruned"):
                if col == "test_top1_finetuned":
                    values = [v for r in rows for v in finetuned_values(r)]
                else:
                    values = [heldout_final(r) if col == "heldout_final" else r.get(col) for r in rows]
                    values = [v for v in values if v is not None]
                g[col] = statistics.fmean(values) if values else None
                g[col + "_std"] = _sd(values)
                g["n_ft" if col == "test_top1_finetuned" else f"n_{col}"] = len(values)
            out.append(g)
    return out


def finetuned_values(r: Mapping[str, Any]) -> list[float]:
    """Test top-1 after each of the row's fine-tunes, in seed order (:func:`benchmarks.v2.with_finetunes`)."""
    return list(r.get("finetuned_top1_by_seed", {}).values())


def _order(strategy: str) -> int:
    return STRATEGY_ORDER.index(strategy) if strategy in STRATEGY_ORDER else len(STRATEGY_ORDER)


def _cells(records: list[dict[str, Any]]) -> dict[tuple[str, float], dict[str, list[dict[str, Any]]]]:
    """``(model, budget) -> strategy -> rows``, in run order."""
    cells: dict[tuple[str, float], dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        cells[(r["model"], r["budget_flops"])][r["strategy"]].append(r)
    return cells


def heldout_final(r: Mapping[str, Any]) -> float:
    """Held-out top-1 of the row's best-by-reward policy at its last checkpoint."""
    return r["heldout_curve"][-1]["heldout_top1"]


def first_reach(r: Mapping[str, Any], target: float) -> int | None:
    """The first checkpoint at which the row's held-out curve reaches ``target`` (None: never)."""
    return next((p["episode"] for p in r["heldout_curve"] if p["heldout_top1"] >= target - 1e-12), None)


def first_reward_reach(r: Mapping[str, Any], target: float) -> int | None:
    """The first episode (1-based) whose best-so-far reward reaches ``target`` (None: never)."""
    return next((k + 1 for k, h in enumerate(r["history"]) if h[1] >= target - 1e-12), None)


def _reach_text(values: list[int | None]) -> str:
    return ", ".join("never" if v is None else str(v) for v in values)


def efficiency_lines(records: list[dict[str, Any]]) -> list[str]:
    """The sample-efficiency table: held-out top-1 at checkpoints, and when random search's final best is reached."""
    head = ("| model | FLOPs | strategy | held-out top-1 (%) at checkpoints, mean ± sd | reaches random's final held-out "
            "best at checkpoint (per seed) | reaches random's final best reward at episode (per seed) |")
    lines = [head, "|---|---|---|---|---|---|"]
    for (model, budget), by_strategy in _cells(records).items():
        randoms = by_strategy.get("random", [])
        target = statistics.fmean(heldout_final(r) for r in randoms) if randoms else None
        reward_target = statistics.fmean(r["history"][-1][1] for r in randoms) if randoms else None
        for strategy in sorted(by_strategy, key=_order):
            rows = by_strategy[strategy]
            points = defaultdict(list)
            for r in rows:
                for p in r["heldout_curve"]:
                    points[p["episode"]].append(p["heldout_top1"])
            curve = "; ".join(f"{e}: {_pct(statistics.fmean(v), _sd(v), len(v))}" for e, v in sorted(points.items()))
            reach = "-" if target is None else _reach_text([first_reach(r, target) for r in rows])
            reward = "-" if reward_target is None or strategy not in SEARCHERS else _reach_text(
                [first_reward_reach(r, reward_target) for r in rows])
            lines.append(f"| {model} | {budget} | {strategy} | {curve} | {reach} | {reward} |")
    return lines


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def verdicts(records: list[dict[str, Any]]) -> list[str]:
    """Per model and budget: each searcher against uniform and random, and ddpg against its best rival."""
    by_cell: dict[tuple[str, float], dict[str, dict[str, Any]]] = defaultdict(dict)
    for g in groups(records):
        by_cell[(g["model"], g["budget_flops"])][g["strategy"]] = g
    lines = []
    for (model, budget), gs in by_cell.items():
        parts = []
        for searcher in (s for s in SEARCHERS if s in gs):
            for base in ("uniform", "random"):
                if base == searcher or base not in gs:
                    continue
                parts.append(_versus(searcher, gs[searcher], base, gs[base]))
        rivals = [s for s in RIVALS if s in gs]
        if "ddpg" in gs and rivals:
            best = max(rivals, key=lambda s: gs[s]["test_top1_pruned"])
            parts.append("against the best rival, " + _versus("ddpg", gs["ddpg"], best, gs[best]))
        lines.append(f"- **{model}, flops={budget}** (test top-1 points before fine-tuning, mean over seeds): "
                     + "; ".join(parts) + ".")
    return lines


def _versus(a_name: str, a: Mapping[str, Any], b_name: str, b: Mapping[str, Any]) -> str:
    """``A vs B: +x before fine-tuning (beats | does **not** beat), +y after`` on test top-1 points."""
    d0 = 100 * (a["test_top1_pruned"] - b["test_top1_pruned"])
    text = f"{a_name} vs {b_name} {d0:+.2f} ({'beats' if d0 > 0 else 'does **not** beat'})"
    if a["test_top1_finetuned"] is not None and b["test_top1_finetuned"] is not None:
        text += f", after fine-tune {100 * (a['test_top1_finetuned'] - b['test_top1_finetuned']):+.2f}"
    return text


def results_lines(records: list[dict[str, Any]]) -> list[str]:
    """Mean ± sd over seeds per model, budget and strategy."""
    head = ("| model | FLOPs | strategy | n | test top-1 pruned (%) | after fine-tune (%) (n) | held-out top-1 of the "
            "best-reward policy (%) | MACs frac | search s | episodes (evals) |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|"]
    for g in groups(records):
        lines.append(
            f"| {g['model']} | {g['budget_flops']} | {g['strategy']} | {g['n']} | "
            f"{_pct(g['test_top1_pruned'], g['test_top1_pruned_std'], g['n'])} | "
            f"{_pct(g['test_top1_finetuned'], g['test_top1_finetuned_std'], g['n_ft'])} ({g['n_ft']}) | "
            f"{_pct(g['heldout_final'], g['heldout_final_std'], g['n'])} | {_num(g['macs_fraction'], '.3f')} | "
            f"{_num(g['search_wall_s'], '.0f')} | {_num(g['episodes'], '.0f')} ({_num(g['evaluations'], '.0f')}) |")
    return lines


def plot_efficiency(path: Path, records: list[dict[str, Any]], models: list[str], budgets: list[float]) -> Path:
    """Held-out top-1 of the best-so-far policy vs episodes: mean ± sd over seeds, one line per strategy."""
    fig, axes = _grid(models, budgets)
    cells = _cells(records)
    for i, model in enumerate(models):
        for j, budget in enumerate(budgets):
            ax = axes[i][j]
            for strategy in sorted(cells.get((model, budget), {}), key=_order):
                rows = cells[(model, budget)][strategy]
                color = COLORS.get(strategy, "k")
                episodes = sorted({p["episode"] for r in rows for p in r["heldout_curve"]})
                values = [[100 * p["heldout_top1"] for r in rows for p in r["heldout_curve"] if p["episode"] == e]
                          for e in episodes]
                mean = [statistics.fmean(v) for v in values]
                sd = [_sd(v) for v in values]
                if strategy in SEARCHERS:
                    ax.plot(episodes, mean, marker="o", ms=3, color=color, label=strategy)
                    ax.fill_between(episodes, [m - s for m, s in zip(mean, sd)], [m + s for m, s in zip(mean, sd)],
                                    color=color, alpha=0.15)
                else:  # one policy: a level line from the evaluations it spent
                    ax.axhline(mean[0], color=color, ls="--", lw=1, label=f"{strategy} ({rows[0]['evaluations']} evals)")
            ax.set_xlabel("episode")
            ax.set_ylabel("held-out val top-1 (%)")
            ax.set_title(f"{model}, flops={budget}: best-reward policy so far, re-scored on held-out images", fontsize=8)
            ax.legend(fontsize=7)
    return _save_figure(fig, path)


def _plottable(gs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Groups as :func:`benchmarks.report.plot_accuracy` draws them (a missing fine-tune drawn as 0)."""
    return [{**g, "test_top1_finetuned": g["test_top1_finetuned"] or 0.0} for g in gs]


def write_csv(path: Path, records: list[dict[str, Any]]) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for r in sorted(records, key=lambda r: (r["model"], -r["budget_flops"], _order(r["strategy"]), r["seed"])):
        row = dict(r, heldout_final=heldout_final(r))
        row["heldout_curve"] = json.dumps({p["episode"]: round(p["heldout_top1"], 4) for p in r["heldout_curve"]})
        row["kept_fraction"] = json.dumps({name: round(f, 4) for name, f in r["kept_fraction"]})
        if "finetuned_top1_by_seed" in r:
            row["finetuned_top1_by_seed"] = json.dumps({k: round(v, 4) for k, v in r["finetuned_top1_by_seed"].items()})
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return atomic_write_text(path, buf.getvalue())


def write_report(records: list[dict[str, Any]], references: Mapping[str, Mapping[str, Any]], *,
                 settings: Mapping[str, Any], mode: str, command: str, out_dir: Path, stem: str,
                 elapsed_s: float) -> list[Path]:
    """Write ``{stem}.md``, ``{stem}.csv`` and ``{stem}_{accuracy,policies,efficiency}.png`` into ``out_dir``."""
    import torch

    out_dir.mkdir(parents=True, exist_ok=True)
    models = list(dict.fromkeys(r["model"] for r in records))
    budgets = sorted({r["budget_flops"] for r in records}, reverse=True)
    written = [write_csv(out_dir / f"{stem}.csv", records)]
    if records:
        written += [plot_accuracy(out_dir / f"{stem}_accuracy.png", _plottable(groups(records)), models, budgets),
                    plot_policies(out_dir / f"{stem}_policies.png", records, models, budgets),
                    plot_efficiency(out_dir / f"{stem}_efficiency.png", records, models, budgets)]
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# Fashion-MNIST benchmark v2: ddpg against strong rivals ({mode})", "",
        f"- Command: `{command}`",
        f"- Date: {date}; wall time of this invocation {elapsed_s / 60:.1f} min (cached rows cost nothing).",
        f"- Machine: {platform.platform()}, {os.cpu_count()} CPUs; Python {platform.python_version()}, torch "
        f"{torch.__version__}, one torch thread per process, searches with {settings.get('workers')} Ray workers.",
        f"- Settings: `{json.dumps(dict(settings), sort_keys=True)}`", "",
        "## Reference models (unpruned)", "",
        "| model | test top-1 (%) | val top-1 (%) | MACs | params | recipe |", "|---|---|---|---|---|---|",
        *[f"| {n} | {_pct(r['test_top1'])} | {_pct(r['val_top1'])} | {r['macs']:,} | {r['params']:,} | {r['recipe']} |"
          for n, r in references.items()], "",
        "## Does the search pay?", "",
        *(verdicts(records) or ["- no rows yet."]), "",
        *_notes(out_dir / f"{stem}_notes.md"),
        "## Results", "",
        "Test top-1 on the 10,000 test images, right after pruning (with the search's reconstruction and BN "
        "recalibration) and after the same distilled fine-tune for every row (the unpruned model as teacher, "
        f"{settings.get('finetune_epochs')} epochs over {settings.get('finetune_samples') or 'all'} training images "
        "each; the epoch with the best validation top-1 is kept). Mean ± sd over seeds where n > 1; after fine-tune, "
        "over the fine-tunes (n): one per seeded row, and uniform's and sensitivity's one model fine-tuned once per "
        "seed. 'held-out': the "
        "policy with the best search reward, re-scored on validation images the reward never saw (before the final "
        "selection, which picks the returned policy among the 8 best by those same images).", "",
        *results_lines(records), "",
        f"![test top-1 per strategy]({stem}_accuracy.png)", "",
        "## Sample efficiency", "",
        "The best-reward policy after N episodes, re-scored on the held-out validation images, against N (one line "
        "per strategy, mean ± sd over seeds; uniform and sensitivity are one policy each). 'Reaches random's final "
        "best': the first checkpoint at which a run's held-out score is at least the mean over random search's seeds "
        "of its score at the last checkpoint; and, denser but biased upward, the first episode whose best search "
        "reward reaches random's mean final best reward.", "",
        *efficiency_lines(records), "",
        f"![held-out score of the best policy so far]({stem}_efficiency.png)", "",
        f"![kept fraction per unit, seed 0]({stem}_policies.png)", "",
        f"Per-seed rows: [{stem}.csv]({stem}.csv).", "",
    ]
    written.append(atomic_write_text(out_dir / f"{stem}.md", "\n".join(lines)))
    return written
