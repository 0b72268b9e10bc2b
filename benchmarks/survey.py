"""The survey's methods on Fashion-MNIST: ``python -m benchmarks.survey --full | --smoke``.

Three questions of the pruning survey (``/work/shared/LANDSCAPE.md``), each
measured on the reference models of :mod:`benchmarks.run` (plain20 and
resnet20 trained on Fashion-MNIST's train split), at 50% and 30% of their
FLOPs, test top-1 right after pruning (no fine-tune: BN recalibration and
least-squares reconstruction, the search's defaults, are on):

1. **Which criterion?** Every channel criterion of ``adc.pruning.criteria``
   with the uniform policy and with ddpg (one seed), and how long each one's
   scoring takes (once per search: the time it adds per episode is that over
   the episodes).
2. **Sparse training first?** A short sparse fine-tune of the unpruned model
   (``slimming``, ``group_lasso``), then uniform and ddpg on the sparse model --
   against the same fine-tune without a regulariser (so that extra training
   alone is not credited to the sparsity) and against no fine-tune.
3. **Which strategy?** ``netadapt`` and ``global`` beside uniform, random,
   sensitivity and ddpg in the same cells (criterion l1).

Every finished row is cached as JSON under ``benchmarks/cache/survey-<mode>-<hash>/``
(git-ignored), so an interrupted run resumes; ``--model`` splits a run
between processes, ``--report-only`` writes the page from the cache. The page
(``benchmarks/results/survey.md`` and ``.csv``) says, cell by cell, where a
method does not help: a difference under the test split's standard error (:func:`noise`) is a tie.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import io
import json
import platform
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.run import CACHE_ROOT, DATA, RESULTS_DIR, _write_json, load_reference, start_local_ray

def noise(test_images: int) -> float:
    """Points of test top-1 below which two results tie: the standard error of the test split at ~90% top-1
    (0.3 points for Fashion-MNIST's 10,000 test images)."""
    return 100 * (0.09 / max(test_images, 1)) ** 0.5
SPARSE_STRATEGIES = ("uniform", "ddpg")
OTHER_STRATEGIES = ("random", "sensitivity", "netadapt", "global")
REGULARISERS = ("slimming", "group_lasso")

@dataclass(frozen=True)
class Settings:
    """Everything that changes a row's numbers (hashed into the cache folder name)."""

    models: tuple[str, ...]
    budgets: tuple[float, ...]
    criteria: tuple[str, ...] | None      # None: every registered criterion
    episodes: int                         # ddpg, random; netadapt and sensitivity: their evaluation budget
    val_size: int
    bn_calibration: int
    select_top: int
    sparse_epochs: int
    sparse_samples: int | None
    sparse_strengths: tuple[float, ...]
    sparse_lr: float = 0.01
    train_epochs: int = 8
    test_samples: int | None = None       # None: the whole test split (smoke: a fixed subset, for speed)

    def tag(self) -> str:
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:10]


MODES: dict[str, Settings] = {
    "full": Settings(models=("plain20", "resnet20"), budgets=(0.5, 0.3), criteria=None, episodes=100, val_size=1000,
                     bn_calibration=512, select_top=8, sparse_epochs=2, sparse_samples=None, sparse_strengths=(1e-3, 5e-3)),
    "smoke": Settings(models=("plain20",), budgets=(0.5,), criteria=None, episodes=4, val_size=200, bn_calibration=64,
                      select_top=0, sparse_epochs=1, sparse_samples=1000, sparse_strengths=(5e-3,), train_epochs=1,
                      test_samples=1000),
}


@dataclass(frozen=True)
class Row:
    """One search: a section, a model, a budget, a strategy, and the criterion or the sparse fine-tune it varies."""

    section: str            # "criteria", "sparse" or "strategies"
    model: str
    budget: float
    strategy: str
    criterion: str = "l1"
    sparsity: str = "none"

    @property
    def key(self) -> str:
        sparsity = self.sparsity.replace(":", "@")
        return f"{self.section}-{self.model}-flops{self.budget}-{self.strategy}-{self.criterion}-{sparsity}"


