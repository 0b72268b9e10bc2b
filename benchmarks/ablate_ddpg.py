"""Ablations of the ddpg agent, one change at a time: ``python -m benchmarks.ablate_ddpg --part synthetic|real ...``.

Each *variant* is the baseline ddpg with one setting changed (an agent
option, a search option or the agent itself); the rivals (random, cmaes,
tpe) run beside them as references. Two parts:

- **synthetic** (fast): the eight synthetic environments of
  :mod:`benchmarks.rivals_tuning` (``hard6``, ``spread12``, ``spread30``,
  ``noisy12`` at 50% and 30% of the cost), ``--episodes`` episodes (200),
  split into the engine's phases (:func:`adc.engine.loop.phase_plan`: a
  learning agent explores, then plays its noise-free policy for a tenth and
  refines the best policy for a tenth by Gaussian steps, as ``adc.search``
  did until 2026-11-29, :func:`search_options`). Score: the
  share of the uniform-to-optimum gap the best episode closes (true reward),
  and the same at episode 100 (the best so far then). Unlike the rivals'
  table, the synthetic observation here hides the clipping's interval
  (features 5 and 6) as the real environment does, unless the variant sets
  the search option ``observe_bounds``.
- **real**: ``adc.search`` on a Fashion-MNIST reference model
  (:func:`benchmarks.run.load_reference`, never trained here: the harness
  refuses a model whose weights are not cached), FLOPs budgets, the search's
  defaults but ``round_to=1`` (no timed probe: the same rounding for every
  variant; auto picked 1 for plain20 anyway). Reported: the best search
  reward (top-1 on the reward's 1,000 validation images) and the held-out
  top-1 of the policy the final selection hands back (``select_top`` 8 on
  the 5,000 validation images after the reward's), and seconds per episode.

Every (variant, environment or model and budget, seed) cell is cached in
``benchmarks/cache/ablate_ddpg/`` (git-ignored), so a run can be split into
commands of a few minutes (``--minutes``: stop starting cells after that)
and resumed; ``--out`` writes ``benchmarks/results/ddpg_ablation.{md,csv}``
from every cached cell of the variants in :data:`VARIANTS`.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from benchmarks.rivals_tuning import ENVS, make_env
from benchmarks.v2 import earlier_refinement

HERE = Path(__file__).resolve().parent
CACHE = HERE / "cache" / "ablate_ddpg"
RESULTS = HERE / "results"
DATA = "fashion-mnist"
CHECKPOINT = 100
"""Episode at which the best so far is also scored (the issue's sample-efficiency goal)."""


@dataclass(frozen=True)
class Variant:
    """One configuration: an agent, its options and search options (the engine's phases, the observation)."""

    agent: str = "ddpg"
    agent_options: dict[str, Any] = field(default_factory=dict)
    search_options: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    def key(self) -> str:
        return json.dumps([self.agent, self.agent_options, self.search_options], sort_keys=True)


CMA_REFINE = {"refine_episodes": 60, "refine_method": "cmaes"}
"""``adc.search``'s refinement since 2026-11-29 at 200 episodes (three tenths, by CMA-ES): the rows run on top of it."""


VARIANTS: dict[str, Variant] = {
    "ddpg (baseline)": Variant(note="the defaults before 2026-11-29 (refinement: a tenth, Gaussian)"),
    "observe bounds": Variant(search_options={"observe_bounds": True},
                              note="the clipping's interval at the unit in the observation"),
    "sigma 0.2 -> 0.02": Variant(agent_options={"noise_sigma": 0.2, "noise_final_sigma": 0.02},
                                 note="narrower exploration noise"),
    "sigma 0.3 -> 0.05": Variant(agent_options={"noise_sigma": 0.3}, note="narrower first noise"),
    "warmup 20": Variant(agent_options={"warmup": 20}, note="fewer random warm-up episodes (default: a quarter, at most 100)"),
    "clone best (warm start)": Variant(agent_options={"clone_best": 50, "clone_once": True},
                                       note="actor regressed onto the best warm-up episode once"),
    "clone best every round": Variant(agent_options={"clone_best": 20},
                                      note="self-imitation: actor regressed onto the best episode so far"),
    "updates x2": Variant(agent_options={"updates_per_step": 2.0}, note="two gradient steps per transition"),
    "updates x0.5": Variant(agent_options={"updates_per_step": 0.5}, note="one gradient step per two transitions"),
    "td3": Variant(agent="td3", note="twin critics, delayed actor, target smoothing"),
    "refine 30%": Variant(search_options={"refine_episodes": 60}, note="a larger Gaussian refinement phase (of 200)"),
    "refine 30% by CMA-ES": Variant(search_options=CMA_REFINE,
                                    note="that refinement done by CMA-ES from the best policy (refine_method)"),
    "CMA-ES refine, sigma held at 0.5": Variant(
        agent_options={"noise_final_sigma": 0.5}, search_options=CMA_REFINE,
        note="the default since 2026-11-29 (refine 30% by CMA-ES) with exploration noise that does not decay"),
    "CMA-ES refine, sigma 0.5 -> 0.2": Variant(
        agent_options={"noise_final_sigma": 0.2}, search_options=CMA_REFINE,
        note="the default since 2026-11-29 with noise decaying to 0.2 instead of 0.05"),
    "CMA-ES refine, td3": Variant(agent="td3", search_options=CMA_REFINE,
                                  note="the default since 2026-11-29 with TD3 in place of DDPG"),
    "random": Variant(agent="random", note="reference"),
    "cmaes": Variant(agent="cmaes", note="reference"),
    "tpe": Variant(agent="tpe", note="reference"),
}
"""Label -> variant, in the order of the table."""


class HideBounds(gym.ObservationWrapper):
    """The synthetic environment without the clipping's interval in its observation (as the real one by default)."""

    def observation(self, observation: np.ndarray) -> np.ndarray:
        observation = observation.copy()
        observation[5:7] = 0.0
        return observation


# -- synthetic part ------------------------------------------------------------------------


def search_options(variant: Variant, episodes: int) -> dict[str, Any]:
    """The variant's search options over the baseline's: the engine's refinement before 2026-11-29 (a tenth of the
    episodes, by Gaussian steps; ``adc.search``'s default since is the "refine 30% by CMA-ES" row), so the cached
    cells of every variant keep meaning what they were run with."""
    return {**earlier_refinement(episodes), **variant.search_options}


def _phases(variant: Variant, episodes: int, can_exploit: bool) -> tuple[int, int, int]:
    from adc.engine.loop import phase_plan

    o = search_options(variant, episodes)
    return phase_plan(episodes, 1, can_exploit, o.get("exploit_episodes"), o["refine_episodes"])


def synthetic_cell(variant: Variant, kind: str, budget: float, seed: int, episodes: int) -> dict[str, Any]:
    """One search of the synthetic environment with the engine's phases: gap closed at the end and at :data:`CHECKPOINT`."""
    from adc.agents import CMARefiner, Refiner, make_agent
    from adc.envs.vec_env import PruningVecEnv

    env = make_env(kind, budget)
    true = getattr(env, "true_reward", env.reward_of)
    uniform, optimum = true(env.uniform_actions()), env.optimum()
    shown = env if variant.search_options.get("observe_bounds") else HideBounds(env)
    envs = PruningVecEnv([lambda: shown])
    started = time.perf_counter()
    agent = make_agent(variant.agent, envs, episodes=episodes, seed=seed, **variant.agent_options)
    explore, exploit, refine = _phases(variant, episodes, agent.can_exploit)
    history: list[dict[str, Any]] = []

    def on_episode(info: dict[str, Any]) -> bool:
        history.append({"reward": float(info["reward"]), "actions": list(info["actions"])})
        return True

    agent.run(explore, on_episode)
    if exploit:
        agent.run(exploit, on_episode, explore=False)
    if refine and search_options(variant, episodes)["refine_method"] == "cmaes":
        centre = max(history, key=lambda h: h["reward"])["actions"]
        CMARefiner(envs, centre, episodes=refine, seed=seed + explore + exploit).run(refine, on_episode)
    elif refine:
        best = lambda: max(history, key=lambda h: h["reward"])  # noqa: E731 - the engine's best record
        Refiner(envs, best, episodes=refine, seed=seed + explore + exploit).run(refine, on_episode)
    seconds = time.perf_counter() - started

    def closed(n: int) -> float:
        best = max(history[:n], key=lambda h: h["reward"])  # chosen on the (noisy) reward, judged on the true one
        return (true(best["actions"]) - uniform) / (optimum - uniform)

    return {"score": closed(len(history)), "score_at_checkpoint": closed(CHECKPOINT), "seconds": seconds,
            "episodes": len(history)}


# -- real part -----------------------------------------------------------------------------


class RealBench:
    """The Fashion-MNIST splits and the cached reference models, loaded once."""

    def __init__(self) -> None:
        from adc.inputs.data import example_input, load_data

        self.splits = load_data(DATA)
        self.x = example_input(self.splits)
        self._models: dict[str, Any] = {}

    def model(self, name: str) -> Any:
        from adc.inputs.pretrained import is_trained
        from benchmarks.run import load_reference

        if name not in self._models:
            if not is_trained(f"zoo:{name}", DATA, epochs=8):
                raise SystemExit(f"zoo:{name} has no cached 8-epoch {DATA} reference in $ADC_CACHE_DIR/models "
                                 f"({os.environ.get('ADC_CACHE_DIR', '~/.cache/adc')}); this harness trains none")
            self._models[name] = load_reference(name, self.splits)[0]
        return self._models[name]

    def cell(self, variant: Variant, model: str, budget: float, seed: int, episodes: int) -> dict[str, Any]:
        """One ``adc.search``: best search reward, the final selection's held-out top-1, seconds per episode."""
        from adc.engine.loop import search

        started = time.perf_counter()
        result = search(self.model(model), self.x, data=self.splits, budget=[f"flops={budget}"], agent=variant.agent,
                        episodes=episodes, seed=seed, round_to=1, agent_options=dict(variant.agent_options),
                        **search_options(variant, episodes))
        seconds = time.perf_counter() - started
        history = result.history
        chosen = result.selection[0] if result.selection else None
        return {
            "best_reward": max(h["reward"] for h in history),
            "best_reward_at_checkpoint": max(h["reward"] for h in history[:CHECKPOINT]),
            "heldout_top1": chosen["holdout_top1"] if chosen else None,
            "chosen_reward": float(result.reward),
            "episode_s": sum(h["wall_time"] for h in history) / len(history),
            "search_s": seconds,
            "episodes": len(history),
            "curve": [round(h["best_reward"], 4) for h in history],
        }


# -- cache and driver ----------------------------------------------------------------------


def cell_path(part: str, variant: Variant, cell: tuple[str, float], seed: int, episodes: int) -> Path:
    key = json.dumps([part, variant.key(), list(cell), seed, episodes], sort_keys=True)
    return CACHE / f"{part}-{hashlib.sha256(key.encode()).hexdigest()[:14]}.json"


def cached(part: str, variant: Variant, cell: tuple[str, float], seed: int, episodes: int) -> dict[str, Any] | None:
    path = cell_path(part, variant, cell, seed, episodes)
    return json.loads(path.read_text()) if path.is_file() else None


def run(args: argparse.Namespace, labels: list[str], cells: list[tuple[str, float]]) -> bool:
    """Run every missing cell of these variants (seed-major, so every variant gets its seeds in turn); False if time ran out."""
    from adc.utils.files import atomic_write_text

    deadline = time.perf_counter() + 60 * args.minutes
    bench = RealBench() if args.part == "real" else None
    for seed in range(args.seeds):
        for label in labels:
            variant = VARIANTS[label]
            for cell in cells:
                path = cell_path(args.part, variant, cell, seed, args.episodes)
                if path.is_file():
                    continue
                if time.perf_counter() > deadline:
                    return False
                if bench is not None:
                    result = bench.cell(variant, cell[0], cell[1], seed, args.episodes)
                    text = f"reward {result['best_reward']:.4f}, held-out {result['heldout_top1']}"
                else:
                    result = synthetic_cell(variant, cell[0], cell[1], seed, args.episodes)
                    text = f"closed {result['score']:.3f}"
                CACHE.mkdir(parents=True, exist_ok=True)
                atomic_write_text(path, json.dumps(result))
                print(f"{label} | {cell[0]} {cell[1]} | seed {seed}: {text}, {result.get('seconds', result.get('search_s')):.0f} s",
                      flush=True)
    return True


# -- report --------------------------------------------------------------------------------


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _paired(values: list[float], base: list[float]) -> str:
    """Mean paired difference against the baseline and its standard error."""
    diffs = [a - b for a, b in zip(values, base) if a is not None and b is not None]
    if len(diffs) < 2:
        return ""
    return f"{statistics.fmean(diffs):+.3f} ± {statistics.stdev(diffs) / len(diffs) ** 0.5:.3f}"


def collect(part: str, cells: list[tuple[str, float]], seeds: int, episodes: int) -> dict[str, list[dict | None]]:
    """Label -> the cached results, cell-major then seed (None where missing)."""
    return {label: [cached(part, v, cell, seed, episodes) for cell in cells for seed in range(seeds)]
            for label, v in VARIANTS.items()}


def report(args: argparse.Namespace, real_cells: list[tuple[str, float]]) -> tuple[str, str]:
    """The markdown page and the CSV rows from every cached cell."""
    syn = collect("synthetic", ENVS, args.seeds, args.episodes)
    real = collect("real", real_cells, args.seeds, args.real_episodes)
    base_syn = [c["score"] if c else None for c in syn["ddpg (baseline)"]]
    base_real = [c["heldout_top1"] if c else None for c in real["ddpg (baseline)"]]
    head = ("| variant | synthetic gap closed (mean) | Δ vs baseline (paired) | at 30% budgets | at episode 100 | "
            "s/search | " + " | ".join(f"{m} {b} reward / held-out top-1" for m, b in real_cells)
            + " | real Δ held-out vs baseline | s/episode |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    rows = []
    n = args.seeds
    for label, variant in VARIANTS.items():
        s_cells, r_cells = syn[label], real[label]
        if not any(s_cells) and not any(r_cells):
            continue
        scores = [c["score"] if c else None for c in s_cells]
        complete = all(c is not None for c in s_cells)
        tight = [c["score"] for i, c in enumerate(s_cells) if c and ENVS[i // n][1] == 0.3]
        syn_text = [f"{_mean(scores):.3f}" + ("" if complete else " (partial)") if any(s_cells) else "",
                    _paired(scores, base_syn) if label != "ddpg (baseline)" else "",
                    f"{_mean(tight):.3f}" if tight else "",
                    f"{_mean([c['score_at_checkpoint'] for c in s_cells if c]):.3f}" if any(s_cells) else "",
                    f"{_mean([c['seconds'] for c in s_cells if c]):.1f}" if any(s_cells) else ""]
        real_text = []
        for j, cell in enumerate(real_cells):
            got = [c for c in r_cells[j * n:(j + 1) * n] if c]
            real_text.append(f"{_mean([c['best_reward'] for c in got]):.4f} / {_mean([c['heldout_top1'] for c in got]):.4f}"
                             + (f" ({len(got)} seeds)" if len(got) < n else "") if got else "")
        held = [c["heldout_top1"] if c else None for c in r_cells]
        real_delta = _paired(held, base_real) if label != "ddpg (baseline)" and any(r_cells) else ""
        per_episode = _mean([c["episode_s"] for c in r_cells if c])
        lines.append(f"| {label} | " + " | ".join(syn_text + real_text) + f" | {real_delta} | "
                     + (f"{per_episode:.2f}" if per_episode else "") + " |")
        rows.append({"variant": label, "agent": variant.agent, "agent_options": json.dumps(variant.agent_options),
                     "search_options": json.dumps(variant.search_options), "note": variant.note,
                     "synthetic_mean": _mean(scores), "synthetic_tight_mean": _mean(tight),
                     "synthetic_at_100": _mean([c["score_at_checkpoint"] for c in s_cells if c]),
                     **{f"synthetic_{k}_{b}": _mean([c["score"] if c else None for c in s_cells[i * n:(i + 1) * n]])
                        for i, (k, b) in enumerate(ENVS)},
                     **{f"{m}_{b}_reward": _mean([c["best_reward"] for c in r_cells[j * n:(j + 1) * n] if c])
                        for j, (m, b) in enumerate(real_cells)},
                     **{f"{m}_{b}_heldout_top1": _mean([c["heldout_top1"] for c in r_cells[j * n:(j + 1) * n] if c])
                        for j, (m, b) in enumerate(real_cells)},
                     "real_episode_s": per_episode})
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return "\n".join(lines), out.getvalue()


NOTES = RESULTS / "ddpg_ablation_notes.md"
"""The hand-written reading of the table, included in the page."""


def page(args: argparse.Namespace, table: str, real_seeds: int) -> str:
    """The results page: how it was made, what the columns mean, the table, the notes."""
    intro = [
        "# ddpg ablations: one change at a time", "",
        f"Made by `python -m benchmarks.ablate_ddpg --out benchmarks/results/ddpg_ablation` after the runs "
        f"(`--part synthetic --seeds {args.seeds} --episodes {args.episodes}`"
        + (f" and `--part real --seeds {real_seeds} --real-episodes {args.real_episodes} --models {args.models} "
           f"--budgets {args.budgets}`" if real_seeds else "; the real part not yet run: its columns are empty")
        + "); the module's docstring says how each part is run.", "",
        f"- **synthetic**: share of the uniform-to-optimum gap closed by the best of {args.episodes} episodes "
        f"(engine phases: explore, a tenth noise-free, a tenth refinement by Gaussian steps unless the variant "
        f"says), mean over the 8 environments of "
        f"`benchmarks/rivals_tuning.py` x {args.seeds} seeds; the observation hides the clipping's interval unless "
        "the variant observes it (as the real environment). *Δ vs baseline*: mean paired difference (same "
        "environment and seed) ± its standard error. *at 30% budgets*: the four tight cells. *at episode 100*: "
        "the best of the first 100 episodes. *s/search*: seconds of one search (the agent's overhead).",
        f"- **real**: `adc.search` on the Fashion-MNIST reference (8 epochs), FLOPs budget, {args.real_episodes} "
        f"episodes, defaults but `round_to=1`, {real_seeds or args.seeds} seeds: the best search reward (top-1 on the reward's "
        "1,000 validation images) / the held-out top-1 of the policy the final selection hands back "
        "(8 best re-scored on the next 5,000 validation images). *real Δ*: paired held-out difference "
        "± standard error over the real cells and seeds. *s/episode*: wall seconds per episode (one core, a "
        "shared machine: indicative).", "",
    ]
    notes = NOTES.read_text() if NOTES.is_file() else ""
    return "\n".join(intro) + table + "\n" + ("\n" + notes if notes else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ablate_ddpg", description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("synthetic", "real"), default="synthetic")
    parser.add_argument("--only", action="append", default=None, help="variants whose label starts with this")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=200, help="synthetic episodes")
    parser.add_argument("--real-episodes", type=int, default=100)
    parser.add_argument("--models", default="plain20", help="comma-separated zoo names (real part)")
    parser.add_argument("--budgets", default="0.3,0.5", help="comma-separated FLOPs fractions (real part)")
    parser.add_argument("--envs", default=None, help="comma-separated KIND@BUDGET synthetic cells (default: all eight)")
    parser.add_argument("--minutes", type=float, default=9.0, help="start no cell after this many minutes")
    parser.add_argument("--out", type=Path, default=None, help="write the page (.md) and the rows (.csv) here")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    real_cells = [(m, float(b)) for m in args.models.split(",") for b in args.budgets.split(",")]
    if args.out is not None:
        from adc.utils.files import atomic_write_text

        table, rows = report(args, real_cells)
        real_seeds = max((seed + 1 for v in VARIANTS.values() for cell in real_cells for seed in range(args.seeds)
                          if cached("real", v, cell, seed, args.real_episodes)), default=0)
        atomic_write_text(args.out.with_suffix(".md"), page(args, table, real_seeds))
        atomic_write_text(args.out.with_suffix(".csv"), rows)
        print(table)
        return 0
    labels = [k for k in VARIANTS if not args.only or any(k.startswith(o) for o in args.only)]
    if args.part == "real":
        cells = real_cells
        args.episodes = args.real_episodes
    else:
        cells = ENVS if not args.envs else [(c.split("@")[0], float(c.split("@")[1])) for c in args.envs.split(",")]
    done = run(args, labels, cells)
    print("all cells done" if done else "time is up: run the same command again to continue")
    return 0


if __name__ == "__main__":
    sys.exit(main())
