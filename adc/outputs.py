"""The files a search leaves in its output folder.

``policy.json`` (the best policy), ``model.pt`` (the pruned model, :func:`adc.save`
format), ``history.csv`` (one row per episode), ``report.md`` (per-unit table,
accuracy and costs before/after), ``policy.png`` (kept fraction per unit, as in
the AMC paper's figures), ``reward.png`` (reward and best reward per episode)
and ``config.toml`` (every setting, so ``adc search --config`` reruns it).
Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adc.errors import AdcError
from adc.graph import ModelGraph
from adc.profile import human
from adc.serialization import atomic_write, atomic_write_text

CONFIG_FILE = "config.toml"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def write_config(path: Path, settings: Mapping[str, Any]) -> Path:
    """Write flat settings (None values are left out) as TOML."""
    lines = ["# adc search settings; rerun with: adc search --config THIS_FILE"]
    for key, value in settings.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            value = [f"{k}={v}" for k, v in value.items()]
        lines.append(f"{key} = {_toml_value(value)}")
    return atomic_write_text(path, "\n".join(lines) + "\n")


def read_config(path: str | Path) -> dict[str, Any]:
    """Read a config written by :func:`write_config`.

    Raises:
        AdcError: if the file is missing or is not valid TOML.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CONFIG_FILE
    if not path.is_file():
        raise AdcError(f"config file {str(path)!r} does not exist")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise AdcError(f"config file {str(path)!r} is not valid TOML: {exc}") from exc


def write_history_csv(path: Path, history: list[dict[str, Any]]) -> Path:
    """One row per episode: reward, metrics, costs, budget use, timing, policy (JSON)."""
    metric_keys = sorted({k for r in history for k in r["metrics"]})
    budget_keys = sorted({k for r in history for k in r["budget_use"]})
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["episode", "phase", "reward", "best_reward", *metric_keys, *[f"budget_use_{k}" for k in budget_keys],
                     "wall_time", "evaluate_time", "prune_time", "sigma", "policy"])
    for r in history:
        writer.writerow([r["episode"], r["phase"], r["reward"], r.get("best_reward", ""),
                         *[r["metrics"].get(k, "") for k in metric_keys],
                         *[r["budget_use"].get(k, "") for k in budget_keys],
                         f"{r['wall_time']:.4f}", f"{r['evaluate_time']:.4f}", f"{r['prune_time']:.4f}",
                         "" if r.get("sigma") is None else r["sigma"], json.dumps(r["policy"])])
    return atomic_write_text(path, buf.getvalue())


def _plot(path: Path, draw: Any) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    try:
        draw(ax)
        fig.tight_layout()
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    finally:
        plt.close(fig)


def plot_policy(path: Path, graph: ModelGraph, kept: Mapping[str, int]) -> Path:
    """Kept fraction per unit, in execution order (the AMC paper's policy figure)."""

    def draw(ax: Any) -> None:
        fractions = [kept.get(u.name, u.channels) / u.channels for u in graph.units]
        ax.bar(range(len(fractions)), fractions, color="tab:blue")
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("unit (execution order)")
        ax.set_ylabel("kept fraction of channels")
        ax.set_title("Best policy")

    return _plot(path, draw)


def plot_rewards(path: Path, history: list[dict[str, Any]]) -> Path:
    """Reward of each episode and the best so far."""

    def draw(ax: Any) -> None:
        episodes = [r["episode"] for r in history]
        rewards = [r["reward"] for r in history]
        best = [max(rewards[: i + 1]) for i in range(len(rewards))]
        colors = {"uniform": "black", "warmup": "tab:gray", "explore": "tab:blue", "exploit": "tab:green", "refine": "tab:orange"}
        for phase, color in colors.items():
            xs = [e for e, r in zip(episodes, history) if r["phase"] == phase]
            ys = [v for v, r in zip(rewards, history) if r["phase"] == phase]
            if xs:
                ax.scatter(xs, ys, s=8, color=color, label=phase)
        ax.plot(episodes, best, color="tab:red", label="best so far")
        ax.set_xlabel("episode")
        ax.set_ylabel("reward")
        ax.legend(loc="lower right")

    return _plot(path, draw)


def _pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}%"


def _speed_lines(speed: Mapping[str, Any] | None, o: Mapping[str, Any], m: Mapping[str, Any], flops_ratio: float) -> list[str]:
    """Measured latency speedup next to the FLOPs reduction, and the modelled energy / predicted latency."""
    lines = []
    if speed and "speedup" in speed:
        lines.append(
            f"Measured latency at batch 1 ({speed['runtime']} on {speed['device']}, {speed['threads']} threads, median of a few "
            f"repeats): {1e3 * speed['original_s']:.3f} ms -> {1e3 * speed['pruned_s']:.3f} ms, "
            f"**{speed['speedup']:.2f}x faster**, for {1 / flops_ratio:.2f}x fewer FLOPs.")
    elif speed:
        lines.append(f"Measured latency: not measured ({speed.get('error', 'unknown reason')}).")
    if "energy" in m and "original_energy" in o:
        lines.append(f"Modelled energy per sample (adc.energy): {1e3 * o['original_energy']:.4g} mJ -> "
                     f"{1e3 * m['energy']:.4g} mJ ({m['energy'] / o['original_energy']:.4f}).")
    if "latency" in m and "original_latency" in o:
        lines.append(f"Latency predicted by the table: {1e3 * o['original_latency']:.3f} ms -> {1e3 * m['latency']:.3f} ms "
                     f"({m['latency'] / o['original_latency']:.4f}).")
    return [*lines, ""] if lines else []


