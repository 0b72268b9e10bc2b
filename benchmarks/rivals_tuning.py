"""How the black-box rivals' defaults were chosen: ``python -m benchmarks.rivals_tuning [--only LABEL] [--out FILE]``.

Every configuration searches the synthetic pruning environment of the tests
(``tests/synthetic_env.py``: a known optimum, microseconds an episode) with
the same episode count as the Fashion-MNIST benchmark (200), over several
seeds and several environments:

- ``hard6``: the agent tests' six units (sensitive units early and late).
- ``spread12`` / ``spread30``: 12 and 30 units (resnet20's and resnet56's
  counts) with sensitivities spread over two decades and unequal costs.
- ``noisy12``: ``spread12`` with a fixed pseudo-random error on every policy's
  reward (as a 1,000-image validation score has: the same policy always gets
  the same error), its size a tenth of the uniform policy's gap to the optimum.

Budgets 0.5 and 0.3 of the cost. The score of a search is the share of the
gap between the uniform policy and the optimum that its best episode closes
(0: no better than uniform, 1: the optimum), judged on the true reward
(without the error). The table holds the mean over seeds and the worst seed.

Each configuration's score on each environment is cached
(``benchmarks/cache/rivals_tuning/``), so the table can be built in parts
(``--only LABEL --envs KIND@BUDGET``, a few minutes each: TPE and ddpg take
seconds a search, CMA-ES and random a fraction of one) and written whole at
the end (``--out FILE``: every configuration whose cells are all cached, in
the order of :data:`CONFIGS`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from synthetic_env import SyntheticPruningEnv  # noqa: E402

from adc.agents import make_agent  # noqa: E402
from adc.envs.vec_env import PruningVecEnv  # noqa: E402
from adc.utils.files import atomic_write_text  # noqa: E402

ENVS = [("hard6", 0.5), ("hard6", 0.3), ("spread12", 0.5), ("spread12", 0.3), ("spread30", 0.5), ("spread30", 0.3),
        ("noisy12", 0.5), ("noisy12", 0.3)]

HARD_SENSITIVITIES = [0.02, 2.0, 0.1, 1.0, 0.05, 0.5]

CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "random": ("random", {}),
    "ddpg": ("ddpg", {}),
    "cmaes (default: proposal, sigma0 0.1)": ("cmaes", {}),
    "cmaes applied": ("cmaes", {"learn_from": "applied"}),
    "cmaes sigma0 0.05": ("cmaes", {"sigma0": 0.05}),
    "cmaes sigma0 0.2": ("cmaes", {"sigma0": 0.2}),
    "cmaes popsize 6": ("cmaes", {"popsize": 6}),
    "cmaes popsize 20": ("cmaes", {"popsize": 20}),
    "tpe (default: applied, multivariate, startup 10)": ("tpe", {}),
    "tpe proposal": ("tpe", {"learn_from": "proposal"}),
    "tpe univariate": ("tpe", {"multivariate": False}),
    "tpe startup 5": ("tpe", {"startup": 5}),
    "tpe startup 20": ("tpe", {"startup": 20}),
}
"""Each searching agent's defaults and the alternatives tried (label -> agent and options)."""
CACHE = Path(__file__).resolve().parent / "cache" / "rivals_tuning"


