"""Write the benchmark's results: a markdown page, a CSV (one row per run) and three plots.

The page holds the aggregated table (mean and spread over seeds), plain
statements of where ddpg wins and where it does not, the reference models'
training recipe and accuracy, the machine, the exact command and the date.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from adc.utils.files import atomic_write, atomic_write_text

CSV_COLUMNS = [
    "model", "budget_flops", "strategy", "seed", "reconstruction", "bn_recalibration", "criterion",
    "test_top1_unpruned", "test_top1_pruned", "test_top1_finetuned", "val_top1_best",
    "macs", "params", "macs_fraction", "params_fraction",
    "episodes", "evaluations", "search_wall_s", "episode_mean_s", "eval_share", "finetune_epochs", "finetune_s",
    "threads",
    "torch_b1_speedup", "torch_b64_speedup", "ort_b1_speedup", "ort_b64_speedup",
    "torch_b1_ms_unpruned", "torch_b1_ms_pruned", "torch_b64_ms_unpruned", "torch_b64_ms_pruned",
    "ort_b1_ms_unpruned", "ort_b1_ms_pruned", "ort_b64_ms_unpruned", "ort_b64_ms_pruned",
    "kept_fraction",
]
STRATEGY_ORDER = ["uniform", "sensitivity", "random", "cmaes", "tpe", "ddpg", "td3", "sac"]
VARIANT_ORDER = ["default", "no-reconstruct", "no-bn-recal"]
COLORS = {"uniform": "tab:gray", "sensitivity": "tab:olive", "random": "tab:blue", "ddpg": "tab:red",
          "td3": "tab:purple", "sac": "tab:brown", "cmaes": "tab:green", "tpe": "tab:orange"}


def _group_key(r: Mapping[str, Any]) -> tuple:
    return (r["model"], r["budget_flops"], r["strategy"], r["variant"])


def _sort_key(key: tuple) -> tuple:
    model, budget, strategy, variant = key
    s = STRATEGY_ORDER.index(strategy) if strategy in STRATEGY_ORDER else len(STRATEGY_ORDER)
    return (model, -budget, VARIANT_ORDER.index(variant), s)


def _mean(values: Iterable[float | None]) -> float | None:
    v = [x for x in values if x is not None]
    return statistics.fmean(v) if v else None


def _std(values: Iterable[float]) -> float:
    v = list(values)
    return statistics.stdev(v) if len(v) > 1 else 0.0


def aggregate(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (model, budget, strategy, variant): means and spreads over seeds."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[_group_key(r)].append(r)
    out = []
    for key in sorted(groups, key=_sort_key):
        rs = groups[key]
        g: dict[str, Any] = dict(zip(("model", "budget_flops", "strategy", "variant"), key))
        g["n"] = len(rs)
        for col in ("test_top1_pruned", "test_top1_finetuned", "val_top1_best"):
            g[col] = _mean(r[col] for r in rs)
            g[col + "_std"] = _std(r[col] for r in rs)
        for col in ("test_top1_unpruned", "macs_fraction", "params_fraction", "search_wall_s", "episodes",
                    "evaluations", "eval_share", "torch_b1_speedup", "torch_b64_speedup", "ort_b1_speedup", "ort_b64_speedup"):
            g[col] = _mean(r.get(col) for r in rs)
        out.append(g)
    return out


def _pct(x: float | None, std: float | None = None, n: int = 1) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.2f} ± {100 * std:.2f}" if n > 1 and std is not None else f"{100 * x:.2f}"


def _num(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def verdicts(groups: list[dict[str, Any]]) -> list[str]:
    """Plain statements, per model and budget, of how ddpg (default variant) compares."""
    lines = []
    by_setting: dict[tuple, dict[str, dict[str, Any]]] = defaultdict(dict)
    for g in groups:
        if g["variant"] == "default":
            by_setting[(g["model"], g["budget_flops"])][g["strategy"]] = g
    for (model, budget), gs in by_setting.items():
        if "ddpg" not in gs:
            continue
        d = gs["ddpg"]
        head = f"**{model}, flops={budget}**"
        parts = []
        for other in ("uniform", "random", "sensitivity", "td3"):
            if other not in gs:
                continue
            o = gs[other]
            for stage, col in (("after pruning", "test_top1_pruned"), ("after fine-tune", "test_top1_finetuned")):
                diff = 100 * (d[col] - o[col])
                if diff > 0:
                    parts.append(f"ddpg beats {other} {stage} by {diff:+.2f} points ({_pct(d[col])} vs {_pct(o[col])})")
                else:
                    parts.append(f"ddpg does **not** beat {other} {stage}: {_pct(d[col])} vs {_pct(o[col])} ({diff:+.2f})")
        rivals = [gs[k] for k in ("random", "sensitivity") if k in gs]
        if rivals:
            best = max(rivals, key=lambda g: g["test_top1_pruned"])
            ok = d["test_top1_pruned"] >= best["test_top1_pruned"]
            parts.append(("ddpg keeps at least as much test accuracy after pruning as the best of random and "
                          f"sensitivity ({best['strategy']})") if ok else
                         (f"ddpg does **not** reach the best of random and sensitivity after pruning "
                          f"({best['strategy']}: {_pct(best['test_top1_pruned'])} vs {_pct(d['test_top1_pruned'])})"))
        gap = 100 * (d["test_top1_unpruned"] - d["test_top1_finetuned"])
        parts.append(f"after the short fine-tune ddpg is {gap:.2f} points below the unpruned model "
                     + ("(within a point)" if gap <= 1.0 else "(**not** within a point)"))
        lines.append(f"- {head}: " + "; ".join(parts) + ".")
    return lines


def write_csv(path: Path, records: list[dict[str, Any]]) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for r in sorted(records, key=lambda r: (*_sort_key(_group_key(r)), r["seed"])):
        row = dict(r)
        row["kept_fraction"] = json.dumps({name: round(f, 4) for name, f in r["kept_fraction"]})
        for k, v in row.items():
            if isinstance(v, float):
                row[k] = f"{v:.6g}"
        writer.writerow(row)
    return atomic_write_text(path, buf.getvalue())


def _save_figure(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return path


def _grid(models: list[str], budgets: list[float], width: float = 6.0, height: float = 3.6):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(models), len(budgets), figsize=(width * len(budgets), height * len(models)), squeeze=False)
    return fig, axes


def plot_accuracy(path: Path, groups: list[dict[str, Any]], models: list[str], budgets: list[float]) -> Path:
    """Test top-1 after pruning and after fine-tune, per strategy (and variant), one panel per model and budget."""
    fig, axes = _grid(models, budgets)
    for i, model in enumerate(models):
        for j, budget in enumerate(budgets):
            ax = axes[i][j]
            gs = [g for g in groups if g["model"] == model and g["budget_flops"] == budget]
            labels = [g["strategy"] if g["variant"] == "default" else f"{g['strategy']}\n{g['variant']}" for g in gs]
            xs = range(len(gs))
            ax.bar([x - 0.2 for x in xs], [100 * g["test_top1_pruned"] for g in gs], 0.4,
                   yerr=[100 * g["test_top1_pruned_std"] for g in gs], label="after pruning",
                   color=[COLORS.get(g["strategy"], "k") for g in gs], alpha=0.55, capsize=3)
            ax.bar([x + 0.2 for x in xs], [100 * g["test_top1_finetuned"] for g in gs], 0.4,
                   yerr=[100 * g["test_top1_finetuned_std"] for g in gs], label="after fine-tune",
                   color=[COLORS.get(g["strategy"], "k") for g in gs], capsize=3)
            if gs:
                ax.axhline(100 * gs[0]["test_top1_unpruned"], color="k", ls="--", lw=1, label="unpruned")
                low = min(100 * min(g["test_top1_pruned"], g["test_top1_finetuned"]) for g in gs)
                ax.set_ylim(max(0, low - 5), 100 * gs[0]["test_top1_unpruned"] + 2)
            ax.set_xticks(list(xs), labels, fontsize=7)
            ax.set_ylabel("test top-1 (%)")
            ax.set_title(f"{model}, flops={budget} (light: after pruning, dark: after fine-tune)", fontsize=9)
    return _save_figure(fig, path)


def plot_policies(path: Path, records: list[dict[str, Any]], models: list[str], budgets: list[float]) -> Path:
    """Per-unit kept fraction of each strategy's policy (default variant, seed 0)."""
    fig, axes = _grid(models, budgets)
    for i, model in enumerate(models):
        for j, budget in enumerate(budgets):
            ax = axes[i][j]
            rs = [r for r in records if r["model"] == model and r["budget_flops"] == budget
                  and r["variant"] == "default" and r["seed"] == 0]
            for r in sorted(rs, key=lambda r: STRATEGY_ORDER.index(r["strategy"]) if r["strategy"] in STRATEGY_ORDER else 99):
                fr = [f for _, f in r["kept_fraction"]]
                ax.plot(range(len(fr)), fr, marker="o", ms=3, label=r["strategy"], color=COLORS.get(r["strategy"]))
            ax.set_ylim(0, 1.05)
            ax.set_xlabel("prunable unit (network order)")
            ax.set_ylabel("kept fraction of channels")
            ax.set_title(f"{model}, flops={budget}", fontsize=9)
            ax.legend(fontsize=7)
    return _save_figure(fig, path)


