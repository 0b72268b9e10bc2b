"""Benchmark v2, ddpg against strong rivals: ``python -m benchmarks.v2 --full | --smoke [--references | --estimate | --report-only]``.

Does the search pay for itself? One *row* is one (model, FLOPs budget,
strategy, seed): a search with 2 workers (``adc.search(..., workers=2)``),
test top-1 of the pruned model before fine-tuning and after a short
fine-tune that distils the unpruned reference model (Hinton et al., 2015),
and the search's *held-out curve* (below). Rows are cached as JSON in
``benchmarks/cache/v2-<mode>-<settings hash>/`` (git-ignored; the hash is of
the settings that change the strategy's rows, :func:`cache_dir`), so an
interrupted run resumes; the page is rebuilt from the cache by
:mod:`benchmarks.report_v2`, with the hand-written reading of
``benchmarks/results/fashion_mnist_v2_notes.md`` included.

**Held-out curve (sample efficiency).** The search's reward is measured on
the first ``val_size`` validation images; the best of many such rewards is
biased upward, the more so the more policies a strategy tries. So at a few
checkpoints (episodes 10, 25, 50, 100, 150, 200) the policy with the best
reward *so far* -- what the search would hand back if stopped there, before
its final selection -- is re-scored (pruned, reconstructed, BN-recalibrated
as in an episode) on the ``select_size`` validation images after the reward's
(the final selection's held-out images; never the test split). A policy
already scored is not scored again, and the final selection's scores are
reused, so a curve costs at most a few evaluations. uniform and sensitivity
play one policy: their curve is one point, at the evaluations they spent.

Modes (:data:`MODES`):

- ``--full``: resnet20, mobilenet (depthwise) and resnet56 at 50% and 30%
  FLOPs; uniform, sensitivity, random, cmaes, tpe and ddpg, 3 seeds for every
  searcher, 200 episodes; every row fine-tuned (2 epochs of 10,000 training
  images), uniform's and sensitivity's one model with each of the 3 seeds
  (:func:`finetune_seeds`) -- the searches sized to about three hours on a
  quiet 2-core machine, see the notes file. Writes ``benchmarks/results/fashion_mnist_v2.*``.
  The reference models train first (``--references``: 8 epochs each, apart
  from the timed run).
- ``--smoke``: resnet20 at 50% FLOPs, 8 episodes, one seed, a 1-epoch
  reference and a 1,000-image fine-tune, with the full run's evaluation
  settings: checks the harness in about 10 minutes and measures the costs
  :func:`estimate` scales to the full run (``--estimate`` prints it).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.run import CACHE_ROOT, RESULTS_DIR, Bench, Row, _write_json, start_local_ray

SEEDED = ("random", "cmaes", "tpe", "ddpg")
"""Strategies run with every seed; uniform and sensitivity are deterministic for a model and budget."""
CURVE_EVALUATIONS = 5
"""Held-out evaluations :func:`estimate` prices a searcher's curve at (at most one a checkpoint, fewer when the
best policy did not change or the final selection scored it)."""


LATER_FIELDS = ("reward", "agent_options", "refine_episodes", "refine_method", "observe_bounds", "learner")
"""Search fields added after the first rows were cached: left out of the cache key at the value they had then
(:meth:`V2Settings.earlier`), so those rows keep their folder."""
LEARNER_FIELDS = ("refine_episodes", "refine_method", "observe_bounds", "learner")
"""Search fields only a learning agent uses: the rows of the others do not depend on them."""


def earlier_refinement(episodes: int) -> dict[str, Any]:
    """A learning agent's refinement before 2026-11-29, explicit: a tenth of ``episodes``, by Gaussian steps (the
    rows and ablation cells run then ran with it; the default since is three tenths by CMA-ES)."""
    return {"refine_episodes": max(1, episodes // 10), "refine_method": "gaussian"}


@dataclass(frozen=True)
class V2Settings:
    """Everything that changes a row's numbers.

    The search fields are hashed into the cache folder's name, the fine-tune
    fields (``finetune_*``, ``distill``) into the fine-tune files' names: a
    different fine-tune reuses the searches (their pruned models are cached).
    """

    models: tuple[str, ...]
    budgets: tuple[float, ...]
    strategies: tuple[str, ...]
    seeds: int                           # seeds of the seeded strategies (SEEDED)
    episodes: int                        # episodes of every searching strategy (sensitivity: its evaluation budget)
    workers: int = 2                     # adc.search(..., workers=): Ray workers scoring a round in parallel
    val_size: int = 1000                 # validation images of the reward
    bn_calibration: int = 512            # training images for BN recalibration of each candidate
    select_top: int = 8                  # final selection: best distinct policies re-scored on held-out images
    select_size: int = 5000              # held-out validation images (final selection and held-out curve)
    checkpoints: tuple[int, ...] = (10, 25, 50, 100, 150, 200)
    train_epochs: int = 8                # reference model training (adc.inputs.pretrained.ensure_trained)
    criterion: str = "l1"
    reward: str = "acc"                  # adc.search(..., reward=): the search's reward
    agent_options: tuple[tuple[str, Any], ...] = ()  # adc.search(..., agent_options=) of the strategies a variant changes
    refine_episodes: int | None = None   # adc.search(..., refine_episodes=): a learning agent's refinement (None: the
                                         # engine's default, three tenths since 2026-11-29, a tenth before)
    refine_method: str = "cmaes"         # adc.search(..., refine_method=): how the refinement searches
    observe_bounds: bool = False         # adc.search(..., observe_bounds=): a learning agent sees the clipping's interval
    learner: str = "ddpg"                # the agent that plays the ddpg rows (a variant may swap in another learner)
    finetune_epochs: int = 2
    finetune_samples: int | None = None  # training images per fine-tune epoch (None: the whole train split)
    finetune_lr: float = 0.01
    finetune_seeds: int = 3              # fine-tune seeds per strategy (:func:`finetune_seeds`)
    distill: bool = True                 # fine-tune with the unpruned reference model as teacher

    def earlier(self, name: str) -> Any:
        """The value a :data:`LATER_FIELDS` field had before it was a setting: the rows cached then ran with it
        (:func:`earlier_refinement`)."""
        return {"reward": "acc", "agent_options": (), "observe_bounds": False, "learner": "ddpg",
                **earlier_refinement(self.episodes)}[name]

    def agent(self, strategy: str) -> str:
        """The agent that plays ``strategy``'s rows: itself, but ddpg's rows are played by ``learner``."""
        return self.learner if strategy == "ddpg" else strategy

    def refine_count(self) -> int:
        """A learning agent's refinement episodes under these settings (``refine_episodes`` resolved)."""
        from adc.engine.loop import default_refine_episodes

        return default_refine_episodes(self.episodes) if self.refine_episodes is None else self.refine_episodes

    def resolved(self) -> dict[str, Any]:
        """The fields, with the refinement's episodes resolved (what the page and ``settings.json`` show)."""
        return {**dataclasses.asdict(self), "refine_episodes": self.refine_count()}

    def for_strategy(self, strategy: str) -> V2Settings:
        """The settings that key ``strategy``'s rows: an agent that does not learn has no refinement, so its rows
        are keyed (and shared) whatever the refinement settings."""
        from adc.agents import AGENTS

        if AGENTS.get(strategy).can_exploit:
            return self
        return dataclasses.replace(self, **{name: self.earlier(name) for name in LEARNER_FIELDS})

    def tag(self) -> str:
        """Hash of the search fields (the cache folder), the refinement resolved to its episodes; a later field
        at its earlier value is left out, so the caches made before it existed keep their name."""
        fields = {k: v for k, v in self.resolved().items()
                  if not _is_finetune_field(k) and not (k in LATER_FIELDS and v == self.earlier(k))}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]

    def finetune_tag(self) -> str:
        """Hash of the fine-tune fields (the fine-tune files)."""
        fields = {k: v for k, v in dataclasses.asdict(self).items() if _is_finetune_field(k) and k != "finetune_seeds"}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:8]