def sparsity_variants(settings: Settings) -> list[str]:
    """``none`` (the reference model), ``finetune`` (the same fine-tune without a regulariser: the control) and
    ``NAME:STRENGTH`` for every regulariser and strength."""
    return ["none", "finetune", *(f"{r}:{g:g}" for r in REGULARISERS for g in settings.sparse_strengths)]


def plan(settings: Settings, criteria: list[str]) -> list[Row]:
    """Every row of a mode. The l1 uniform / ddpg rows of the criteria section serve the other two sections too."""
    rows: list[Row] = []
    for model in settings.models:
        for budget in settings.budgets:
            rows += [Row("criteria", model, budget, s, criterion=c) for c in criteria for s in ("uniform", "ddpg")]
            rows += [Row("strategies", model, budget, s) for s in OTHER_STRATEGIES]
            rows += [Row("sparse", model, budget, s, sparsity=v) for v in sparsity_variants(settings)[1:]
                     for s in SPARSE_STRATEGIES]
    return rows


class Survey:
    """Loads the data and reference models once, trains the sparse variants once, runs and caches rows."""

    def __init__(self, settings: Settings, cache: Path, log: Callable[[str], None] = print, workers: int = 1) -> None:
        from adc.inputs.data import example_input, load_data

        self.settings, self.cache, self.log, self.workers = settings, cache, log, workers
        self.splits = load_data(DATA)
        self.x = example_input(self.splits)
        self.test = self.splits.test
        self.finetune_splits = self.splits  # what the sparse fine-tunes score every epoch
        if settings.test_samples is not None:
            from torch.utils.data import Subset

            self.test = Subset(self.splits.test, range(min(settings.test_samples, len(self.splits.test))))
            val = Subset(self.splits.val, range(min(settings.test_samples, len(self.splits.val))))
            self.finetune_splits = dataclasses.replace(self.splits, val=val, test=self.test)
        self._models: dict[tuple[str, str], Any] = {}

    def model(self, name: str, sparsity: str = "none") -> tuple[Any, dict[str, Any]]:
        """The reference model, or its sparse fine-tune (trained once, cached as an adc model file); and its record."""
        if (name, sparsity) in self._models:
            return self._models[(name, sparsity)]
        from adc.inputs.training import evaluate
        from adc.pruning.serialization import load

        reference, _ = load_reference(name, self.splits, epochs=self.settings.train_epochs,
                                      progress=lambda e, loss: self.log(f"  training {name}: epoch {e}, loss {loss:.4f}"))
        record_path = self.cache / f"model-{name}-{sparsity.replace(':', '@')}.json"
        model_path = self.cache / f"model-{name}-{sparsity.replace(':', '@')}.pt"
        if sparsity == "none":
            model = reference
        elif model_path.is_file():
            model = load(model_path)
        else:
            model = self._sparse_train(reference, name, sparsity, model_path)
        if record_path.is_file():
            record = json.loads(record_path.read_text())
        else:
            record = {"model": name, "sparsity": sparsity, "test_top1": evaluate(model, self.test)["top1"],
                      **self._targets(model)}
            _write_json(record_path, record)
        self._models[(name, sparsity)] = (model, record)
        return model, record

    def _targets(self, model: Any) -> dict[str, float]:
        """What each regulariser shrinks, measured on ``model`` (to show the sparse fine-tune did its job)."""
        import torch

        from adc.analysis.graph import analyze
        from adc.pruning.sparsity import SPARSITY

        graph = analyze(model, self.x)
        with torch.no_grad():
            return {f"target_{n}": float(SPARSITY.get(n).penalty(model, graph)) for n in SPARSITY.names()}

    def _sparse_train(self, reference: Any, name: str, sparsity: str, path: Path) -> Any:
        from adc.analysis.graph import analyze
        from adc.inputs.finetune import finetune
        from adc.pruning.serialization import save
        from adc.pruning.sparsity import SPARSITY

        s = self.settings
        method, _, strength = sparsity.partition(":")
        regulariser = None if sparsity == "finetune" else SPARSITY.get(method).regulariser(
            analyze(reference, self.x), float(strength))
        started = time.perf_counter()
        model, _ = finetune(reference, self.finetune_splits, epochs=s.sparse_epochs, lr=s.sparse_lr, seed=0, keep_last=True,
                            train_samples=s.sparse_samples, extra_loss=regulariser,
                            progress=lambda r: self.log(f"  {sparsity} fine-tune of {name}: epoch {r['epoch']}, "
                                                        f"validation {100 * r['val_top1']:.2f}%"))
        self.log(f"  {sparsity} fine-tune of {name}: {time.perf_counter() - started:.0f} s")
        save(model, path, meta={"sparsity": sparsity, "epochs": s.sparse_epochs})
        return model

    def scoring_seconds(self, name: str, criterion: str) -> float:
        """Seconds ``criterion`` adds to a search's set-up: building its pruner (ranking and reconstruction statistics
        on the search's 256 calibration images) minus building the ``l1`` one. ``thinet`` and ``lasso`` reuse the
        statistics reconstruction collects anyway, so they add only their selection."""
        path = self.cache / f"scoring-{name}-{criterion}.json"
        if path.is_file():
            return float(json.loads(path.read_text())["seconds"])
        from adc.analysis.graph import analyze
        from adc.inputs.calibration import labelled_batches
        from adc.pruning.pruner import ChannelPruner

        model, _ = self.model(name)
        graph = analyze(model, self.x)
        batches = labelled_batches(self.splits.train, 256, 0)

        def build(c: str) -> float:
            started = time.perf_counter()
            ChannelPruner(model, self.x, criterion=c, calibration=batches, reconstruct=True, graph=graph)
            return time.perf_counter() - started

        seconds = max(0.0, build(criterion) - build("l1"))
        _write_json(path, {"seconds": seconds})
        return seconds

    def run_row(self, row: Row) -> dict[str, Any]:
        from adc.analysis.cost import count
        from adc.engine.loop import search
        from adc.inputs.training import evaluate

        s = self.settings
        model, record = self.model(row.model, row.sparsity)
        started = time.perf_counter()
        result = search(model, self.x, data=self.splits, budget=[f"flops={row.budget}"], agent=row.strategy,
                        episodes=s.episodes, criterion=row.criterion, val_size=s.val_size,
                        bn_calibration=s.bn_calibration, select_top=s.select_top, seed=0, workers=self.workers)
        seconds = time.perf_counter() - started
        pruned = result.prune()
        history = result.history
        return {
            **dataclasses.asdict(row), "episodes": len(history), "workers": self.workers,
            "evaluations": max(len(history), _evaluations(result)),
            "test_top1_unpruned": record["test_top1"], "test_top1_pruned": evaluate(pruned, self.test)["top1"],
            "val_top1": result.metrics["top1"], "flops_ratio": count(pruned, self.x).flops / count(model, self.x).flops,
            "search_s": seconds, "episode_mean_s": sum(h["wall_time"] for h in history) / len(history),
        }

    def run(self, rows: list[Row]) -> list[dict[str, Any]]:
        done, spent, fresh = [], 0.0, 0
        for i, row in enumerate(rows, 1):
            path = self.cache / f"{row.key}.json"
            if path.is_file():
                done.append(json.loads(path.read_text()))
                continue
            self.model(row.model, row.sparsity)  # trained before the clock starts: the estimate is of rows
            start_local_ray(self.workers)
            started = time.perf_counter()
            record = self.run_row(row)
            _write_json(path, record)
            done.append(record)
            fresh += 1
            spent += time.perf_counter() - started
            left = spent / fresh * (len(rows) - i) / 60
            self.log(f"[{i}/{len(rows)}] {row.key}: test top-1 {100 * record['test_top1_pruned']:.2f}% "
                     f"(unpruned {100 * record['test_top1_unpruned']:.2f}%), FLOPs {record['flops_ratio']:.3f}, "
                     f"{record['search_s']:.0f} s (about {left:.0f} min left)")
        return done


