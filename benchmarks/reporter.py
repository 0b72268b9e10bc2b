"""Write a suite's page from its rows: one table per cell, paired comparisons with the baseline, goals, a CSV.

Every figure on the page is read from the cached rows of a run
(:class:`benchmarks.harness.Runner`); nothing is typed in. Where the
hand-written reading ``benchmarks/results/<suite>_notes.md`` exists it is
included after the measured part; rebuilding the page never touches it.
"""

from __future__ import annotations

import csv
import io
import math
import os
import platform
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.harness import RESULTS_DIR, Suite



@dataclass(frozen=True)
class Column:
    """A field of the rows shown in the tables; ``compared`` ones are also set against the baseline, seed by seed.

    Attributes:
        key: The row field.
        label: The column's head.
        scale: Shown as ``scale * value`` (100: top-1 in %).
        digits: Decimals shown.
        compared: Paired with the baseline (a verdict per cell).
        tie: A paired mean difference smaller than this (in shown units), or than twice its standard error, ties.
        unit: The unit a verdict states a difference in.
    """

    key: str
    label: str
    scale: float = 1.0
    digits: int = 3
    compared: bool = False
    tie: float = 0.0
    unit: str = ""


COLUMNS = (
    Column("test_top1_pruned", "test top-1 pruned", 100, 2, True, 0.1, "points"),
    Column("test_top1_finetuned", "fine-tuned", 100, 2, True, 0.1, "points"),
    Column("test_top1_int8", "int8 top-1", 100, 2, True, 0.1, "points"),
    Column("test_top1_auto", "auto top-1", 100, 2, True, 0.1, "points"),
    Column("test_top1_unpruned_int8", "unpruned int8 top-1", 100, 2),
    Column("gap_closed", "gap closed", 1, 3, True, 0.005, "of the gap"),
    Column("gap_closed_at_100", "at episode 100", 1, 3, True, 0.005, "of the gap"),
    Column("flops_ratio", "FLOPs"),
    Column("params_ratio", "params"),
    Column("predicted_latency_ratio", "predicted latency"),
    Column("torch_speedup", "torch speedup", digits=2),
    Column("onnxruntime_speedup", "onnxruntime speedup", digits=2),
    Column("ort_fp32_speedup", "ORT fp32 speedup", digits=2),
    Column("ort_int8_speedup", "ORT int8 speedup", digits=2),
    Column("ort_auto_speedup", "ORT auto speedup", digits=2),
    Column("ort_unpruned_int8_speedup", "ORT unpruned int8 speedup", digits=2),
    Column("ort_fp32_size_ratio", "fp32 size"),
    Column("ort_int8_size_ratio", "int8 size"),
    Column("ort_auto_size_ratio", "auto size"),
    Column("search_s", "search s", digits=1),
)
"""Every column a page can show, in order; a page shows those its rows have."""


def _mean_sd(values: list[float], column: Column) -> str:
    if not values:
        return "—"
    mean = column.scale * statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.{column.digits}f}"
    return f"{mean:.{column.digits}f} ± {column.scale * statistics.stdev(values):.{column.digits}f}"


def _values(rows: Iterable[dict[str, Any]], key: str) -> list[float]:
    return [r[key] for r in rows if r.get(key) is not None]


def shown(records: list[dict[str, Any]]) -> list[Column]:
    """The columns some row has."""
    return [c for c in COLUMNS if any(r.get(c.key) is not None for r in records)]


def paired(rows: list[dict[str, Any]], base: list[dict[str, Any]], key: str) -> tuple[float, float, int, int] | None:
    """Mean and standard error of ``key`` minus the baseline's, matching seeds (a baseline run once matches
    every seed); with the wins and the pairs. None without a pair."""
    by_seed = {r["seed"]: r[key] for r in base if r.get(key) is not None}
    diffs = []
    for r in rows:
        other = by_seed.get(r["seed"], next(iter(by_seed.values())) if len(by_seed) == 1 else None)
        if r.get(key) is not None and other is not None:
            diffs.append(r[key] - other)
    if not diffs:
        return None
    se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else float("nan")
    return statistics.fmean(diffs), se, sum(d > 0 for d in diffs), len(diffs)


def verdict(name: str, baseline: str, diff: tuple[float, float, int, int], column: Column) -> str:
    """One plain sentence: wins, loses or ties, by how much, on how many seeds."""
    mean, se, wins, n = diff
    shown_mean = column.scale * mean
    noise = 2 * column.scale * se if not math.isnan(se) else 0.0
    if abs(shown_mean) < max(column.tie, noise):
        word = "ties"
    else:
        word = "beats" if shown_mean > 0 else "loses to"
    spread = "" if math.isnan(se) else f" ± {column.scale * se:.{column.digits}f}"
    return (f"{name} {word} {baseline} on {column.label}: {shown_mean:+.{column.digits}f}{spread} {column.unit}, "
            f"ahead on {wins} of {n} seed(s)")


