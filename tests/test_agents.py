"""Tests of the search agents on the synthetic pruning environment."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch as th
from gymnasium.utils.env_checker import check_env

from adc.agents import AGENTS, REFINE_METHODS, CMARefiner, OffPolicyAgent, Refiner, load_agent, make_agent
from adc.agents.noise import NoiseSchedule, truncated_normal
from adc.envs.vec_env import PruningVecEnv
from adc.utils.errors import AdcError
from synthetic_env import SyntheticPruningEnv

RL_AGENTS = ["ddpg", "sac", "td3"]
BLACK_BOX = ["cmaes", "tpe"]
ONE_EPISODE = {name for name in AGENTS.names() if AGENTS.get(name).one_policy}  # deterministic: one episode in all
PROBING = {name for name in AGENTS.names() if AGENTS.get(name).probes}  # their probes count against the episodes
SMALL = {"hidden": (32, 32), "warmup": 2}  # fast networks for the functional tests
# Sensitive units early and late, cheap ones in between: random search rarely gets all right.
HARD_SENSITIVITIES = [0.02, 2.0, 0.1, 1.0, 0.05, 0.5]


def small_options(name: str) -> dict:
    return dict(SMALL) if name in RL_AGENTS else {}


def vec(env: SyntheticPruningEnv) -> PruningVecEnv:
    """The one-environment vector env agents act on."""
    return PruningVecEnv([lambda: env])


def agent_on(name: str, env: SyntheticPruningEnv, **kwargs):
    return make_agent(name, vec(env), **kwargs)


def play(agent, episodes: int, *, explore: bool = True) -> list[dict]:
    infos: list[dict] = []
    agent.run(episodes, lambda info: infos.append(info) or True, explore=explore)
    return infos


@pytest.fixture
def env() -> SyntheticPruningEnv:
    return SyntheticPruningEnv(num_units=5, budget=0.5, seed=1)


# -- the synthetic environment ----------------------------------------------------------


def test_synthetic_env_passes_gymnasium_checker(env):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env, skip_render_check=True)


def test_synthetic_env_clips_every_policy_onto_the_budget(env):
    rng = np.random.default_rng(0)
    for _ in range(50):
        env.reset()
        for _ in range(env.num_units):
            _, reward, terminated, _, info = env.step(np.array([rng.uniform()], dtype=np.float32))
        assert terminated and info["reward"] == reward
        assert info["cost"] == pytest.approx(env.budget)
        assert env.budget_fits(info["actions"])
    assert env.budget_fits(env.uniform_actions())
    assert env.evaluate_actions([env.uniform_actions()])[0] < env.optimum()


# -- the interface, for every agent -------------------------------------------------------


def test_registry_holds_every_agent():
    assert AGENTS.names() == ["cmaes", "ddpg", "global", "netadapt", "random", "sac", "sensitivity", "td3", "tpe",
                              "uniform"]
    assert ONE_EPISODE == {"global", "netadapt", "sensitivity", "uniform"} and PROBING == {"netadapt", "sensitivity"}


def test_unknown_agent_names_the_valid_ones(env):
    with pytest.raises(AdcError, match="valid: cmaes, ddpg, global, netadapt, random"):
        agent_on("ppo", env, episodes=4)


@pytest.mark.parametrize("name", AGENTS.names())
def test_unknown_option_names_the_valid_ones(name, env):
    with pytest.raises(AdcError, match="unknown option 'bogus'.*valid"):
        agent_on(name, env, episodes=4, bogus=1)


def test_options_from_the_command_line_are_converted(env):
    agent = agent_on("ddpg", env, episodes=8, warmup="2", hidden="16,16", actor_lr="1e-4")
    assert agent.options.hidden == (16, 16) and agent.warmup == 2
    with pytest.raises(AdcError, match="warmup='many'.*int"):
        agent_on("ddpg", env, episodes=8, warmup="many")
    with pytest.raises(AdcError, match="ent_coef"):
        agent_on("sac", env, episodes=8, ent_coef="lots")


@pytest.mark.parametrize("name", AGENTS.names())
def test_agent_plays_its_episodes_within_budget(name, env):
    agent = agent_on(name, env, episodes=10, seed=0, **small_options(name))
    infos = play(agent, 10)
    assert len(infos) == (1 if name in ONE_EPISODE else 10)
    for info in infos:
        assert env.budget_fits(info["actions"])
        assert len(info["actions"]) == env.num_units
        assert "terminal_observation" not in info
    if name in PROBING:
        assert env.evaluations <= 10
        assert infos[0]["agent"]["evaluations"] == env.evaluations


@pytest.mark.parametrize("name", ["ddpg", "random", "sac", "cmaes", "tpe"])
def test_on_episode_returning_false_stops_the_run(name, env):
    agent = agent_on(name, env, episodes=10, **small_options(name))
    calls = []
    agent.run(10, lambda info: calls.append(info) or len(calls) < 3)
    assert len(calls) == 3 and agent.episodes_done == 3


@pytest.mark.parametrize("name", AGENTS.names())
def test_same_seed_same_actions(name):
    def actions(seed: int) -> list[list[float]]:
        env = SyntheticPruningEnv(num_units=5, budget=0.5, seed=1)
        return [info["actions"] for info in play(agent_on(name, env, episodes=8, seed=seed, **small_options(name)), 8)]

    first = actions(0)
    assert actions(0) == first
    if name not in ONE_EPISODE:
        assert actions(1) != first


@pytest.mark.parametrize("name", AGENTS.names())
def test_save_and_load_resume_where_the_run_stopped(name, tmp_path):
    def fresh_env() -> SyntheticPruningEnv:
        return SyntheticPruningEnv(num_units=5, budget=0.5, seed=1)

    options = small_options(name)
    straight = [i["actions"] for i in play(agent_on(name, fresh_env(), episodes=8, seed=3, **options), 8)]

    agent = agent_on(name, fresh_env(), episodes=8, seed=3, **options)
    first = [i["actions"] for i in play(agent, 4)]
    agent.save(tmp_path / "agent")
    resumed = load_agent(tmp_path / "agent", vec(fresh_env()))
    assert type(resumed) is type(agent)
    assert resumed.episodes_done == agent.episodes_done
    if isinstance(agent, OffPolicyAgent):
        assert resumed.algo.replay_buffer.size() == agent.algo.replay_buffer.size() == 4 * 5
        assert resumed.baseline.value == agent.baseline.value
    rest = [i["actions"] for i in play(resumed, 4)]
    assert first + rest == straight


def test_loading_a_folder_without_an_agent_says_so(tmp_path, env):
    with pytest.raises(AdcError, match="agent.json is missing"):
        load_agent(tmp_path, vec(env))


# -- the AMC parts of the RL agents -------------------------------------------------------


@pytest.mark.parametrize("name", RL_AGENTS)
def test_replay_buffer_holds_the_applied_action(name, env):
    agent = agent_on(name, env, episodes=6, **SMALL)
    infos = play(agent, 6)
    buffer = agent.algo.replay_buffer
    stored = (buffer.actions[: buffer.size(), 0, 0] + 1) / 2  # SB3 stores actions scaled to [-1, 1]
    applied = np.concatenate([info["actions"] for info in infos])
    np.testing.assert_allclose(stored, applied, atol=1e-6)
    proposed_last_unit = np.array([info["proposed_action"] for info in infos])
    assert not np.allclose(proposed_last_unit, applied[env.num_units - 1 :: env.num_units])


@pytest.mark.parametrize("name", RL_AGENTS)
def test_every_transition_carries_final_reward_minus_baseline(name, env):
    agent = agent_on(name, env, episodes=8, baseline_decay=0.9, **SMALL)
    buffer = agent.algo.replay_buffer
    units = env.num_units
    baseline: list[float] = []
    seen: list[int] = []

    def check(info: dict) -> bool:
        reward = info["reward"]
        before = baseline[-1] if baseline else reward
        baseline.append(0.9 * before + 0.1 * reward)
        episode = slice(buffer.pos - units, buffer.pos)
        np.testing.assert_allclose(buffer.rewards[episode, 0], reward - before, rtol=1e-5, atol=1e-6)
        assert (buffer.dones[episode, 0] == 1).all()
        seen.append(1)
        return True

    agent.run(8, check)
    assert len(seen) == 8
    assert agent.baseline.value == pytest.approx(baseline[-1])


@pytest.mark.parametrize("name", RL_AGENTS)
def test_actor_and_critic_keep_their_own_learning_rates(name, env):
    agent = agent_on(name, env, episodes=6, **SMALL)
    play(agent, 6)
    algo = agent.algo
    assert algo._n_updates > 0
    assert [g["lr"] for g in algo.actor.optimizer.param_groups] == [1e-4]
    assert [g["lr"] for g in algo.critic.optimizer.param_groups] == [1e-3]


def test_ddpg_is_configured_as_amc(env):
    agent = agent_on("ddpg", env, episodes=400)
    algo = agent.algo
    assert agent.warmup == 100 and algo.learning_starts == 100 * env.num_units
    assert (algo.tau, algo.batch_size, algo.gamma, algo.gradient_steps) == (0.01, 64, 1.0, -1)
    assert [m.out_features for m in algo.actor.mu if isinstance(m, th.nn.Linear)] == [300, 300, 1]
    assert [m.out_features for m in algo.critic.qf0 if isinstance(m, th.nn.Linear)] == [300, 300, 1]
    assert len(algo.critic.q_networks) == 1
    assert agent.noise.sigma(0) == pytest.approx(0.5)
    assert agent.noise.sigma(299) == pytest.approx(0.05)
    assert agent_on("ddpg", env, episodes=40).warmup == 10


@pytest.mark.parametrize("name", RL_AGENTS)
def test_first_warmup_episode_plays_the_uniform_policy(name, env):
    first, second = play(agent_on(name, env, episodes=6, **SMALL), 2)
    assert first["agent"]["phase"] == "uniform" and second["agent"]["phase"] == "warmup"
    np.testing.assert_allclose(first["actions"], env.uniform_actions(), atol=1e-6)
    assert not np.allclose(second["actions"], env.uniform_actions(), atol=1e-3)
    off = play(agent_on(name, env, episodes=6, start_uniform=False, **SMALL), 1)[0]
    assert off["agent"]["phase"] == "warmup"
    assert not np.allclose(off["actions"], env.uniform_actions(), atol=1e-3)


@pytest.mark.parametrize("name", RL_AGENTS)
def test_warmup_sigma_draws_warmup_actions_around_the_uniform_policy(name, env):
    uniform = np.asarray(env.uniform_actions())
    spread = {}
    for sigma in (None, 0.05):
        episodes = play(agent_on(name, env, episodes=8, warmup=4, warmup_sigma=sigma, hidden=(16, 16)), 4)[1:]
        assert all(e["agent"]["phase"] == "warmup" for e in episodes)
        spread[sigma] = np.mean([np.abs(np.asarray(e["actions"]) - uniform).max() for e in episodes])
    assert spread[0.05] < 0.25 < spread[None]
    with pytest.raises(AdcError, match="warmup_sigma=1.5.*\\(0, 1\\]"):
        agent_on(name, env, episodes=8, warmup_sigma=1.5)


def test_exploitation_episodes_play_the_actor_without_noise(env):
    agent = agent_on("ddpg", env, episodes=6, **SMALL)
    play(agent, 6)
    agent.algo.learning_starts = 10**9  # freeze learning to compare two noise-free episodes
    first, second = play(agent, 2, explore=False)
    assert first["actions"] == second["actions"]
    assert first["agent"]["phase"] == "exploit"
    env.reset()
    obs, _ = env.reset()
    assert 0.0 <= agent.predict(obs) <= 1.0


def test_truncated_normal_noise_stays_in_bounds_and_decays():
    rng = np.random.default_rng(0)
    draws = truncated_normal(rng, np.full(1000, 0.9), 0.5, np.zeros(1), np.ones(1))
    assert draws.min() >= 0 and draws.max() <= 1 and 0.6 < draws.mean() < 0.8
    schedule = NoiseSchedule(0.5, 0.05, episodes=100)
    assert schedule.sigma(0) == 0.5 and schedule.sigma(99) == pytest.approx(0.05)
    assert schedule.sigma(500) == pytest.approx(0.05)


# -- the black-box rivals (CMA-ES, TPE) -------------------------------------------------


def two_envs() -> PruningVecEnv:
    return PruningVecEnv([lambda: SyntheticPruningEnv(num_units=5, budget=0.5, seed=1) for _ in range(2)])


@pytest.mark.parametrize("name", BLACK_BOX)
def test_black_box_agents_start_from_the_uniform_policy(name, env):
    first, second = play(agent_on(name, env, episodes=6), 2)
    np.testing.assert_allclose(first["actions"], env.uniform_actions(), atol=1e-9)
    assert not np.allclose(second["actions"], env.uniform_actions(), atol=1e-3)


@pytest.mark.parametrize("name", BLACK_BOX)
def test_black_box_agents_resume_exactly_with_two_environments(name, tmp_path):
    straight = [i["actions"] for i in play(make_agent(name, two_envs(), episodes=12, seed=2), 12)]
    agent = make_agent(name, two_envs(), episodes=12, seed=2)
    first = [i["actions"] for i in play(agent, 6)]
    agent.save(tmp_path / "agent")
    rest = [i["actions"] for i in play(load_agent(tmp_path / "agent", two_envs()), 6)]
    assert first + rest == straight


def test_black_box_resume_refuses_a_replay_that_draws_other_policies(tmp_path, env):
    agent = agent_on("cmaes", env, episodes=8, seed=0)
    play(agent, 3)
    agent.save(tmp_path / "agent")
    record = json.loads((tmp_path / "agent" / "agent.json").read_text())
    record["state"]["rounds"][1][0]["proposal"][0] += 1e-3
    (tmp_path / "agent" / "agent.json").write_text(json.dumps(record))
    with pytest.raises(AdcError, match="cannot resume the 'cmaes' agent.*drew different policies"):
        load_agent(tmp_path / "agent", vec(SyntheticPruningEnv(num_units=5, budget=0.5, seed=1)))


def test_cmaes_plays_the_same_policies_whatever_the_number_of_environments():
    one = [i["actions"] for i in play(make_agent("cmaes", vec(SyntheticPruningEnv(num_units=5, seed=1)),
                                                 episodes=12, seed=0, popsize=5), 12)]
    infos = play(make_agent("cmaes", two_envs(), episodes=12, seed=0, popsize=5), 12)
    assert [i["actions"] for i in infos] == one
    assert [i["agent"]["generation"] for i in infos] == [0] * 5 + [1] * 5 + [2] * 2  # rounds stop at generation ends


def test_cmaes_default_population_fills_every_round(env):
    agent = make_agent("cmaes", two_envs(), episodes=20, seed=0)
    assert agent.es.popsize % 2 == 0 and agent.es.popsize >= 4 + int(3 * np.log(5))


def test_black_box_agents_leave_global_random_state_and_logging_alone(env):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.INFO)
    state = np.random.get_state()[1].copy()
    for name in BLACK_BOX:
        play(agent_on(name, SyntheticPruningEnv(num_units=5, seed=1), episodes=12, seed=0), 12)
    assert (np.random.get_state()[1] == state).all()
    assert optuna.logging.get_verbosity() == optuna.logging.INFO
    optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.mark.parametrize(("name", "options", "message"), [
    ("cmaes", {"learn_from": "both"}, "learn_from='both'.*valid: applied, proposal"),
    ("cmaes", {"sigma0": "0"}, "sigma0=0.0.*in \\(0, 1\\]"),
    ("cmaes", {"popsize": "1"}, "popsize=1.*at least 2"),
    ("tpe", {"startup": "0"}, "startup=0.*at least 1"),
    ("tpe", {"learn_from": "raw"}, "learn_from='raw'"),
])
def test_black_box_options_are_checked(name, options, message, env):
    with pytest.raises(AdcError, match=message):
        agent_on(name, env, episodes=8, **options)


def test_black_box_options_from_the_command_line_are_converted(env):
    cmaes = agent_on("cmaes", env, episodes=8, popsize="6", sigma0="0.3", learn_from="applied")
    assert cmaes.es.popsize == 6 and cmaes.es.sigma0 == 0.3
    tpe = agent_on("tpe", env, episodes=8, multivariate="false", startup="4")
    assert tpe.options.multivariate is False and tpe.options.startup == 4


# -- search quality -----------------------------------------------------------------------


def test_sensitivity_allocation_is_near_optimal_on_a_separable_reward():
    env = SyntheticPruningEnv(num_units=6, budget=0.5, sensitivities=HARD_SENSITIVITIES)
    (info,) = play(agent_on("sensitivity", env, episodes=50), 50)
    assert info["reward"] > 0.95 * env.optimum()


@pytest.mark.parametrize("episodes", [13, 50])
def test_netadapt_counts_every_evaluation_against_the_episodes(episodes):
    env = SyntheticPruningEnv(num_units=6, budget=0.5, sensitivities=HARD_SENSITIVITIES)
    agent = agent_on("netadapt", env, episodes=episodes)
    (info,) = play(agent, episodes)
    assert info["agent"]["evaluations"] == env.evaluations <= episodes
    assert info["agent"]["iterations"] == agent.iterations() == (episodes - 1) // 6
    assert env.budget_fits(info["actions"]) and env.resource(info["actions"]) == pytest.approx(1.0)


def test_netadapt_spreads_what_its_iterations_leave_over_every_unit():
    # One iteration (7 evaluations, 6 units): no unit alone reaches 30%, so the rest is taken from every unit alike
    # rather than left to the budget clipping, which takes it from the last units.
    env = SyntheticPruningEnv(num_units=6, budget=0.3, sensitivities=HARD_SENSITIVITIES)
    agent = agent_on("netadapt", env, episodes=7)
    (info,) = play(agent, 7)
    assert info["agent"]["spread"] and info["agent"]["iterations"] == 1
    assert env.budget_fits(info["actions"]) and env.resource(info["actions"]) == pytest.approx(1.0, abs=1e-6)
    assert min(info["actions"]) > 0 and info["actions"] == pytest.approx(agent.allocation, abs=1e-6)  # no clipping


def test_netadapt_scores_each_iterations_proposals_in_one_batch():
    env = SyntheticPruningEnv(num_units=6, budget=0.5, sensitivities=HARD_SENSITIVITIES)
    batches = []
    evaluate = env.evaluate_actions
    env.evaluate_actions = lambda batch: batches.append(len(batch)) or evaluate(batch)
    play(agent_on("netadapt", env, episodes=50), 50)
    assert len(batches) == 8 and all(1 <= b <= 6 for b in batches)


def test_netadapt_comes_close_to_the_optimum_of_a_separable_reward():
    # Greedy in whole resource steps (a unit that cannot meet a step's target alone is no proposal), so not exact:
    # 0.69 of an optimum of 0.79 with 8 steps, where uniform pruning gets 0.08.
    env = SyntheticPruningEnv(num_units=6, budget=0.5, sensitivities=HARD_SENSITIVITIES)
    (info,) = play(agent_on("netadapt", env, episodes=50), 50)
    uniform = env.evaluate_actions([env.uniform_actions()])[0]
    assert info["reward"] > 0.85 * env.optimum() and info["reward"] > uniform + 0.5


def test_global_threshold_meets_the_budget_exactly_and_prunes_cheap_units_first():
    env = SyntheticPruningEnv(num_units=6, budget=0.5, sensitivities=HARD_SENSITIVITIES)
    agent = agent_on("global", env, episodes=5)
    (info,) = play(agent, 5)
    threshold = info["agent"]["threshold"]
    assert env.budget_fits(env.threshold_actions(threshold))
    assert not env.budget_fits(env.threshold_actions(threshold * (1 - 1e-6)))  # the smallest threshold that fits
    assert env.evaluations == 1  # the played episode only
    raw = np.asarray(env.threshold_actions(threshold))
    ratio = np.asarray(HARD_SENSITIVITIES) / env.costs
    assert raw[np.argmin(ratio)] >= raw[np.argmax(ratio)]
    uniform = env.evaluate_actions([env.uniform_actions()])[0]
    assert info["reward"] > uniform


def test_threshold_actions_are_monotone_and_start_at_nothing_pruned(env):
    thresholds = np.linspace(0.0, 3.0, 31)
    actions = np.array([env.threshold_actions(t) for t in thresholds])
    assert (actions[0] == 0).all() and (actions[-1] == 1).all()
    assert (np.diff(actions, axis=0) >= 0).all()


def test_ddpg_beats_random_search_and_uniform_with_the_same_episodes():
    episodes = 200

    def best(name: str, seed: int) -> float:
        env = SyntheticPruningEnv(num_units=6, budget=0.5, sensitivities=HARD_SENSITIVITIES)
        agent = agent_on(name, env, episodes=episodes, seed=seed)
        rewards = [i["reward"] for i in play(agent, episodes)]
        if agent.can_exploit:  # the search cashes in the learned policy with a few noise-free episodes
            rewards += [i["reward"] for i in play(agent, 3, explore=False)]
        return max(rewards)

    ddpg = best("ddpg", 0)
    random_best = max(best("random", seed) for seed in range(3))
    uniform = best("uniform", 0)
    assert ddpg > random_best + 0.05, (ddpg, random_best)
    assert ddpg > uniform + 0.5, (ddpg, uniform)


def best_of(name: str, seed: int, episodes: int = 200) -> float:
    """The best reward of a search on the hard synthetic environment, cashing in a learned policy as the search does."""
    env = SyntheticPruningEnv(num_units=6, budget=0.5, sensitivities=HARD_SENSITIVITIES)
    agent = agent_on(name, env, episodes=episodes, seed=seed)
    rewards = [i["reward"] for i in play(agent, episodes)]
    if agent.can_exploit:
        rewards += [i["reward"] for i in play(agent, 3, explore=False)]
    return max(rewards)


@pytest.mark.parametrize("name", BLACK_BOX)
def test_black_box_agents_beat_uniform_and_random_search_with_the_same_episodes(name):
    env = SyntheticPruningEnv(num_units=6, budget=0.5, sensitivities=HARD_SENSITIVITIES)
    uniform = env.evaluate_actions([env.uniform_actions()])[0]
    found = best_of(name, 0)
    assert found > uniform + 0.5, (found, uniform)
    assert found > max(best_of("random", seed) for seed in range(3)) + 0.05
    assert found > 0.95 * env.optimum()


def refine_from_uniform(method: str, env: SyntheticPruningEnv, episodes: int, seed: int) -> list[dict]:
    """A refinement phase started at the uniform policy: the history (uniform first), as the engine records it."""
    envs = vec(env)
    uniform = env.uniform_actions()
    history = [{"actions": uniform, "reward": env.evaluate_actions([uniform])[0]}]

    def on_episode(info: dict) -> bool:
        history.append({"actions": list(info["actions"]), "reward": info["reward"]})
        return True

    if method == "cmaes":
        CMARefiner(envs, uniform, episodes=episodes, seed=seed).run(episodes, on_episode)
    else:
        Refiner(envs, lambda: max(history, key=lambda h: h["reward"]), episodes=episodes, seed=seed).run(
            episodes, on_episode)
    return history


@pytest.mark.parametrize("method", REFINE_METHODS)
def test_refinement_improves_on_its_start_within_budget_and_is_seeded(method):
    make = lambda: SyntheticPruningEnv(num_units=6, budget=0.5, sensitivities=HARD_SENSITIVITIES)  # noqa: E731
    history = refine_from_uniform(method, make(), 40, seed=3)
    assert len(history) == 41
    assert all(make().budget_fits(h["actions"]) for h in history)
    assert max(h["reward"] for h in history) > history[0]["reward"] + 0.3, [h["reward"] for h in history[:3]]
    again = refine_from_uniform(method, make(), 40, seed=3)
    assert [h["actions"] for h in again] == [h["actions"] for h in history]