def _evaluations(result: Any) -> int:
    """Evaluations a one-policy strategy spent, its probes included (sensitivity and netadapt say so)."""
    return max([int(h.get("evaluations") or 0) for h in result.history] + [0])


# -- the page --------------------------------------------------------------------------------------------


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def _cell(records: dict[tuple, dict], *key: Any) -> float | None:
    r = records.get(key)
    return None if r is None else r["test_top1_pruned"]


def _verdict(value: float | None, baseline: float | None, what: str, against: str, tie: float) -> str | None:
    if value is None or baseline is None:
        return None
    gap = 100 * (value - baseline)
    if gap > tie:
        return f"{what} helps: +{gap:.2f} points over {against}"
    if gap < -tie:
        return f"{what} **does not help**: {gap:.2f} points below {against}"
    return f"{what} **does not help** (a tie with {against}: {gap:+.2f} points, under {tie:.2f})"


def criteria_section(records: list[dict], settings: Settings, criteria: list[str], scoring: dict,
                     tie: float) -> list[str]:
    by = {(r["model"], r["budget"], r["strategy"], r["criterion"]): r for r in records if r["section"] == "criteria"}
    lines = ["## 1. Which criterion?", "",
             "Test top-1 (%) right after pruning (BN recalibration and reconstruction, no fine-tune). `scoring s`: "
             "seconds the criterion adds to a search, once (its ranking, beside l1's, with the reconstruction "
             f"statistics collected anyway); `s/episode`: that spread over the {settings.episodes} episodes of a ddpg "
             "search (the episodes themselves cost the same whatever the criterion).", ""]
    verdicts = []
    for model in settings.models:
        head = " | ".join(f"{b} {s}" for b in settings.budgets for s in ("uniform", "ddpg"))
        lines += [f"**{model}**", "", f"| criterion | {head} | scoring s | s/episode |",
                  "|---|" + "---:|" * (2 * len(settings.budgets) + 2)]
        for c in criteria:
            cells = " | ".join(_pct(_cell(by, model, b, s, c)) for b in settings.budgets for s in ("uniform", "ddpg"))
            sec = scoring.get((model, c))
            lines.append(f"| {c} | {cells} | {'-' if sec is None else f'{sec:.2f}'} | "
                         f"{'-' if sec is None else f'{sec / settings.episodes:.3f}'} |")
            if c == "l1":
                continue
            for b in settings.budgets:
                for s in ("uniform", "ddpg"):
                    v = _verdict(_cell(by, model, b, s, c), _cell(by, model, b, s, "l1"), c, f"l1 ({s})", tie)
                    if v:
                        verdicts.append(f"- {model}, flops={b}, {s}: {v}")
        lines.append("")
    return lines + ["Against l1, cell by cell:", "", *verdicts, ""]