def cell_table(suite: Suite, rows: list[dict[str, Any]], columns: list[Column]) -> list[str]:
    """The cell's variants, one line each."""
    first = next((c for c in columns if c.compared), None)
    head = ["variant", "n", *[c.label for c in columns]]
    if first is not None:
        head.insert(3, f"vs {suite.baseline}")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    base = [r for r in rows if r["variant"] == suite.baseline and "error" not in r]
    for variant in suite.variants:
        mine = [r for r in rows if r["variant"] == variant.name]
        if not mine:
            continue
        ok = [r for r in mine if "error" not in r]
        if not ok:
            lines.append(f"| {variant.name} | {len(mine)} | refused: {mine[0]['error']} |" + " |" * (len(head) - 3))
            continue
        cells = [variant.name, str(len(ok)), *[_mean_sd(_values(ok, c.key), c) for c in columns]]
        if first is not None:
            diff = paired(ok, base, first.key) if variant.name != suite.baseline else None
            cells.insert(3, "—" if diff is None else
                         f"{first.scale * diff[0]:+.{first.digits}f} ({diff[2]}/{diff[3]})")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_page(suite: Suite, records: list[dict[str, Any]], *, command: str, elapsed_s: float,
               out_dir: Path = RESULTS_DIR) -> list[Path]:
    """Write ``<suite>.md`` and ``<suite>.csv`` into ``out_dir``; returns their paths."""
    import torch

    out_dir.mkdir(parents=True, exist_ok=True)
    s = suite.settings
    expected = len(suite.rows())
    lines = [f"# {suite.name}", "", suite.question, "",
             f"{len(records)} of {expected} rows measured"
             + ("" if len(records) == expected else " (the page is partial: the other rows have not run)") + ".", "",
             "## Verdicts", ""]
    verdicts = []
    columns = shown(records)
    for cell in suite.cells:
        rows = [r for r in records if r["model"] == cell.model and r["budget"] == cell.budget]
        base = [r for r in rows if r["variant"] == suite.baseline and "error" not in r]
        for variant in suite.variants:
            if variant.name == suite.baseline:
                continue
            mine = [r for r in rows if r["variant"] == variant.name and "error" not in r]
            for column in (c for c in columns if c.compared):
                diff = paired(mine, base, column.key)
                if diff is not None:
                    verdicts.append(f"- {cell.label}: " + verdict(variant.name, suite.baseline, diff, column))
    lines += verdicts or ["- no paired accuracy to compare (speed-only rows, or the baseline has not run)"]
    if suite.goals:
        lines += ["", "## Goals", ""]
        for goal in suite.goals:
            results = [(r, goal.check(r)) for r in records if "error" not in r]
            judged = [(r, ok) for r, ok in results if ok is not None]
            missed = [f"{r['model']} @ {r['budget']} {r['variant']}" for r, ok in judged if not ok]
            lines.append(f"- {goal.text}: met on {len(judged) - len(missed)} of {len(judged)} rows"
                         + (f"; missed on {', '.join(missed)}" if missed else ""))
    lines += ["", "## Results", "",
              "Mean ± standard deviation over seeds; test top-1 in %; *vs* the baseline: the paired mean difference "
              "of the first compared column and the seeds ahead; FLOPs and params: the fraction of the unpruned "
              "model's, counted on the model handed back; speedups: measured beside the unpruned model at batch 1, "
              "one thread; ORT speedups and sizes: the ONNX graph of the model handed back (fp32, int8 everywhere, "
              "int8 where measured faster: auto) against the unpruned fp32 graph, timed side by side under "
              "onnxruntime, top-1 of those files under onnxruntime; gap closed: the share of the uniform-to-optimum "
              "gap (synthetic cells).", ""]
    for cell in suite.cells:
        rows = [r for r in records if r["model"] == cell.model and r["budget"] == cell.budget]
        if not rows:
            continue
        unpruned = rows[0].get("test_top1_unpruned")
        lines += [f"### {cell.label}" + ("" if unpruned is None else f" (unpruned {100 * unpruned:.2f}%)"), "",
                  *cell_table(suite, rows, columns), ""]
    notes = [f"- **{v.name}**: {v.note}" for v in suite.variants if v.note]
    if notes:
        lines += ["## Variants", "", *notes, ""]
    lines += ["## How it was run", "",
              f"- `{command}` on {time.strftime('%Y-%m-%d')}, {elapsed_s / 60:.1f} min; the rows took "
              f"{sum(r.get('row_s', r.get('search_s', 0.0)) for r in records) / 60:.1f} min measuring "
              "(their own timings, summed: a page rebuilt with --report-only reads them from the cache)",
              f"- Machine: {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
              f"Python {platform.python_version()}, torch {torch.__version__}",
              f"- Settings: {', '.join(f'{k}={v}' for k, v in vars(s).items())}", ""]
    notes_file = out_dir / f"{suite.name}_notes.md"
    if notes_file.is_file():
        lines += ["## Reading", "", notes_file.read_text().strip(), ""]
    md = out_dir / f"{suite.name}.md"
    md.write_text("\n".join(lines))
    table = out_dir / f"{suite.name}.csv"
    table.write_text(to_csv(records))
    return [md, table]


def to_csv(records: list[dict[str, Any]]) -> str:
    """One line per row, the scalar fields only (lists and dicts stay in the JSON cache)."""
    keys: list[str] = []
    for r in records:
        keys += [k for k, v in r.items() if k not in keys and not isinstance(v, (list, dict))]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()