def plot_rewards(path: Path, records: list[dict[str, Any]], models: list[str], budgets: list[float]) -> Path:
    """Best reward so far (solid) and the mean of the last 20 episodes (dotted) vs episode, ddpg and random, every seed."""
    fig, axes = _grid(models, budgets)
    for i, model in enumerate(models):
        for j, budget in enumerate(budgets):
            ax = axes[i][j]
            for r in records:
                if (r["model"], r["budget_flops"], r["variant"]) != (model, budget, "default") or r["strategy"] not in ("ddpg", "random"):
                    continue
                rewards = [h[0] for h in r["history"]]
                best = [h[1] for h in r["history"]]
                recent = [statistics.fmean(rewards[max(0, k - 19):k + 1]) for k in range(len(rewards))]
                color = COLORS[r["strategy"]]
                ax.plot(best, color=color, lw=1.4, label=f"{r['strategy']} s{r['seed']} best")
                ax.plot(recent, color=color, lw=0.8, ls=":", label=f"{r['strategy']} s{r['seed']} last-20 mean")
            ax.set_xlabel("episode")
            ax.set_ylabel("reward")
            ax.set_title(f"{model}, flops={budget}", fontsize=9)
            ax.legend(fontsize=6, ncol=2)
    return _save_figure(fig, path)