def _is_finetune_field(name: str) -> bool:
    return name.startswith("finetune_") or name == "distill"


MODES: dict[str, V2Settings] = {
    "full": V2Settings(
        models=("resnet20", "mobilenet", "resnet56"), budgets=(0.5, 0.3),
        strategies=("uniform", "sensitivity", "random", "cmaes", "tpe", "ddpg"), seeds=3, episodes=200,
        finetune_samples=10000, finetune_seeds=3,
    ),
    # The full run's evaluation settings (an episode, the final selection and a held-out evaluation cost what
    # they will cost there, so the smoke measures them); only the counts and the references' training shrink.
    "smoke": V2Settings(
        models=("resnet20",), budgets=(0.5,), strategies=("uniform", "sensitivity", "random", "cmaes", "tpe", "ddpg"),
        seeds=1, episodes=8, checkpoints=(2, 4, 8), train_epochs=1, finetune_samples=1000, finetune_seeds=1,
    ),
}


VARIANT_FINETUNE_SEEDS = 1
"""A variant's rows, and the default's it is compared with, are fine-tuned with seed 0 only."""


@dataclass(frozen=True)
class Variant:
    """One change to the default search, run on the same rows (``--variant``) and compared by :mod:`benchmarks.v2_variants`.

    Attributes:
        changes: The :class:`V2Settings` fields it sets.
        strategies: The strategies it changes (its rows; the others would repeat the default's).
        note: What it changes and why it was tried.
        baseline: The fields of the default it was measured against, where the default has changed since
            (:data:`TENTH_BY_GAUSSIAN`); the change applies on top of them.

    Both sides are fine-tuned with seed 0 only (:data:`VARIANT_FINETUNE_SEEDS`), so they compare like with like.
    """

    changes: dict[str, Any]
    strategies: tuple[str, ...]
    note: str
    baseline: dict[str, Any] = dataclasses.field(default_factory=dict)

    def default(self, settings: V2Settings) -> V2Settings:
        """The default search this variant is compared with: ``settings`` with its baseline."""
        return dataclasses.replace(settings, **self.baseline, finetune_seeds=VARIANT_FINETUNE_SEEDS)

    def apply(self, settings: V2Settings) -> V2Settings:
        """``settings`` with the change (on its baseline)."""
        return dataclasses.replace(self.default(settings), **self.changes)


