"""Run the Fashion-MNIST benchmark: ``python -m benchmarks.run --quick | --full | --smoke``.

One *row* is one (model, FLOPs budget, strategy, seed, reconstruction on/off,
BN recalibration on/off): search a policy, prune the reference model with it,
measure test top-1 right after pruning and after the same short fine-tune,
count MACs / params, and measure CPU latency against the unpruned model.
Each finished row is written to ``benchmarks/cache/<mode>-<settings hash>/``
(git-ignored) as JSON, so an interrupted run resumes where it stopped; the
report (:mod:`benchmarks.report`) is rebuilt from the cache at the end.

Modes (every setting is in :data:`MODES`; the results page explains the sizing):

- ``--full`` (``make bench``): plain20 and resnet20, budgets flops=0.5 and
  flops=0.25; uniform, sensitivity (seed 0), random and ddpg (seeds 0-2), all
  with the search's defaults (least-squares reconstruction and BN
  recalibration on), plus ddpg and uniform with reconstruction off and with BN
  recalibration off.
  Writes ``benchmarks/results/fashion_mnist.{md,csv}`` and plots.
- ``--quick`` (``make bench-quick``): plain20, flops=0.5, uniform / random / ddpg,
  seed 0, fewer episodes. Writes ``benchmarks/results/fashion_mnist_quick.*``.
- ``--smoke``: the quick rows with a handful of episodes, to check the harness
  in a few minutes; writes into the cache folder only.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CACHE_ROOT = HERE / "cache"
RESULTS_DIR = HERE / "results"
DATA = "fashion-mnist"


@dataclass(frozen=True)
class Settings:
    """Everything that changes a row's numbers (hashed into the cache folder name)."""

    models: tuple[str, ...]
    budgets: tuple[float, ...]
    strategies: tuple[str, ...]          # searched / played with the default variant
    seeds: int                           # seeds of the seeded strategies (random, ddpg)
    variants: bool                       # ddpg and uniform also with reconstruction off, and BN recalibration off
    episodes: int                        # episodes of every searching strategy (sensitivity: its evaluation budget)
    val_size: int                        # validation images the reward is computed on
    bn_calibration: int                  # training images for BN recalibration of each candidate
    finetune_epochs: int
    finetune_samples: int | None         # training images per fine-tune epoch (None: the whole train split)
    finetune_lr: float = 0.01
    train_epochs: int = 8                # reference model training (adc.pretrained.ensure_trained)
    select_top: int = 8                  # final selection: best policies re-scored on held-out validation images
    select_size: int = 5000              # held-out validation images of the final selection
    criterion: str = "l1"

    def tag(self) -> str:
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:10]


SEEDED = ("random", "ddpg")

MODES: dict[str, Settings] = {
    "full": Settings(
        models=("plain20", "resnet20"), budgets=(0.5, 0.25),
        strategies=("uniform", "random", "sensitivity", "ddpg"), seeds=3, variants=True,
        episodes=200, val_size=1000, bn_calibration=512, finetune_epochs=1, finetune_samples=27000,
    ),
    "quick": Settings(
        models=("plain20",), budgets=(0.5,), strategies=("uniform", "random", "ddpg"), seeds=1, variants=False,
        episodes=60, val_size=1000, bn_calibration=512, finetune_epochs=1, finetune_samples=None,
    ),
    "smoke": Settings(
        models=("plain20",), budgets=(0.5,), strategies=("uniform", "random", "ddpg"), seeds=1, variants=False,
        episodes=6, val_size=300, bn_calibration=128, finetune_epochs=1, finetune_samples=2000, train_epochs=1,
    ),
}


@dataclass(frozen=True)
class Row:
    model: str
    budget: float
    strategy: str
    seed: int = 0
    reconstruct: bool = True
    bn_recalibration: bool = True

    @property
    def variant(self) -> str:
        if not self.reconstruct:
            return "no-reconstruct"
        return "default" if self.bn_recalibration else "no-bn-recal"

    @property
    def key(self) -> str:
        return (f"{self.model}-flops{self.budget}-{self.strategy}-s{self.seed}"
                f"-rec{int(self.reconstruct)}-bn{int(self.bn_recalibration)}")


def plan(settings: Settings) -> list[Row]:
    """Every row of a mode, grouped by model and budget."""
    rows: list[Row] = []
    for model in settings.models:
        for budget in settings.budgets:
            for strategy in settings.strategies:
                seeds = range(settings.seeds) if strategy in SEEDED else range(1)
                rows += [Row(model, budget, strategy, seed) for seed in seeds]
            if settings.variants:
                for strategy in ("uniform", "ddpg"):
                    rows.append(Row(model, budget, strategy, 0, reconstruct=False))
                    rows.append(Row(model, budget, strategy, 0, bn_recalibration=False))
    return rows


def start_local_ray(workers: int) -> None:
    """With ``workers`` above 1, one local Ray instance for a whole benchmark run (each search would otherwise start
    and stop its own); the searches' pools join it."""
    if workers > 1:
        import ray

        if not ray.is_initialized():
            ray.init(num_cpus=max(os.cpu_count() or 1, workers), include_dashboard=False, log_to_driver=False,
                     logging_level="ERROR")