def _table(groups: list[dict[str, Any]]) -> list[str]:
    head = ("| model | FLOPs budget | strategy | variant | n | test top-1 pruned (%) | after fine-tune (%) | "
            "val top-1 (%) | MACs frac | params frac | search s | episodes (evals) | eval share | "
            "speedup torch b1 / b64 | speedup ORT b1 / b64 |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for g in groups:
        lines.append(
            f"| {g['model']} | {g['budget_flops']} | {g['strategy']} | {g['variant']} | {g['n']} | "
            f"{_pct(g['test_top1_pruned'], g['test_top1_pruned_std'], g['n'])} | "
            f"{_pct(g['test_top1_finetuned'], g['test_top1_finetuned_std'], g['n'])} | "
            f"{_pct(g['val_top1_best'])} | {_num(g['macs_fraction'], '.3f')} | {_num(g['params_fraction'], '.3f')} | "
            f"{_num(g['search_wall_s'], '.0f')} | {_num(g['episodes'], '.0f')} ({_num(g['evaluations'], '.0f')}) | "
            f"{_num(g['eval_share'], '.2f')} | {_num(g['torch_b1_speedup'], '.2f')} / {_num(g['torch_b64_speedup'], '.2f')} | "
            f"{_num(g['ort_b1_speedup'], '.2f')} / {_num(g['ort_b64_speedup'], '.2f')} |")
    return lines


SIZING = """\
How the full run was sized (2 CPU cores, two hours). Measured on this 2-core
machine with one torch thread per process: one search episode (prune,
least-squares reconstruction, BN recalibration on 512 training images, reward
on 1,000 validation images) takes about 0.5-0.8 s on plain20 and resnet20,
85-95% of it in recalibration plus evaluation; a fine-tune pass over half the
training split (27,000 images) of a pruned model about 40-60 s. The full run
has 12 rows per model and budget (uniform, sensitivity, random x3, ddpg x3, and
ddpg and uniform with reconstruction off and with BN recalibration off), 48 in
all, 36 of which search. td3 was left out: it is not cheap here, and the issue
asks for it only if it is. The first full run used 100 episodes, and its ddpg
reward curves were still rising at the end; a follow-up on resnet20 at 50%
FLOPs showed ddpg gaining 2.5 points from 200 episodes where random search
gained 0.3. So: 200 episodes for every searching strategy (sensitivity spends
the same budget on its probes; uniform plays one): 36 x 200 x 0.7 s = 84 CPU
minutes. The fine-tune doubled to half an epoch (48 x 50 s = 40 CPU minutes),
and latency and test evaluations take about 10 more. Split over the two cores
by model (two processes, one thread each: `--model plain20` and `--model
resnet20`, then `--report-only`), that is about an hour of wall time; the
latency columns are therefore measured while the other process runs, but each
speedup is still unpruned vs pruned timed side by side in one process. Every
row gets the same fine-tune: one pass over a fixed 27,000-image subset of the
training split, SGD momentum 0.9, lr 0.01 cosine to 0, batch 64. Reward on
1,000 validation images and BN recalibration on 512 training images are the
search's defaults. The reference models (8 epochs each, cached outside git
under ~/.cache/adc) take another 15-30 min the first time. These choices were
made before this run's results were seen and are the same for every strategy;
quick and smoke modes only shrink them."""


def _notes(path: Path) -> list[str]:
    """The hand-written reading of a run (``{stem}_notes.md``, kept in git), placed after the verdicts."""
    if not path.is_file():
        return []
    return [path.read_text().rstrip(), ""]


def write_page(out_dir: Path, stem: str, text: str) -> Path:
    """Write ``{stem}.md`` -- ``text``, then the hand-written reading ``{stem}_notes.md`` when present -- and print it."""
    page = "\n".join([text.rstrip(), "", *_notes(out_dir / f"{stem}_notes.md")]).rstrip() + "\n"
    written = atomic_write_text(out_dir / f"{stem}.md", page)
    print(page)
    print(f"wrote {written}")
    return written


def write_report(
    records: list[dict[str, Any]],
    references: Mapping[str, Mapping[str, Any]],
    *,
    settings: Mapping[str, Any],
    mode: str,
    command: str,
    out_dir: Path,
    stem: str,
    threads: int,
    elapsed_s: float,
) -> list[Path]:
    """Write ``{stem}.md``, ``{stem}.csv`` and ``{stem}_{accuracy,policies,rewards}.png`` into ``out_dir``."""
    import torch

    out_dir.mkdir(parents=True, exist_ok=True)
    groups = aggregate(records)
    models = list(dict.fromkeys(r["model"] for r in records))
    budgets = sorted({r["budget_flops"] for r in records}, reverse=True)
    written = [write_csv(out_dir / f"{stem}.csv", records)]
    if records:
        written += [plot_accuracy(out_dir / f"{stem}_accuracy.png", groups, models, budgets),
                    plot_policies(out_dir / f"{stem}_policies.png", records, models, budgets),
                    plot_rewards(out_dir / f"{stem}_rewards.png", records, models, budgets)]
    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = "not installed"
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# Fashion-MNIST benchmark ({mode})",
        "",
        f"- Command: `{command}`",
        f"- Date: {date}; wall time of this invocation {elapsed_s / 60:.1f} min (cached rows cost nothing).",
        f"- Machine: {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
        f"Python {platform.python_version()}, torch {torch.__version__} with torch.set_num_threads({threads}), "
        f"onnxruntime {ort_version} (intra-op threads {threads}).",
        f"- Settings: `{json.dumps(dict(settings), sort_keys=True)}`",
        "",
        "## Reference models (unpruned)",
        "",
        "| model | test top-1 (%) | val top-1 (%) | MACs | params | training time (s) | recipe |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, ref in references.items():
        lines.append(f"| {name} | {_pct(ref['test_top1'])} | {_pct(ref['val_top1'])} | {ref['macs']:,} | {ref['params']:,} | "
                     f"{_num(ref.get('train_seconds'), '.0f')} | {ref['recipe']} |")
    lines += [
        "",
        "## Does ddpg win?",
        "",
        *(verdicts(groups) or ["- no ddpg rows yet."]),
        "",
        *_notes(out_dir / f"{stem}_notes.md"),
        "## Results",
        "",
        "Test top-1 is on the 10,000 Fashion-MNIST test images; the search's reward saw only its validation subset "
        "(held out of the training split the reference model was trained on). 'after fine-tune' is the last epoch of "
        "the same short fine-tune for every row. Mean ± standard deviation over seeds where n > 1. MACs / params "
        "fractions are of the unpruned model, counted on the really pruned model. 'episodes (evals)': episodes "
        "recorded (uniform plays one) and pruned-network evaluations spent (sensitivity's probes included). "
        "'eval share': share of an episode's time spent in BN recalibration plus validation. Speedup: median latency "
        "of the unpruned model over the pruned one, both measured in the same run after warm-up "
        "(batch 1: 50 runs, batch 64: 15 runs).",
        "",
        *_table(groups),
        "",
        f"Per-seed rows: [{stem}.csv]({stem}.csv).",
        "",
        f"![accuracy per strategy]({stem}_accuracy.png)",
        "",
        f"![kept fraction per unit]({stem}_policies.png)",
        "",
        f"![best reward vs episode]({stem}_rewards.png)",
        "",
        "## Sizing",
        "",
        SIZING,
        "",
    ]
    written.append(atomic_write_text(out_dir / f"{stem}.md", "\n".join(lines)))
    return written