TENTH_BY_GAUSSIAN = earlier_refinement(MODES["full"].episodes)
"""The learning agents' refinement before 2026-11-29 at the full mode's episodes: the default the earlier variants
were measured against."""


VARIANTS: dict[str, Variant] = {
    "reward-loss": Variant(
        {"reward": "loss"}, ("random", "cmaes", "tpe", "ddpg"),
        "`--reward loss` (minus the cross-entropy on the reward's 1,000 images) in place of `acc` (their top-1): "
        "it ranks close policies better (reward_ranking.md)", TENTH_BY_GAUSSIAN),
    "ddpg-warmup-uniform": Variant(
        {"agent_options": (("warmup_sigma", 0.2),)}, ("ddpg",),
        "ddpg's warm-up actions drawn around the uniform policy (truncated normal, sigma 0.2) instead of uniform "
        "in [0, 1]: at 30% FLOPs every warm-up episode was worse than the uniform policy", TENTH_BY_GAUSSIAN),
    "ddpg-refine-60": Variant(
        {"refine_episodes": 60}, ("ddpg",),
        "ddpg's refinement phase (the engine's local search around the best policy) 60 of the 200 episodes "
        "instead of 20: the one synthetic ablation that won (ddpg_ablation.md), never run on v2's cells; "
        "every ddpg final policy at 30% FLOPs on resnet20 came from the refinement", TENTH_BY_GAUSSIAN),
    "ddpg-refine-cma-60": Variant(
        {"refine_episodes": 60, "refine_method": "cmaes"}, ("ddpg",),
        "ddpg's 60-episode refinement done by CMA-ES from ddpg's best policy (step 0.1, population 6) instead of Gaussian "
        "hill-climbing: ddpg-refine-60 gained +0.20 from more local search, and CMA-ES, the best rival, is a local "
        "search whose mean follows the better half of each generation rather than the single luckiest reward; "
        "the default since 2026-11-29", TENTH_BY_GAUSSIAN),
    "ddpg-refine-cma-100": Variant(
        {"refine_episodes": 100}, ("ddpg",),
        "ddpg's CMA-ES refinement 100 of the 200 episodes instead of 60: each longer local search around ddpg's best "
        "policy has gained so far (20 -> 60 episodes: +0.32), and the learned part before it may add little"),
    "ddpg-observe-bounds": Variant(
        {"observe_bounds": True}, ("ddpg",),
        "ddpg observes, at every unit, the action interval the budget clipping allows (the state features; "
        "synthetic ablation +0.013 ± 0.013): the agent then knows which of its actions the clipping will override"),
    "ddpg-updates-x2": Variant(
        {"agent_options": (("updates_per_step", 2.0),)}, ("ddpg",),
        "two gradient steps of actor and critic per transition instead of one (the number of updates per episode; "
        "synthetic ablation +0.004 ± 0.019, half the steps −0.042): 200 episodes are few transitions to learn from"),
    "ddpg-warmup-20": Variant(
        {"agent_options": (("warmup", 20),)}, ("ddpg",),
        "ddpg's warm-up of random actions 20 episodes instead of 50 (AMC's min(100, episodes / 4)), so 30 more "
        "episodes learn: at 30% FLOPs every random warm-up episode scored below the uniform policy, and on the "
        "synthetic environments a warm-up of 20 was ahead at episode 100 (0.553 against 0.491 of the gap closed) "
        "and level at 200 (+0.006 ± 0.012, ddpg_ablation.md)"),
    "td3": Variant(
        {"learner": "td3"}, ("ddpg",),
        "TD3 (twin critics, delayed actor updates, target smoothing; Fujimoto et al., 2018) plays the ddpg rows, "
        "with everything else ddpg's default (AMC's settings, warm-up, noise, CMA-ES refinement): the issue's last "
        "candidate, run before only on the synthetic environments (−0.026 ± 0.016, ddpg_ablation.md), three of "
        "whose four rewards are noise-free; TD3's twin critics and smoothed targets are meant for noisy value "
        "estimates, which the real cells' reward gives"),
}
"""The variants ``--variant`` runs, by name."""