class NoisyPruningEnv(SyntheticPruningEnv):
    """The synthetic environment with a fixed error per policy (a hash of its rounded actions)."""

    def __init__(self, *args: Any, noise: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.noise = noise

    def reward_of(self, actions: Sequence[float]) -> float:
        key = np.round(np.asarray(actions, dtype=np.float64), 3).tobytes()
        error = np.random.default_rng(zlib.crc32(key)).normal(0.0, self.noise)
        return super().reward_of(actions) + float(error)

    def true_reward(self, actions: Sequence[float]) -> float:
        return SyntheticPruningEnv.reward_of(self, actions)


def make_env(kind: str, budget: float) -> SyntheticPruningEnv:
    """One of the environments of the module docs."""
    if kind == "hard6":
        return SyntheticPruningEnv(num_units=6, budget=budget, sensitivities=HARD_SENSITIVITIES)
    units = 30 if kind == "spread30" else 12
    costs = np.random.default_rng(units).uniform(0.5, 2.0, units)
    env = SyntheticPruningEnv(num_units=units, budget=budget, costs=costs, seed=units)
    if kind == "noisy12":
        clean = env
        gap = clean.optimum() - clean.reward_of(clean.uniform_actions())
        env = NoisyPruningEnv(num_units=units, budget=budget, costs=costs, seed=units, noise=0.1 * gap)
    return env


def score(kind: str, budget: float, agent: str, options: dict[str, Any], seed: int, episodes: int) -> float:
    """The share of the uniform-to-optimum gap the search's best episode closes (true reward)."""
    env = make_env(kind, budget)
    true = getattr(env, "true_reward", env.reward_of)
    uniform, optimum = true(env.uniform_actions()), env.optimum()
    searcher = make_agent(agent, PruningVecEnv([lambda: env]), episodes=episodes, seed=seed, **options)
    infos: list[dict[str, Any]] = []
    searcher.run(episodes, lambda info: infos.append(info) or True)
    if searcher.can_exploit:  # as the search does: a few noise-free episodes
        searcher.run(3, lambda info: infos.append(info) or True, explore=False)
    best = max(infos, key=lambda i: i["reward"])  # chosen on the (noisy) reward, judged on the true one
    return (true(best["actions"]) - uniform) / (optimum - uniform)


def _cell_path(agent: str, options: dict[str, Any], cell: tuple[str, float], seeds: range, episodes: int) -> Path:
    key = json.dumps([agent, options, list(cell), list(seeds), episodes], sort_keys=True)
    return CACHE / f"{hashlib.sha256(key.encode()).hexdigest()[:12]}.json"


def run_cell(agent: str, options: dict[str, Any], cell: tuple[str, float], seeds: range, episodes: int) -> dict[str, Any]:
    """One configuration on one environment: the score of every seed and the seconds a search took; cached."""
    path = _cell_path(agent, options, cell, seeds, episodes)
    if path.is_file():
        return json.loads(path.read_text())
    started = time.perf_counter()
    scores = [score(*cell, agent, options, seed, episodes) for seed in seeds]
    result = {"scores": scores, "seconds": (time.perf_counter() - started) / len(seeds)}
    CACHE.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(result))
    return result


def table_line(label: str, cells: list[dict[str, Any]]) -> str:
    """A table row from the cells of one configuration."""
    means = [statistics.fmean(c["scores"]) for c in cells]
    text = [f"{m:.3f} ({min(c['scores']):.2f})" for m, c in zip(means, cells)]
    seconds = statistics.fmean(c["seconds"] for c in cells)
    return f"| {label} | " + " | ".join(text) + f" | {statistics.fmean(means):.3f} | {seconds:.1f} |"


def _parse_try(text: str) -> tuple[str, dict[str, Any]]:
    agent, _, rest = text.partition(":")
    return agent, dict(item.split("=", 1) for item in rest.split(",") if item)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.rivals_tuning", description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--only", action="append", default=None, help="run only configurations starting with this")
    parser.add_argument("--try", dest="tries", action="append", default=None, metavar="AGENT:KEY=VALUE,...",
                        help="run this configuration instead of the list (repeatable), e.g. cmaes:sigma0=0.1,popsize=6")
    parser.add_argument("--envs", default=None, help="comma-separated KIND@BUDGET cells (default: all eight)")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the table of every configuration whose row is cached to this markdown file")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    seeds = range(args.seeds)
    envs = ENVS
    if args.envs:
        envs = [(cell.split("@")[0], float(cell.split("@")[1])) for cell in args.envs.split(",")]
    configs = {k: v for k, v in CONFIGS.items() if not args.only or any(k.startswith(o) for o in args.only)}
    if args.tries:
        configs = {text: _parse_try(text) for text in args.tries}
    head = "| configuration | " + " | ".join(f"{k} {b}" for k, b in envs) + " | mean | s/search |"
    lines = ["# The rivals' settings on the synthetic pruning environment", "",
             f"Made by `python -m benchmarks.rivals_tuning --seeds {args.seeds} --out FILE` (see its docstring for the "
             "environments). Share of the uniform-to-optimum gap closed by the best of "
             f"{args.episodes} episodes, mean over {len(seeds)} seeds (worst seed in brackets); s/search: seconds "
             "one search took (agent overhead: the environment costs microseconds).", "",
             head, "|" + "---|" * (len(envs) + 3)]
    print("\n".join(lines), flush=True)
    if args.out is None or args.only or args.tries:
        for label, (agent, options) in configs.items():
            cells = [run_cell(agent, options, cell, seeds, args.episodes) for cell in envs]
            print(table_line(label, cells), flush=True)
    if args.out:
        for label, (agent, options) in CONFIGS.items():
            paths = [_cell_path(agent, options, cell, seeds, args.episodes) for cell in envs]
            if all(p.is_file() for p in paths):
                lines.append(table_line(label, [json.loads(p.read_text()) for p in paths]))
        atomic_write_text(args.out, "\n".join(lines) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