def sparse_section(records: list[dict], settings: Settings, references: dict, tie: float) -> list[str]:
    by = {(r["model"], r["budget"], r["strategy"], r["sparsity"]): r for r in records
          if r["section"] == "sparse" or (r["section"] == "criteria" and r["criterion"] == "l1")}
    lines = ["## 2. Sparse training first?", "",
             f"A {settings.sparse_epochs}-epoch fine-tune of the unpruned model (lr {settings.sparse_lr}, cosine, the last "
             "epoch kept) with a regulariser (`NAME:STRENGTH`), then the search (criterion l1). "
             "`finetune` is the same fine-tune without a regulariser: a regulariser helps only if it beats that. "
             "`unpruned` is the model's test top-1 before pruning; `|gamma|` and `groups` what the regularisers shrink.",
             "", "| model | start | unpruned | |gamma| | groups | " +
             " | ".join(f"{b} {s}" for b in settings.budgets for s in SPARSE_STRATEGIES) + " |",
             "|---|---|---:|---:|---:|" + "---:|" * (len(settings.budgets) * len(SPARSE_STRATEGIES))]
    verdicts = []
    for model in settings.models:
        for v in sparsity_variants(settings):
            ref = references.get((model, v), {})
            cells = " | ".join(_pct(_cell(by, model, b, s, v)) for b in settings.budgets for s in SPARSE_STRATEGIES)
            targets = " | ".join(f"{ref[k]:.1f}" if ref.get(k) is not None else "-"
                                 for k in ("target_slimming", "target_group_lasso"))
            lines.append(f"| {model} | {v} | {_pct(ref.get('test_top1'))} | {targets} | {cells} |")
            if v.partition(":")[0] in REGULARISERS:
                for b in settings.budgets:
                    for s in SPARSE_STRATEGIES:
                        verdict = _verdict(_cell(by, model, b, s, v), _cell(by, model, b, s, "finetune"), v,
                                           "the plain fine-tune", tie)
                        if verdict:
                            verdicts.append(f"- {model}, flops={b}, {s}: {verdict}")
    return lines + ["", "Against the same fine-tune without a regulariser:", "", *(verdicts or ["- not run yet"]), ""]