def _write_json(path: Path, value: Any) -> None:
    from adc.utils.files import atomic_write_text

    atomic_write_text(path, json.dumps(value, indent=1))


def load_reference(name: str, splits: Any, *, epochs: int = 8, progress: Any = None) -> tuple[Any, Path]:
    """The reference model ``zoo:NAME`` trained on the benchmark data's train split, in eval mode, and its checkpoint.

    Trained on first use and cached by :func:`adc.pretrained.ensure_trained` (outside git).
    """
    from adc.inputs.models import build_model, load_checkpoint
    from adc.inputs.pretrained import ensure_trained

    path = ensure_trained(f"zoo:{name}", DATA, epochs=epochs, seed=0, progress=progress)
    model = build_model(f"zoo:{name}", num_classes=splits.num_classes, in_channels=splits.in_channels)
    return load_checkpoint(model, path).eval(), path


class Bench:
    """Loads the data and the reference models once, runs rows, caches them."""

    def __init__(self, settings: Settings, cache: Path, log: Any = print) -> None:
        from adc.inputs.data import example_input, load_data

        self.settings = settings
        self.cache = cache
        self.log = log
        self.splits = load_data(DATA)
        self.x = example_input(self.splits)
        self._models: dict[str, Any] = {}

    def reference(self, name: str) -> tuple[Any, dict[str, Any]]:
        """The trained unpruned model and its record (training recipe, accuracies, costs); cached."""
        if name in self._models:
            return self._models[name]
        from adc.analysis.cost import count
        from adc.inputs.pretrained import _TRAIN_SETTINGS
        from adc.inputs.training import evaluate

        started = time.perf_counter()

        def progress(epoch: int, loss: float) -> None:
            self.log(f"  training zoo:{name}: epoch {epoch}/{self.settings.train_epochs}, loss {loss:.4f}, "
                     f"{time.perf_counter() - started:.0f} s")

        model, path = load_reference(name, self.splits, epochs=self.settings.train_epochs, progress=progress)
        record_path = self.cache / f"reference-{name}.json"
        if record_path.is_file():
            record = json.loads(record_path.read_text())
        else:
            meta = json.loads(path.with_suffix(".json").read_text()) if path.with_suffix(".json").is_file() else {}
            costs = count(model, self.x)
            record = {
                "model": name, "checkpoint": str(path), "train_epochs": self.settings.train_epochs,
                "recipe": (f"SGD Nesterov momentum 0.9, lr {_TRAIN_SETTINGS['lr']} with 1-epoch linear warm-up then "
                           f"per-step cosine to 0, batch {_TRAIN_SETTINGS['batch_size']}, weight decay "
                           f"{_TRAIN_SETTINGS['weight_decay']} (not on BN/bias), {self.settings.train_epochs} epochs "
                           f"on the {len(self.splits.train)}-image train split (validation split held out), seed 0"),
                "train_seconds": meta.get("train_seconds"),
                "test_top1": evaluate(model, self.splits.test)["top1"],
                "val_top1": evaluate(model, self.splits.val)["top1"],
                "macs": costs.macs, "params": costs.params,
            }
            _write_json(record_path, record)
        self._models[name] = (model, record)
        return model, record

    def run_row(self, row: Row) -> dict[str, Any]:
        from adc.analysis.cost import count
        from adc.inputs.finetune import finetune, kept_epoch
        from adc.engine.loop import search
        from adc.inputs.training import evaluate
        from adc.agents.baselines import SensitivityOptions
        from benchmarks import latency

        s = self.settings
        model, ref = self.reference(row.model)
        started = time.perf_counter()
        result = search(
            model, self.x, data=self.splits, budget=[f"flops={row.budget}"], agent=row.strategy, episodes=s.episodes,
            criterion=s.criterion, reconstruct=row.reconstruct, bn_calibration=s.bn_calibration if row.bn_recalibration else 0,
            val_size=s.val_size, seed=row.seed, select_top=s.select_top, select_size=s.select_size,
        )
        search_seconds = time.perf_counter() - started
        pruned = result.prune()
        test_pruned = evaluate(pruned, self.splits.test)["top1"]
        costs = count(pruned, self.x)
        ft_started = time.perf_counter()
        tuned, ft_records = finetune(pruned, self.splits, epochs=s.finetune_epochs, lr=s.finetune_lr, seed=row.seed,
                                     train_samples=s.finetune_samples)
        finetune_seconds = time.perf_counter() - ft_started
        lat = latency.measure(model, tuned, self.x)

        history = result.history
        units = result.graph.units
        if row.strategy == "sensitivity":
            grid = len(SensitivityOptions().grid)
            evaluations = 2 + len(units) * min(grid, max(1, (s.episodes - 2) // len(units)))
        else:
            evaluations = len(history)
        wall = sum(h["wall_time"] for h in history)
        return {
            "model": row.model, "budget_flops": row.budget, "strategy": row.strategy, "seed": row.seed,
            "variant": row.variant, "reconstruction": row.reconstruct, "bn_recalibration": row.bn_recalibration,
            "criterion": s.criterion, "episodes": len(history), "evaluations": evaluations,
            "search_wall_s": search_seconds, "episode_mean_s": wall / len(history),
            "eval_share": sum(h["evaluate_time"] for h in history) / wall if wall > 0 else None,
            "val_top1_best": result.metrics["top1"],
            "chosen_episode": result.episode,
            "top_reward_episode": max(history, key=lambda h: h["reward"])["episode"],
            "selection": result.selection,
            "test_top1_unpruned": ref["test_top1"], "test_top1_pruned": test_pruned,
            "test_top1_finetuned": kept_epoch(ft_records)["test_top1"], "finetune_epochs": s.finetune_epochs,
            "finetune_s": finetune_seconds,
            "macs": costs.macs, "params": costs.params,
            "macs_fraction": costs.macs / ref["macs"], "params_fraction": costs.params / ref["params"],
            **{k: v for k, v in lat.items()},
            "kept_fraction": [[u.name, result.kept[u.name] / u.channels] for u in units],
            "history": [[h["reward"], h.get("best_reward", h["reward"]), h["metrics"]["top1"], h["phase"]] for h in history],
        }

    def run(self, rows: list[Row]) -> list[dict[str, Any]]:
        done: list[dict[str, Any]] = []
        started = time.perf_counter()
        fresh = 0
        for i, row in enumerate(rows, 1):
            path = self.cache / f"{row.key}.json"
            if path.is_file():
                done.append(json.loads(path.read_text()))
                self.log(f"[{i}/{len(rows)}] {row.key}: cached")
                continue
            t0 = time.perf_counter()
            record = self.run_row(row)
            _write_json(path, record)
            done.append(record)
            fresh += 1
            per_row = (time.perf_counter() - started) / fresh
            self.log(f"[{i}/{len(rows)}] {row.key}: test {100 * record['test_top1_pruned']:.2f}% -> "
                     f"{100 * record['test_top1_finetuned']:.2f}% after fine-tune, MACs {record['macs_fraction']:.3f}, "
                     f"{time.perf_counter() - t0:.0f} s (about {per_row * (len(rows) - i) / 60:.0f} min left)")
        return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--full", action="store_const", const="full", dest="mode", help="every row (make bench)")
    mode.add_argument("--quick", action="store_const", const="quick", dest="mode", help="reduced rows (make bench-quick)")
    mode.add_argument("--smoke", action="store_const", const="smoke", dest="mode", help="harness check, tiny episodes")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch.set_num_threads, also onnxruntime's intra-op threads (default 1: on a shared 2-core "
                             "machine a second OpenMP thread made the quick run over 4x slower)")
    parser.add_argument("--episodes", type=int, default=None, help="override the mode's episodes (changes the cache key)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results; smoke: its cache folder)")
    parser.add_argument("--model", action="append", default=None,
                        help="run only this model's rows (repeatable); shares the mode's cache, so two processes can "
                             "split a run by model and a final --report-only pass writes the whole page")
    parser.add_argument("--reverse", action="store_true",
                        help="run the rows last to first: a second process started with it on the same rows meets the "
                             "first in the middle (each row's cache file is checked just before the row runs)")
    parser.add_argument("--report-only", action="store_true", help="rebuild the report from the cached rows, run nothing")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(max(1, args.threads))
    settings = MODES[args.mode]
    if args.episodes is not None:
        settings = dataclasses.replace(settings, episodes=args.episodes)
    cache = CACHE_ROOT / f"{args.mode}-{settings.tag()}"
    cache.mkdir(parents=True, exist_ok=True)
    _write_json(cache / "settings.json", dataclasses.asdict(settings))
    command = "python -m benchmarks.run " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    print(f"benchmark {args.mode}: {len(plan(settings))} rows, cache {cache}, torch threads {torch.get_num_threads()}", flush=True)

    from adc.utils.errors import AdcError

    started = time.perf_counter()
    try:
        bench = Bench(settings, cache, log=lambda m: print(m, flush=True))
        rows = plan(settings)
        models = tuple(args.model) if args.model else settings.models
        unknown = sorted(set(models) - set(settings.models))
        if unknown:
            raise AdcError(f"--model {unknown[0]!r} is not in the {args.mode} benchmark; valid: {', '.join(settings.models)}")
        rows = [r for r in rows if r.model in models]
        if args.report_only:
            records = [json.loads((cache / f"{r.key}.json").read_text()) for r in rows if (cache / f"{r.key}.json").is_file()]
        else:
            records = bench.run(rows[::-1] if args.reverse else rows)
        references = {m: bench.reference(m)[1] for m in models}
    except AdcError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from benchmarks.report import write_report

    out = args.out or (cache / "results" if args.mode == "smoke" else RESULTS_DIR)
    stem = "fashion_mnist" if args.mode == "full" else f"fashion_mnist_{args.mode}"
    written = write_report(records, references, settings=dataclasses.asdict(settings), mode=args.mode, command=command,
                           out_dir=out, stem=stem, threads=torch.get_num_threads(),
                           elapsed_s=time.perf_counter() - started)
    print("wrote " + ", ".join(str(p) for p in written), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
