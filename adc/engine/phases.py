"""A search's phases: exploration, then for a learning agent noise-free exploitation and a refinement.

:func:`phase_plan` splits the episodes; :func:`play_phases` plays them, each
phase taking up where the history (a resumed search's included) left off.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from adc.agents import Agent, CMARefiner, Refinement, Refiner
from adc.engine.options import SearchOptions
from adc.engine.records import Record
from adc.envs.vec_env import PruningVecEnv


def default_refine_episodes(episodes: int) -> int:
    """Episodes of a learning agent's refinement when ``refine_episodes`` is not set: three tenths.

    On benchmark v2's six cells, 60 of 200 episodes refined by CMA-ES from the
    best policy beat the earlier tenth by Gaussian steps by +0.24 +- 0.10 points
    of test top-1 over 18 paired searches; it lost only on ResNet-56 at 50%
    FLOPs (``benchmarks/results/v2_ddpg-refine-cma-60.md``).
    """
    return max(1, episodes * 3 // 10)


def phase_plan(episodes: int, workers: int, can_exploit: bool, exploit: int | None,
               refine: int | None) -> tuple[int, int, int]:
    """Episodes of exploration, exploitation and refinement.

    A learning agent plays its noise-free policy for a tenth of the episodes
    (``exploit``), then refines the best policy for the last three tenths
    (``refine``, :func:`default_refine_episodes`); the explore and exploit
    phases are whole rounds of ``workers`` episodes, the refinement takes the
    rest.
    """
    if not can_exploit:
        return episodes, 0, 0
    n_exploit = max(1, episodes // 10) if exploit is None else max(0, min(episodes - 1, exploit))
    n_refine = default_refine_episodes(episodes) if refine is None else max(0, refine)
    n_refine = min(n_refine, max(0, episodes - n_exploit - 1))
    n_explore = episodes - n_exploit - n_refine
    if workers > 1:
        n_explore = max(workers, n_explore // workers * workers)
        n_exploit = min(-(-n_exploit // workers) * workers, max(0, (episodes - n_explore) // workers * workers))
        n_refine = max(0, episodes - n_explore - n_exploit)
    return n_explore, n_exploit, n_refine


def play_phases(agent: Agent, envs: PruningVecEnv, options: SearchOptions, *, episodes: int, start: int,
                history: list[Record], on_episode: Callable[[dict[str, Any]], bool], on_round: Callable[[], bool],
                going: Callable[[], bool], best: Callable[[], Record],
                best_of: Callable[[list[Record]], Record]) -> None:
    """Play ``episodes`` from history row ``start``: exploration, then exploitation and refinement.

    Args:
        agent: The strategy.
        envs: Its environments.
        options: The settings (phase lengths, refinement method, seed, workers).
        episodes: Episodes of this point (a front's point, or the whole search).
        start: The history row this point's episodes start at.
        history: The search's records so far (grows as episodes finish).
        on_episode: Called with each finished episode's info; False stops at the round end.
        on_round: Called after each round; False stops.
        going: False once the search was asked to stop.
        best: The best record so far (the Gaussian refinement steps around it).
        best_of: The best of some records (the CMA-ES refinement starts at the exploration's best).
    """
    o = options
    explore, exploit, refine = phase_plan(episodes, o.workers, agent.can_exploit, o.exploit_episodes,
                                          o.refine_episodes)

    def played() -> int:
        return len(history) - start

    if played() < explore:
        agent.run(explore - played(), on_episode, explore=True, on_round=on_round)
    if going() and exploit and played() < explore + exploit:
        agent.run(explore + exploit - played(), on_episode, explore=False, on_round=on_round)
    if going() and refine and played() < episodes:
        phase_start = start + explore + exploit
        refiner: Refinement
        if o.refine_method == "cmaes":
            centre = best_of(history[:phase_start])["actions"]
            refiner = CMARefiner(envs, centre, episodes=refine, seed=o.seed + explore + exploit,
                                 told=[r["reward"] for r in history[phase_start:]])
        else:
            refiner = Refiner(envs, best, episodes=refine, seed=o.seed + explore + exploit,
                              done=played() - explore - exploit)
        refiner.run(episodes - played(), on_episode, on_round=on_round)