def strategies_section(records: list[dict], settings: Settings, tie: float) -> list[str]:
    strategies = ("uniform", "random", "sensitivity", "ddpg", "netadapt", "global")
    by = {(r["model"], r["budget"], r["strategy"]): r for r in records
          if r["section"] == "strategies" or (r["section"] == "criteria" and r["criterion"] == "l1")}
    lines = ["## 3. Which strategy?", "",
             "Test top-1 (%) right after pruning, criterion l1; in brackets the evaluations spent (episodes, or "
             "probes and the played episode) and the search's wall seconds.", "",
             "| model | budget | " + " | ".join(strategies) + " |", "|---|---|" + "---:|" * len(strategies)]
    verdicts = []
    for model in settings.models:
        for b in settings.budgets:
            cells = []
            for s in strategies:
                r = by.get((model, b, s))
                cells.append("-" if r is None else
                             f"{_pct(r['test_top1_pruned'])} ({r['evaluations']}, {r['search_s']:.0f} s)")
            lines.append(f"| {model} | flops={b} | " + " | ".join(cells) + " |")
            for s in ("netadapt", "global"):
                for against in ("uniform", "ddpg"):
                    v = _verdict(_cell(by, model, b, s), _cell(by, model, b, against), s, against, tie)
                    if v:
                        verdicts.append(f"- {model}, flops={b}: {v}")
    return lines + ["", "netadapt and global against uniform and ddpg:", "", *verdicts, ""]