def _selection_lines(selection: list[dict[str, Any]]) -> list[str]:
    if not selection:
        return []
    top = max(selection, key=lambda c: c["reward"])
    chosen = selection[0]
    return [
        f"- final selection: the {len(selection)} best distinct policies re-scored on held-out validation images; "
        f"episode {chosen['episode']} scored best there ({chosen['holdout_reward']:.4f}, top-1 {_pct(chosen['holdout_top1'])}). "
        f"The highest search reward, episode {top['episode']} ({top['reward']:.4f}), scored {top['holdout_reward']:.4f} there."
    ]


def write_report(
    path: Path,
    *,
    graph: ModelGraph,
    result: Any,
    settings: Mapping[str, Any],
    counted: Mapping[str, float],
    test: Mapping[str, float] | None = None,
    wall_time: float | None = None,
    speed: Mapping[str, Any] | None = None,
) -> Path:
    """``report.md``: what was searched, the best policy per unit, accuracy and costs before/after.

    Args:
        graph: The unpruned model's graph.
        result: The :class:`~adc.search.SearchResult`.
        settings: The search settings (printed as given).
        counted: Costs of the saved pruned model measured independently with FlopCounterMode.
        test: Test-split accuracies ``{"original": .., "pruned": ..}`` when data was given.
        wall_time: Seconds the whole search took.
        speed: Measured latency of the unpruned and the saved pruned model
            (:func:`adc.latency.measured_speedup`), or ``{"error": ...}``.
    """
    from adc.cost import cost_of_kept, layer_costs

    o, m = result.original, result.metrics
    history = result.history
    kept_vec = [result.kept.get(u.name, u.channels) for u in graph.units]
    import numpy as np

    kept_arr = np.array(kept_vec, dtype=float)
    macs_after, _ = layer_costs(graph, kept_arr)
    macs_before, _ = layer_costs(graph, graph.channels.copy())
    layer_idx = {lc.name: i for i, lc in enumerate(graph.layers)}
    after = cost_of_kept(graph, kept_arr)
    eval_share = sum(r["evaluate_time"] for r in history) / max(sum(r["wall_time"] for r in history), 1e-9)
    tail = history[-max(1, len(history) // 10):]
    lines = [
        "# adc search report",
        "",
        "## Settings",
        "",
        *[f"- {k}: `{v}`" for k, v in settings.items() if v is not None],
        "",
        "## Result",
        "",
        "| | unpruned | pruned | ratio |",
        "|---|---|---|---|",
        f"| validation top-1 | {_pct(o['top1'])} | {_pct(m['top1'])} | |",
    ]
    if test:
        lines.append(f"| test top-1 (reported only) | {_pct(test.get('original'))} | {_pct(test.get('pruned'))} | |")
    lines += [
        f"| MACs | {human(o['original_macs'])} | {human(after.macs)} | {after.macs / o['original_macs']:.4f} |",
        f"| FLOPs | {human(o['original_flops'])} | {human(after.flops)} | {after.flops / o['original_flops']:.4f} |",
        f"| params | {human(o['original_params'])} | {human(after.params)} | {after.params / o['original_params']:.4f} |",
        "",
        f"Saved model counted independently with FlopCounterMode: {human(counted['flops'])} FLOPs, "
        f"{human(counted['params'])} params.",
        "",
        *_speed_lines(speed, o, m, after.flops / o["original_flops"]),
        "",
        "Budget use of the best policy (cost / limit): "
        + ", ".join(f"{k} {v:.4f}" for k, v in history[result.episode]["budget_use"].items()),
        "",
        "## Search",
        "",
        f"- episodes: {len(history)}" + (" (interrupted)" if result.interrupted else ""),
        f"- result: episode {result.episode}, reward {result.reward:.4f} on the search's validation subset",
        *_selection_lines(result.selection),
        f"- mean reward of the last {len(tail)} episodes: {sum(r['reward'] for r in tail) / len(tail):.4f}",
        f"- share of episode time spent evaluating (BN recalibration + validation): {100 * eval_share:.1f}%",
    ]
    if wall_time is not None:
        lines.append(f"- wall time: {wall_time:.1f} s")
    lines += [
        "",
        "## Best policy per unit",
        "",
        "| # | unit | kind | channels | kept | sparsity | MACs before | MACs after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for u, k in zip(graph.units, kept_vec):
        i = layer_idx.get(u.name)
        before = human(macs_before[i]) if i is not None else ""
        aft = human(macs_after[i]) if i is not None else ""
        lines.append(f"| {u.index} | {u.name} | {u.kind} | {u.channels} | {k} | {1 - k / u.channels:.3f} | {before} | {aft} |")
    lines += ["", "MACs are those of the unit's root layer. Plots: `policy.png`, `reward.png`.", ""]
    return atomic_write_text(path, "\n".join(lines))
