"""The run's plots: the kept fraction per unit (the AMC paper's policy figure), the reward per episode, the front."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from adc.analysis.graph import ModelGraph
from adc.utils.files import atomic_write


def _plot(path: Path, draw: Any) -> Path:
    # A Figure without pyplot: no global backend is chosen or changed for the user's process.
    fig = Figure(figsize=(9, 4))
    ax = fig.subplots()
    draw(ax)
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))


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
        colors = {"uniform": "black", "warmup": "tab:gray", "explore": "tab:blue", "exploit": "tab:green", "refine": "tab:orange",
                  "latency-fit": "tab:purple", "latency-use": "tab:brown"}
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


def plot_front(path: Path, rows: list[dict[str, Any]], *, key: str) -> Path:
    """Accuracy against cost, one marker per point of the front, labelled with its budget.

    The cost axis is the measured latency ratio where it was measured, else the
    ratio of the range's own metric (``key``, e.g. ``flops``).
    """

    def draw(ax: Any) -> None:
        measured = all(r.get("measured_latency_ratio") is not None for r in rows)
        xs = [r["measured_latency_ratio"] if measured else r.get(f"{key}_ratio", r.get("flops_ratio")) for r in rows]
        for field, label, style in (("val_top1", "validation top-1", "o-"), ("test_top1", "test top-1", "s--")):
            ys = [r.get(field) for r in rows]
            if all(y is not None for y in ys):
                ax.plot(xs, [100 * y for y in ys], style, label=label)
        for x, r in zip(xs, rows):
            ax.annotate(str(r["budget"]), (x, 100 * r["val_top1"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel("measured latency / unpruned" if measured else f"{key} / unpruned")
        ax.set_ylabel("top-1 (%)")
        ax.set_title("Accuracy-cost front")
        ax.legend(loc="lower right")

    return _plot(path, draw)
