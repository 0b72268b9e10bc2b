"""Benchmark v2's row cache keys: a row is found again exactly when its settings are the same."""

from __future__ import annotations

import dataclasses

import pytest

from benchmarks.v2 import MODES, VARIANTS, cache_dir


def test_rows_of_a_strategy_that_does_not_learn_ignore_the_learning_agents_settings():
    full = MODES["full"]
    earlier = dataclasses.replace(full, refine_episodes=20, refine_method="gaussian", observe_bounds=True)
    for strategy in ("uniform", "sensitivity", "random", "cmaes", "tpe"):
        assert cache_dir("full", full, strategy) == cache_dir("full", earlier, strategy)
    assert cache_dir("full", full, "ddpg") != cache_dir("full", earlier, "ddpg")


def test_an_unset_refinement_keys_as_the_count_it_resolves_to():
    full = MODES["full"]
    assert full.refine_episodes is None
    assert cache_dir("full", full, "ddpg") == cache_dir("full", dataclasses.replace(full, refine_episodes=60), "ddpg")
    assert cache_dir("full", full, "ddpg") != cache_dir("full", dataclasses.replace(full, refine_episodes=20), "ddpg")


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_a_variant_changes_its_strategies_rows_and_is_compared_with_its_own_default(name):
    variant, full = VARIANTS[name], MODES["full"]
    for strategy in variant.strategies:
        assert cache_dir("full", variant.apply(full), strategy) != cache_dir("full", variant.default(full), strategy)
    assert variant.apply(full) == dataclasses.replace(variant.default(full), **variant.changes)
