"""``report.md``: what was searched, what was found, and what the saved model measures.

Every figure in it is of the model the run hands back: costs come from the
kept channels and are checked against the saved model counted with
``FlopCounterMode``; accuracies are the validation images the reward used
(and the test split, reported only); speedups are measured side by side in
the same process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adc.analysis.cost import cost_of_kept
from adc.analysis.graph import ModelGraph
from adc.engine.result import SearchResult
from adc.utils.files import atomic_write_text
from adc.utils.formatting import energy, human, pct, seconds, speedup


def _settings_lines(settings: Mapping[str, Any]) -> list[str]:
    return ["## Settings", "", *[f"- {k}: `{v}`" for k, v in settings.items() if v is not None], ""]


def _result_lines(result: SearchResult, counted: Mapping[str, float], test: Mapping[str, float] | None) -> list[str]:
    graph, o, m = result.graph, result.original, result.metrics
    after = cost_of_kept(graph, result.kept_vector())
    lines = ["## Result", "", "| | unpruned | pruned | ratio |", "|---|---|---|---|",
             f"| validation top-1 | {pct(o['top1'])} | {pct(m['top1'])} | |"]
    if test:
        lines.append(f"| test top-1 (reported only) | {pct(test.get('original'))} | {pct(test.get('pruned'))} | |")
    lines += [
        f"| MACs | {human(o['original_macs'])} | {human(after.macs)} | {after.macs / o['original_macs']:.4f} |",
        f"| FLOPs | {human(o['original_flops'])} | {human(after.flops)} | {after.flops / o['original_flops']:.4f} |",
        f"| params | {human(o['original_params'])} | {human(after.params)} | {after.params / o['original_params']:.4f} |",
        "",
        f"Saved model counted independently with FlopCounterMode: {human(counted['flops'])} FLOPs, "
        f"{human(counted['params'])} params (equal to the analysis: checked).",
        "",
    ]
    if "energy" in m and "original_energy" in o:
        lines.append(f"Modelled energy per sample (adc.analysis.energy): {energy(o['original_energy'])} -> "
                     f"{energy(m['energy'])} ({m['energy'] / o['original_energy']:.4f}).")
    if "latency" in m and "original_latency" in o:
        lines.append(f"Latency predicted by the table: {seconds(o['original_latency'])} -> {seconds(m['latency'])} "
                     f"({m['latency'] / o['original_latency']:.4f}).")
    use = result.history[result.episode]["budget_use"] if 0 <= result.episode < len(result.history) else {}
    lines += ["", "Budget use of the chosen policy (cost / limit): " + ", ".join(f"{k} {v:.4f}" for k, v in use.items()), ""]
    return lines


def speed_lines(speeds: Sequence[Mapping[str, Any]], flops_ratio: float) -> list[str]:
    """One line per measured speedup (runtime, batch), or why it was not measured."""
    if not speeds:
        return []
    lines = ["Measured latency, unpruned vs the saved pruned model, timed side by side (median of a few repeats):", ""]
    for s in speeds:
        where = f"{s.get('runtime', '?')}, batch {s.get('batch', 1)}"
        if "speedup" in s:
            lines.append(f"- {where} ({s['device']}, {s['threads']} threads): {seconds(s['original_s'])} -> "
                         f"{seconds(s['pruned_s'])}, **{speedup(s['speedup'])}**, for {1 / flops_ratio:.2f}x fewer FLOPs")
        else:
            lines.append(f"- {where}: not measured ({s.get('error', 'unknown reason')})")
    return [*lines, ""]


def _search_lines(result: SearchResult, wall_time: float | None) -> list[str]:
    history = result.history
    workers = sorted({r.get("worker", 0) for r in history})
    # With workers, evaluations overlap: the share is of the workers' time (wall time x workers).
    eval_share = sum(r["evaluate_time"] for r in history) / max(len(workers) * sum(r["wall_time"] for r in history), 1e-9)
    tail = history[-max(1, len(history) // 10):]
    state = " (interrupted)" if result.interrupted and not result.failure else ""
    lines = ["## Search", "", f"- episodes: {len(history)}{state}"]
    if result.failure:
        lines.append(f"- stopped early by a failure: {result.failure}")
    lines.append(f"- result: episode {result.episode}, reward {result.reward:.4f} on the search's validation subset")
    if result.selection:
        top = max(result.selection, key=lambda c: c["reward"])
        chosen = result.selection[0]
        lines.append(
            f"- final selection: the {len(result.selection)} best distinct policies re-scored on held-out validation "
            f"images; episode {chosen['episode']} scored best there ({chosen['holdout_reward']:.4f}, top-1 "
            f"{pct(chosen['holdout_top1'])}). The highest search reward, episode {top['episode']} ({top['reward']:.4f}), "
            f"scored {top['holdout_reward']:.4f} there.")
    cal = result.calibration
    if cal:
        lines.append(f"- calibration: {cal.get('bn_images', 0)} images for batch-norm recalibration, "
                     f"{cal.get('calibration_images', 0)} for the {cal.get('criterion', '?')!r} criterion and "
                     f"reconstruction (reconstruction {'on' if cal.get('reconstruct') else 'off'}), from "
                     f"{cal.get('source', '?')}")
    if len(workers) > 1:
        lines.append(f"- workers: {len(workers)} (the history's `worker` column says which evaluated each episode)")
    lines += [f"- mean reward of the last {len(tail)} episodes: {sum(r['reward'] for r in tail) / len(tail):.4f}",
              f"- share of episode time spent evaluating (BN recalibration + validation): {100 * eval_share:.1f}%"]
    if wall_time is not None:
        lines.append(f"- wall time: {wall_time:.1f} s")
    return [*lines, ""]


def _notes_lines(result: SearchResult) -> list[str]:
    notes = list(result.notes)
    notes += [f"not a prunable unit: {name} ({reason})" for name, reason in getattr(result.graph, "excluded", [])]
    return ["## Notes", "", *[f"- {n}" for n in notes], ""] if notes else []


def _unit_lines(graph: ModelGraph, kept: np.ndarray) -> list[str]:
    macs_after, _ = graph.layer_costs(kept)
    macs_before, _ = graph.layer_costs(graph.channels.copy())
    layer_idx = {lc.name: i for i, lc in enumerate(graph.layers)}
    lines = ["## Chosen policy per unit", "",
             "| # | unit | kind | channels | kept | sparsity | MACs before | MACs after |",
             "|---|---|---|---|---|---|---|---|"]
    for u, k in zip(graph.units, kept):
        i = layer_idx.get(u.name)
        before = human(macs_before[i]) if i is not None else ""
        aft = human(macs_after[i]) if i is not None else ""
        lines.append(f"| {u.index} | {u.name} | {u.kind} | {u.channels} | {int(k)} | {1 - k / u.channels:.3f} | "
                     f"{before} | {aft} |")
    return [*lines, "", "MACs are those of the unit's root layer. Plots: `policy.png`, `reward.png`.", ""]


def write_report(
    path: Path,
    *,
    result: SearchResult,
    settings: Mapping[str, Any],
    counted: Mapping[str, float],
    test: Mapping[str, float] | None = None,
    wall_time: float | None = None,
    speeds: Sequence[Mapping[str, Any]] = (),
) -> Path:
    """Write ``report.md``.

    Args:
        result: The search's result.
        settings: The settings (printed as given).
        counted: Costs of the saved pruned model measured independently with FlopCounterMode.
        test: Test-split accuracies ``{"original": .., "pruned": ..}`` when data was given.
        wall_time: Seconds the whole run took.
        speeds: Measured speedups (:func:`adc.analysis.timers.measured_speedup`), or ``{"error": ...}`` entries.
    """
    kept = result.kept_vector()
    flops_ratio = cost_of_kept(result.graph, kept).flops / result.original["original_flops"]
    lines = ["# adc search report", "", *_settings_lines(settings), *_result_lines(result, counted, test),
             *speed_lines(speeds, flops_ratio), *_search_lines(result, wall_time), *_notes_lines(result),
             *_unit_lines(result.graph, kept)]
    return atomic_write_text(path, "\n".join(lines))