def cache_dir(mode: str, settings: V2Settings, strategy: str = "uniform") -> Path:
    """The cache folder of ``strategy``'s rows of a mode under ``settings`` (:meth:`V2Settings.for_strategy`,
    :meth:`V2Settings.tag`); the default, a strategy that does not learn, is also where the references' records go."""
    return CACHE_ROOT / f"v2-{mode}-{settings.for_strategy(strategy).tag()}"


def finetune_seeds(settings: V2Settings, row: Row) -> list[int]:
    """The seeds ``row``'s pruned model is fine-tuned with: a seeded strategy's row, its own seed when below
    ``finetune_seeds``; uniform's and sensitivity's one row (their search has no seed), every seed below it, so
    each strategy's fine-tuned column has the same n and the fine-tune's own spread shows in all of them."""
    if row.strategy in SEEDED:
        return [row.seed] if row.seed < settings.finetune_seeds else []
    return list(range(settings.finetune_seeds))


def finetune_path(cache: Path, settings: V2Settings, row: Row, seed: int | None = None) -> Path:
    """Where a row's fine-tune with ``seed`` (default: the row's) under ``settings``' fine-tune fields is cached; the
    row's own seed keeps the name it had before fine-tunes were repeated."""
    repeat = "" if seed is None or seed == row.seed else f"-seed{seed}"
    return cache / f"{row.key}-ft-{settings.finetune_tag()}{repeat}.json"