def write_report(records: list[dict], settings: Settings, criteria: list[str], scoring: dict, references: dict,
                 out_dir: Path, stem: str, command: str, elapsed_s: float, test_images: int) -> list[Path]:
    """``<stem>.md`` (the three sections and their verdicts) and ``<stem>.csv`` (one row per search)."""
    import torch

    from adc.utils.files import atomic_write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    tie = noise(test_images)
    header = ["# The survey's methods on Fashion-MNIST", "",
              f"- Command: `{command}`; wall time of this invocation {elapsed_s / 60:.1f} min (cached rows cost nothing).",
              f"- Machine: {platform.platform()}, {platform.machine()}; torch {torch.__version__}, "
              f"{torch.get_num_threads()} thread(s).",
              f"- Settings: `{json.dumps(dataclasses.asdict(settings), sort_keys=True)}`",
              f"- A difference under {tie:.2f} points of test top-1 is a tie (the standard error of {test_images} "
              "test images at 90%). One seed per row: a single row's lead is no more than that.", ""]
    text = "\n".join(header + criteria_section(records, settings, criteria, scoring, tie)
                     + sparse_section(records, settings, references, tie) + strategies_section(records, settings, tie))
    notes = out_dir / f"{stem}_notes.md"
    if notes.is_file():  # the hand-written reading, kept in git beside the page
        text = text.rstrip() + "\n\n" + notes.read_text()
    md = atomic_write_text(out_dir / f"{stem}.md", text)
    buf = io.StringIO()
    fields = ["section", "model", "budget", "strategy", "criterion", "sparsity", "episodes", "evaluations",
              "test_top1_unpruned", "test_top1_pruned", "val_top1", "flops_ratio", "search_s", "episode_mean_s"]
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(records)
    return [md, atomic_write_text(out_dir / f"{stem}.csv", buf.getvalue())]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.survey", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--full", action="store_const", const="full", dest="mode", help="every row (see the docs)")
    mode.add_argument("--smoke", action="store_const", const="smoke", dest="mode", help="harness check: plain20, tiny")
    parser.add_argument("--model", action="append", default=None, help="run only this model's rows (repeatable)")
    parser.add_argument("--section", action="append", default=None, choices=("criteria", "sparse", "strategies"),
                        help="run only this section's rows (repeatable)")
    parser.add_argument("--strategy", action="append", default=None, help="run only this strategy's rows (repeatable)")
    parser.add_argument("--budget", action="append", type=float, default=None, help="only this budget's rows (repeatable)")
    parser.add_argument("--criterion", action="append", default=None, help="only this criterion's rows (repeatable)")
    parser.add_argument("--episodes", type=int, default=None,
                        help="override the mode's episodes of ddpg, random, sensitivity and netadapt (changes the cache key)")
    parser.add_argument("--workers", type=int, default=1,
                        help="Ray workers per search (speed only: not in the cache key; each row records its count)")
    parser.add_argument("--report-only", action="store_true", help="write the page from the cached rows, run nothing")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results; smoke: its cache)")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers {args.workers}: must be at least 1")

    import torch

    from adc.pruning.criteria import CRITERIA
    from adc.utils.errors import AdcError

    torch.set_num_threads(1)
    settings = MODES[args.mode]
    if args.episodes is not None:
        settings = dataclasses.replace(settings, episodes=max(1, args.episodes))
    criteria = list(settings.criteria or CRITERIA.names())
    cache = CACHE_ROOT / f"survey-{args.mode}-{settings.tag()}"
    cache.mkdir(parents=True, exist_ok=True)
    _write_json(cache / "settings.json", dataclasses.asdict(settings))
    command = "python -m benchmarks.survey " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    started = time.perf_counter()
    try:
        survey = Survey(settings, cache, log=lambda m: print(m, flush=True), workers=args.workers)
        models = tuple(args.model or settings.models)
        rows = [r for r in plan(settings, criteria) if r.model in models and (not args.section or r.section in args.section)
                and (not args.strategy or r.strategy in args.strategy) and (not args.budget or r.budget in args.budget)
                and (not args.criterion or r.criterion in args.criterion)]
        print(f"survey {args.mode}: {len(rows)} rows, cache {cache}", flush=True)
        if args.report_only:
            records = [json.loads((cache / f"{r.key}.json").read_text()) for r in rows if (cache / f"{r.key}.json").is_file()]
        else:
            records = survey.run(rows)
        wants_scoring = not args.section or "criteria" in args.section
        scoring = {(m, c): survey.scoring_seconds(m, c) for m in models for c in criteria} if wants_scoring else {}
        wants_sparse = not args.section or "sparse" in args.section
        references = {(m, v): survey.model(m, v)[1] for m in models for v in sparsity_variants(settings)
                      if (v == "none" or wants_sparse)
                      and ((cache / f"model-{m}-{v.replace(':', '@')}.json").is_file() or not args.report_only)}
    except AdcError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for (m, c), sec in sorted(scoring.items()):
        print(f"scoring {m} {c}: {sec:.2f} s", flush=True)
    out = args.out or (cache / "results" if args.mode == "smoke" else RESULTS_DIR)
    written = write_report(records, settings, criteria, scoring, references, out, "survey" if args.mode == "full"
                           else f"survey_{args.mode}", command, time.perf_counter() - started, len(survey.test))
    print(Path(written[0]).read_text(), flush=True)
    print("wrote " + ", ".join(str(p) for p in written), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
