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
        measured = result.measured_latency
        also = (f"; measured side by side with the unpruned model: {measured['measured_ratio']:.4f}"
                if measured else "")
        lines.append(f"Latency predicted by the table: {seconds(o['original_latency'])} -> {seconds(m['latency'])} "
                     f"({m['latency'] / o['original_latency']:.4f}){also}.")
    use = result.history[result.episode]["budget_use"] if 0 <= result.episode < len(result.history) else {}
    measured = result.measured_latency
    held = (f" (latency by the table's prediction; measured: {measured['measured'] / result.latency_hold['limit']:.4f})"
            if measured and result.latency_hold else "")
    lines += ["", "Budget use of the chosen policy (cost / limit): " + ", ".join(f"{k} {v:.4f}" for k, v in use.items())
              + held, ""]
    return lines


def speed_lines(speeds: Sequence[Mapping[str, Any]], flops_ratio: float) -> list[str]:
    """One line per measured speedup (runtime, batch and what that batch is), or why it was not measured."""
    if not speeds:
        return []
    lines = ["## Measured speed", "",
             "Unpruned vs the saved pruned model, timed side by side in this run (interleaved rounds, each timing the "
             "fastest of a few samples; the two timings shown are the round with the median ratio; with one CPU "
             "thread the timings are the process's CPU time, the latency on an idle core), "
             f"for {1 / flops_ratio:.2f}x fewer FLOPs:", ""]
    for s in speeds:
        kind = f" ({s['kind']})" if s.get("kind") else ""
        where = f"{s.get('runtime', '?')}, batch {s.get('batch', 1)}{kind}"
        if "speedup" in s:
            clock = ", CPU time" if s.get("clock") == "cpu" else ""
            lines.append(f"- {where}, {s['device']}, {s['threads']} thread(s){clock}: {seconds(s['original_s'])} -> "
                         f"{seconds(s['pruned_s'])}, **{speedup(s['speedup'])}**")
        else:
            lines.append(f"- {where}: not measured ({s.get('error', 'unknown reason')})")
    return [*lines, ""]


def _where(info: Mapping[str, Any]) -> str:
    """``onnxruntime (cpu:..., 1 thread(s), CPU time)``: where and how a measurement was timed."""
    clock = ", CPU time" if info.get("clock") == "cpu" else ""
    return f"{info.get('runtime', '?')} ({info.get('device', '?')}, {info.get('threads', '?')} thread(s){clock})"


def _alignment_lines(result: SearchResult) -> list[str]:
    """How kept channel counts were rounded, and why (the probe's measurements)."""
    a = result.alignment
    if not a:
        return ["## Channel alignment", "", f"Kept channel counts are multiples of {result.round_to} (given).", ""]
    info = a.get("info", {})
    lines = ["## Channel alignment", "",
             f"`round_to auto` chose **{a['choice']}** (kept channel counts are multiples of it): {a['reason']}.", "",
             f"Measured in {_where(info)} at batch {info.get('batch', 1)}; efficiency = measured speedup x MAC "
             "fraction (1: speed follows the MACs). A larger multiple is chosen only when it beats the smaller ones by more than the tolerance.", "",
             "| multiple | " + " | ".join(f"speedup at {f:g} MACs" for f in a["fractions"]) + " | efficiency |",
             "|---|" + "---|" * (len(a["fractions"]) + 1)]
    for m in a["candidates"]:
        eff = a["efficiency"].get(str(m))
        speeds = " | ".join(f"{v:.2f}x ({r:.2f})" for v, r in zip(a["speedups"][str(m)], a["mac_fractions"][str(m)]))
        lines.append(f"| {m} | {speeds} | {'not eligible' if eff is None else f'{eff:.2f}'} |")
    return [*lines, "", "(In parentheses: the MAC fraction the rounded uniform policy reached.)", ""]