def with_finetunes(record: dict[str, Any], tunes: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """``record`` with its fine-tunes (by seed): the first one's fields as they are, and every fine-tuned top-1 by
    seed in ``finetuned_top1_by_seed`` (what the page averages)."""
    if not tunes:
        return record
    first = tunes[min(tunes)]
    return {**record, **first, "finetuned_top1_by_seed": {str(k): v["test_top1_finetuned"] for k, v in sorted(tunes.items())}}


def cached_records(mode: str, settings: V2Settings, rows: list[Row]) -> list[tuple[Row, dict[str, Any]]]:
    """The rows of ``rows`` already searched in their cache folders, each with its fine-tunes where cached
    (:func:`finetune_seeds`); nothing is run."""
    out = []
    for row in rows:
        cache = cache_dir(mode, settings, row.strategy)
        path = cache / f"{row.key}.json"
        if path.is_file():
            tunes = {seed: json.loads(tuned.read_text()) for seed in finetune_seeds(settings, row)
                     if (tuned := finetune_path(cache, settings, row, seed)).is_file()}
            out.append((row, with_finetunes(json.loads(path.read_text()), tunes)))
    return out


def plan(settings: V2Settings) -> list[Row]:
    """Every row of a mode, grouped by model and budget."""
    rows: list[Row] = []
    for model in settings.models:
        for budget in settings.budgets:
            for strategy in settings.strategies:
                rows += [Row(model, budget, strategy, seed)
                         for seed in (range(settings.seeds) if strategy in SEEDED else range(1))]
    return rows


def running_best(history: list[dict[str, Any]], episodes: int) -> dict[str, Any]:
    """The record the search held as its best after ``episodes`` episodes (the earliest on ties, as the search keeps)."""
    return max(history[:episodes], key=lambda r: r["reward"])


class V2Bench(Bench):
    """Runs v2 rows in two cached stages: search (with its held-out curve and pruned model), then fine-tune.

    The data and the reference models come from :class:`benchmarks.run.Bench`.
    With workers, Ray is started once for the whole run (each search would
    otherwise start and stop its own).
    """

    def __init__(self, settings: V2Settings, mode: str, log: Any = print) -> None:
        from adc.inputs.calibration import image_range
        from adc.objective.evaluator import ValidationScore

        super().__init__(settings, cache_dir(mode, settings), log)  # type: ignore[arg-type]
        self.mode = mode
        images, labels = image_range(self.splits.val, settings.val_size, settings.select_size)
        self.holdout = ValidationScore(images, labels)

    def row_dir(self, row: Row) -> Path:
        """The cache folder of ``row`` (its strategy's, :func:`cache_dir`)."""
        return cache_dir(self.mode, self.settings, row.strategy)

    def heldout_curve(self, result: Any, strategy: str) -> tuple[list[dict[str, Any]], int]:
        """The best-so-far policy's held-out top-1 at each checkpoint (see the module docs); and the evaluations spent.

        Entries: ``episode``, ``best_episode``, ``reward``, ``heldout_top1``.
        """
        import numpy as np

        names = [u.name for u in result.graph.units]
        history = result.history
        known: dict[tuple[int, ...], float] = {}
        for entry in result.selection:  # the final selection already scored these on the same images
            known[tuple(history[entry["episode"]]["kept"][n] for n in names)] = entry["holdout_top1"]
        evaluator = result._evaluator.with_score(self.holdout, "the held-out validation images")
        one_policy = strategy in ("uniform", "sensitivity")
        points = [len(history)] if one_policy else [c for c in self.settings.checkpoints if c <= len(history)]
        curve, fresh = [], 0
        for episode in points:
            best = running_best(history, episode)
            key = tuple(best["kept"][n] for n in names)
            if key not in known:
                known[key] = float(evaluator(np.asarray(key, dtype=np.float64)).metrics["top1"])
                fresh += 1
            curve.append({"episode": episode, "best_episode": int(best["episode"]), "reward": float(best["reward"]),
                          "heldout_top1": known[key]})
        return curve, fresh

    def run_row(self, row: Row) -> dict[str, Any]:
        """Search, held-out curve, test top-1 of the pruned model; the pruned model is saved next to the row."""
        from adc.analysis.cost import count
        from adc.engine.loop import search
        from adc.inputs.training import evaluate
        from adc.pruning.serialization import save

        s = self.settings
        model, ref = self.reference(row.model)
        started = time.perf_counter()
        result = search(
            model, self.x, data=self.splits, budget=[f"flops={row.budget}"], agent=s.agent(row.strategy),
            episodes=s.episodes, criterion=s.criterion, bn_calibration=s.bn_calibration, val_size=s.val_size,
            seed=row.seed, select_top=s.select_top, select_size=s.select_size, workers=s.workers, reward=s.reward,
            agent_options=dict(s.agent_options), refine_episodes=s.refine_episodes,
            refine_method=s.refine_method, observe_bounds=s.observe_bounds,
        )
        search_seconds = time.perf_counter() - started
        t0 = time.perf_counter()
        curve, fresh = self.heldout_curve(result, row.strategy)
        curve_seconds = time.perf_counter() - t0
        pruned = result.prune()
        save(pruned, self.row_dir(row) / f"{row.key}.model.pt", policy=result.policy)
        costs = count(pruned, self.x)
        history = result.history
        return {
            "model": row.model, "budget_flops": row.budget, "strategy": row.strategy, "seed": row.seed,
            "agent": s.agent(row.strategy), "variant": "default", "reward": s.reward,
            "agent_options": dict(s.agent_options),
            "refine_episodes": s.refine_count(), "refine_method": s.refine_method,
            "observe_bounds": s.observe_bounds, "workers": s.workers,
            "episodes": len(history),
            "evaluations": _evaluations(row.strategy, history, result, s.episodes),
            "search_wall_s": search_seconds, "curve_s": curve_seconds, "curve_evaluations": fresh,
            "episode_mean_s": sum(h["wall_time"] for h in history) / len(history),
            "val_top1_best": result.metrics["top1"], "chosen_episode": result.episode, "selection": result.selection,
            "heldout_curve": curve, "test_top1_unpruned": ref["test_top1"],
            "test_top1_pruned": evaluate(pruned, self.splits.test)["top1"],
            "macs": costs.macs, "params": costs.params,
            "macs_fraction": costs.macs / ref["macs"], "params_fraction": costs.params / ref["params"],
            "kept_fraction": [[u.name, result.kept[u.name] / u.channels] for u in result.graph.units],
            "history": [[h["reward"], h["best_reward"], h["phase"]] for h in history],
            "row_s": time.perf_counter() - started,
        }

    def finetune_row(self, row: Row, seed: int) -> dict[str, Any]:
        """The distilled fine-tune, with ``seed``, of a searched row's pruned model (loaded from the cache)."""
        from adc.inputs.finetune import finetune, kept_epoch
        from adc.pruning.serialization import load

        s = self.settings
        teacher, _ = self.reference(row.model)
        pruned = load(self.row_dir(row) / f"{row.key}.model.pt")
        started = time.perf_counter()
        _, records = finetune(pruned, self.splits, teacher=teacher if s.distill else None, epochs=s.finetune_epochs,
                              lr=s.finetune_lr, seed=seed, train_samples=s.finetune_samples)
        images = s.finetune_epochs * min(s.finetune_samples or len(self.splits.train), len(self.splits.train))
        return {"test_top1_finetuned": kept_epoch(records)["test_top1"], "finetune_seed": seed,
                "finetune_records": records, "finetune_images": images, "finetune_s": time.perf_counter() - started}

    def run(self, rows: list[Row]) -> list[dict[str, Any]]:
        """Search every row (cached), then fine-tune it with each of its :func:`finetune_seeds` (cached apart).

        Ray starts only when a row's search is not cached (fine-tunes run in this process).
        """
        done: list[dict[str, Any]] = []
        started, fresh = time.perf_counter(), 0
        for i, row in enumerate(rows, 1):
            t0 = time.perf_counter()
            search_path = self.row_dir(row) / f"{row.key}.json"
            if not search_path.is_file():
                start_local_ray(self.settings.workers)
            record, ran = self._cached(search_path, lambda: self.run_row(row))
            tunes = {}
            for seed in finetune_seeds(self.settings, row):
                tunes[seed], ran_ft = self._cached(finetune_path(self.row_dir(row), self.settings, row, seed),
                                                   lambda: self.finetune_row(row, seed))
                ran = ran or ran_ft
            record = with_finetunes(record, tunes)
            done.append(record)
            if not ran:
                self.log(f"[{i}/{len(rows)}] {row.key}: cached")
                continue
            fresh += 1
            left = (time.perf_counter() - started) / fresh * (len(rows) - i) / 60
            tuned_text = (" -> " + ", ".join(f"{100 * v:.2f}%" for v in record["finetuned_top1_by_seed"].values())
                          + " after fine-tune" if "finetuned_top1_by_seed" in record else "")
            self.log(f"[{i}/{len(rows)}] {row.key}: test {100 * record['test_top1_pruned']:.2f}%{tuned_text}, "
                     f"MACs {record['macs_fraction']:.3f}, {time.perf_counter() - t0:.0f} s (about {left:.0f} min left)")
        return done

    @staticmethod
    def _cached(path: Path, compute: Any) -> tuple[dict[str, Any], bool]:
        if path.is_file():
            return json.loads(path.read_text()), False
        value = compute()
        _write_json(path, value)
        return value, True


def _evaluations(strategy: str, history: list[dict[str, Any]], result: Any, episodes: int) -> int:
    """Pruned-network evaluations the search spent (sensitivity's probes count; the final selection does not)."""
    if strategy != "sensitivity":
        return len(history)
    from adc.agents.baselines import SensitivityOptions

    units = len(result.graph.units)
    return 2 + units * min(len(SensitivityOptions().grid), max(1, (episodes - 2) // units))


def forward_seconds(models: tuple[str, ...], images: int = 1000) -> dict[str, float]:
    """Seconds one thread takes to run each (untrained, unpruned) model on ``images`` images: the cost ratios."""
    import torch

    from adc.inputs.models import build_model

    x = torch.randn(images, 1, 28, 28)
    out = {}
    for name in models:
        model = build_model(f"zoo:{name}", num_classes=10, in_channels=1).eval()
        with torch.no_grad():
            model(x[:128])
            t0 = time.perf_counter()
            for i in range(0, images, 128):
                model(x[i:i + 128])
        out[name] = time.perf_counter() - t0
    return out


def unit_counts(models: tuple[str, ...]) -> dict[str, int]:
    """Prunable units per model (sensitivity probes each)."""
    import torch

    from adc.analysis.graph import analyze
    from adc.inputs.models import build_model

    return {m: len(analyze(build_model(f"zoo:{m}", num_classes=10, in_channels=1).eval(),
                           torch.randn(2, 1, 28, 28)).units) for m in models}


def estimate(smoke: list[dict[str, Any]], full: V2Settings, smoke_settings: V2Settings,
             speed: dict[str, float], units: dict[str, int]) -> dict[str, Any]:
    """The full run's wall time, from the smoke rows of one model and every model's forward-pass time.

    Measured in the smoke, per search: seconds an episode (with the same
    workers), the fixed cost of a search (tracing, scoring the unpruned model,
    the final selection), seconds a held-out evaluation (scaled by
    ``select_size``); per fine-tune: seconds a training image and a
    validation-and-test pass (``epochs + 1`` of them); the rest of a row (test
    evaluation, saving). Every time scales to another model by the ratio of
    forward-pass times (``speed``); sensitivity spends ``2 + 4 x units``
    evaluations; a searcher's curve is priced at ``CURVE_EVALUATIONS``.
    """
    base = smoke[0]["model"]
    rows = [r for r in smoke if r["model"] == base]
    searching = [r for r in rows if r["strategy"] in SEEDED]
    tuned = [r for r in rows if "finetune_records" in r]
    train_s = [sum(e["seconds"] for e in r["finetune_records"][1:]) for r in tuned]
    p = {
        "episode_s": sum(r["episode_mean_s"] * r["episodes"] for r in searching) / sum(r["episodes"] for r in searching),
        "search_overhead_s": _mean(r["search_wall_s"] - r["episode_mean_s"] * r["episodes"] for r in rows
                                   if r["strategy"] != "sensitivity"),
        "heldout_eval_s": _mean(r["curve_s"] / r["curve_evaluations"] for r in rows if r["curve_evaluations"])
        * full.select_size / smoke_settings.select_size,  # the images scored dominate a held-out evaluation
        "finetune_image_s": sum(train_s) / sum(r["finetune_images"] for r in tuned),
        "finetune_pass_s": _mean((r["finetune_s"] - t) / len(r["finetune_records"]) for r, t in zip(tuned, train_s)),
        "other_s": _mean(r["row_s"] - r["search_wall_s"] - r["curve_s"] for r in rows),
    }
    by_model: dict[str, float] = {}
    for row in plan(full):
        scale = speed[row.model] / speed[base]
        evaluations = {"uniform": 1, "sensitivity": 2 + 4 * units[row.model]}.get(row.strategy, full.episodes)
        seconds = (evaluations * p["episode_s"] + p["search_overhead_s"] + p["other_s"]
                   + (CURVE_EVALUATIONS if row.strategy in SEEDED else 1) * p["heldout_eval_s"])
        for _ in finetune_seeds(full, row):
            seconds += (full.finetune_epochs * (full.finetune_samples or 54000) * p["finetune_image_s"]
                        + (full.finetune_epochs + 1) * p["finetune_pass_s"])
        by_model[row.model] = by_model.get(row.model, 0.0) + seconds * scale
    return {"total_h": round(sum(by_model.values()) / 3600, 2),
            "by_model_h": {m: round(v / 3600, 2) for m, v in by_model.items()},
            "measured_on": base, "measured": {k: round(v, 4) for k, v in p.items()},
            "forward_s_per_1000_images": {m: round(v, 3) for m, v in speed.items()}, "rows": len(plan(full))}


def _mean(values: Any) -> float:
    v = list(values)
    return sum(v) / len(v) if v else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.v2", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--full", action="store_const", const="full", dest="mode", help="every row (see the module docs)")
    mode.add_argument("--smoke", action="store_const", const="smoke", dest="mode", help="harness check, 8 episodes")
    parser.add_argument("--model", action="append", default=None,
                        help="only this model's rows (repeatable); smoke: which model to check (default resnet20)")
    parser.add_argument("--strategy", action="append", default=None, help="only this strategy's rows (repeatable)")
    parser.add_argument("--budget", action="append", type=float, default=None, help="only this budget's rows (repeatable)")
    parser.add_argument("--seed", action="append", type=int, default=None, help="only this seed's rows (repeatable)")
    parser.add_argument("--episodes", type=int, default=None, help="override the mode's episodes (changes the cache key)")
    parser.add_argument("--variant", default=None, choices=sorted(VARIANTS),
                        help="one change to the search, on its strategies' rows (its own cache; no v2 page: "
                             "python -m benchmarks.v2_variants compares it with the default)")
    parser.add_argument("--report-only", action="store_true", help="rebuild the page from the cached rows, run nothing")
    parser.add_argument("--estimate", action="store_true", help="print the full run's time from the smoke cache, run nothing")
    parser.add_argument("--references", action="store_true",
                        help="only train (or find cached) the mode's reference models, so their training is scheduled apart")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results; smoke: its cache)")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    settings = MODES[args.mode]
    if args.mode == "smoke" and args.model:
        settings = dataclasses.replace(settings, models=tuple(args.model))
    if args.episodes is not None:
        settings = dataclasses.replace(settings, episodes=args.episodes)
    if args.variant is not None:
        settings = VARIANTS[args.variant].apply(settings)
    if args.estimate:
        return _print_estimate()
    cache = cache_dir(args.mode, settings)
    command = "python -m benchmarks.v2 " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    strategies = VARIANTS[args.variant].strategies if args.variant else settings.strategies
    rows = [r for r in plan(settings) if r.strategy in strategies and (not args.model or r.model in args.model)
            and (not args.strategy or r.strategy in args.strategy) and (not args.budget or r.budget in args.budget)
            and (not args.seed or r.seed in args.seed)]
    folders = {cache_dir(args.mode, settings, s): s for s in dict.fromkeys(["uniform", *(r.strategy for r in rows)])}
    for folder, strategy in folders.items():
        folder.mkdir(parents=True, exist_ok=True)
        _write_json(folder / "settings.json", settings.for_strategy(strategy).resolved())
    print(f"benchmark v2 {args.mode}: {len(rows)} rows, cache {', '.join(map(str, folders))}", flush=True)

    from adc.utils.errors import AdcError

    started = time.perf_counter()
    try:
        bench = V2Bench(settings, args.mode, log=lambda m: print(m, flush=True))
        if args.references:
            for model in dict.fromkeys(r.model for r in rows):
                print(f"{model}: test top-1 {100 * bench.reference(model)[1]['test_top1']:.2f}%", flush=True)
            return 0
        records = ([r for _, r in cached_records(args.mode, settings, plan(settings))] if args.report_only
                   else bench.run(rows))
        references = {m: bench.reference(m)[1] for m in dict.fromkeys(r["model"] for r in records)}
    except AdcError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.variant is not None:
        print(f"rows cached in {', '.join(map(str, folders))}; compare them with the default: "
              "python -m benchmarks.v2_variants", flush=True)
        return 0
    from benchmarks.report_v2 import write_report

    out = args.out or (cache / "results" if args.mode == "smoke" else RESULTS_DIR)
    written = write_report(records, references, settings=settings.resolved(), mode=args.mode, command=command,
                           out_dir=out, stem="fashion_mnist_v2" if args.mode == "full" else f"fashion_mnist_v2_{args.mode}",
                           elapsed_s=time.perf_counter() - started)
    print("wrote " + ", ".join(str(p) for p in written), flush=True)
    return 0


def _print_estimate() -> int:
    smoke_settings, full = MODES["smoke"], MODES["full"]
    smoke = [r for _, r in cached_records("smoke", smoke_settings, plan(smoke_settings))]
    if not smoke:
        print("no smoke rows cached: run python -m benchmarks.v2 --smoke first", file=sys.stderr)
        return 2
    models = tuple(dict.fromkeys((*smoke_settings.models, *full.models)))
    print(json.dumps(estimate(smoke, full, smoke_settings, forward_seconds(models), unit_counts(models)), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