def _latency_lines(result: SearchResult) -> list[str]:
    """The measured check of a latency budget: predicted and measured latency of each candidate, side by side."""
    hold = result.latency_hold
    if not hold:
        return []
    info = hold.get("info", {})
    chosen = result.measured_latency
    lines = ["## Latency budget, measured", "",
             f"Budget {hold['budget']}: the best candidates were pruned and timed end to end in {_where(info)} at "
             f"batch {info.get('batch', 1)}, side by side with the unpruned model ({seconds(hold['original_s'])}); "
             "a candidate holds the budget when its measured latency is within 5% of it or below."]
    if hold["corrections"]:
        lines.append("The measurements disagreed with the table: the limit the clipping uses was divided by the "
                     "measured / predicted factor (" + ", ".join(f"{c:.3f}" for c in hold["corrections"]) + ") and "
                     "the best policies re-clipped, evaluated and measured again (phase `latency-fit` in the history "
                     "when no candidate held the budget, `latency-use` when the best one left more than a tenth of "
                     "it unused).")
    if chosen:
        lines.append(f"The chosen policy: predicted {chosen['predicted_ratio']:.3f}, measured "
                     f"{chosen['measured_ratio']:.3f} of the unpruned model's latency.")
    lines += ["", "| episode | round | predicted / unpruned | measured / unpruned | holds |", "|---|---|---|---|---|"]
    for m in hold["measured"]:
        mark = " (chosen)" if chosen is not None and m["episode"] == result.episode else ""
        lines.append(f"| {m['episode']}{mark} | {m['round']} | {m['predicted_ratio']:.3f} | {m['measured_ratio']:.3f} | "
                     f"{'yes' if m['holds'] else 'no'} |")
    return [*lines, ""]


def _front_lines(front: Sequence[Mapping[str, Any]]) -> list[str]:
    if not front:
        return []
    lines = ["## Front", "", "One model per point of the budget range (`front.md`, `front.csv`, `front.png`; models in "
             "`front/`); `model.pt` is the last (loosest) point.", "",
             "| budget | val top-1 | test top-1 | FLOPs ratio | predicted latency | measured latency | model |",
             "|---|---|---|---|---|---|---|"]
    for r in front:
        pred = "" if r.get("predicted_latency_ratio") is None else f"{r['predicted_latency_ratio']:.3f}"
        meas = "" if r.get("measured_latency_ratio") is None else f"{r['measured_latency_ratio']:.3f}"
        lines.append(f"| {r['budget']} | {pct(r['val_top1'])} | {pct(r.get('test_top1'))} | {r['flops_ratio']:.3f} | "
                     f"{pred} | {meas} | `{r['model']}` |")
    return [*lines, ""]


def _search_lines(result: SearchResult, wall_time: float | None) -> list[str]:
    history = result.history
    workers = sorted({r.get("worker", 0) for r in history})
    # With workers, evaluations overlap: the share is of the workers' time (wall time x workers).
    eval_share = sum(r["evaluate_time"] for r in history) / max(len(workers) * sum(r["wall_time"] for r in history), 1e-9)
    tail = history[-max(1, len(history) // 10):]
    state = " (interrupted)" if result.interrupted and not result.failure else ""
    refits = sum(1 for r in history if r.get("phase") == "latency-fit")
    extra = f" (and {refits} policies re-clipped to hold the measured latency)" if refits else ""
    lines = ["## Search", "", f"- episodes: {len(history) - refits}{state}{extra}"]
    if result.failure:
        lines.append(f"- stopped early by a failure: {result.failure}")
    lines.append(f"- result: episode {result.episode}, reward {result.reward:.4f} on the search's validation subset"
                 + (f", budget {result.budget}" if result.budget else ""))
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
    notes += [f"not a prunable unit: {name} ({reason})" for name, reason in result.graph.excluded]
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
    front: Sequence[Mapping[str, Any]] = (),
) -> Path:
    """Write ``report.md``.

    Args:
        result: The search's result.
        settings: The settings (printed as given).
        counted: Costs of the saved pruned model measured independently with FlopCounterMode.
        test: Test-split accuracies ``{"original": .., "pruned": ..}`` when data was given.
        wall_time: Seconds the whole run took.
        speeds: Measured speedups (:func:`adc.analysis.timers.measured_speedup`), or ``{"error": ...}`` entries.
        front: The rows of ``front.csv`` when the budget was a range.
    """
    kept = result.kept_vector()
    flops_ratio = cost_of_kept(result.graph, kept).flops / result.original["original_flops"]
    lines = ["# adc search report", "", *_settings_lines(settings), *_result_lines(result, counted, test),
             *speed_lines(speeds, flops_ratio), *_latency_lines(result), *_alignment_lines(result),
             *_front_lines(front), *_search_lines(result, wall_time), *_notes_lines(result),
             *_unit_lines(result.graph, kept)]
    return atomic_write_text(path, "\n".join(lines))
