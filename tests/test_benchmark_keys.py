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


def test_the_ddpg_rows_are_played_by_the_learner_setting_and_the_default_keeps_its_key():
    full = MODES["full"]
    assert full.learner == "ddpg" and full.agent("ddpg") == "ddpg" and full.agent("cmaes") == "cmaes"
    swapped = dataclasses.replace(full, learner="td3")
    assert swapped.agent("ddpg") == "td3" and swapped.agent("tpe") == "tpe"
    assert cache_dir("full", swapped, "ddpg") != cache_dir("full", full, "ddpg")
    assert cache_dir("full", swapped, "uniform") == cache_dir("full", full, "uniform")
    # adding the field kept the folders the committed pages' rows were cached in
    assert (cache_dir("full", full, "ddpg").name, cache_dir("full", full, "uniform").name) == (
        "v2-full-106d117c73", "v2-full-497d0920ad")


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
    assert variant.apply(full).finetune_seeds == variant.default(full).finetune_seeds == 1  # seed 0 both sides


def test_a_row_is_fine_tuned_once_per_seed_and_its_own_seed_keeps_its_file(tmp_path):
    from benchmarks.run import Row
    from benchmarks.v2 import finetune_path, finetune_seeds

    full = MODES["full"]
    assert finetune_seeds(full, Row("resnet20", 0.5, "ddpg", 1)) == [1]
    assert finetune_seeds(dataclasses.replace(full, finetune_seeds=1), Row("resnet20", 0.5, "ddpg", 1)) == []
    uniform = Row("resnet20", 0.5, "uniform", 0)
    assert finetune_seeds(full, uniform) == [0, 1, 2]
    paths = [finetune_path(tmp_path, full, uniform, seed) for seed in (0, 1, 2)]
    assert len(set(paths)) == 3
    assert paths[0] == finetune_path(tmp_path, full, uniform)  # the name cached before fine-tunes were repeated
    # the number of fine-tune seeds is not part of a fine-tune's key: more seeds reuse the ones already run
    assert finetune_path(tmp_path, dataclasses.replace(full, finetune_seeds=1), uniform) == paths[0]


def test_the_fine_tuned_column_averages_every_fine_tune_of_a_strategy():
    from benchmarks.report_v2 import groups
    from benchmarks.v2 import with_finetunes

    def row(strategy, seed, tunes):
        base = {"model": "m", "budget_flops": 0.5, "strategy": strategy, "seed": seed, "test_top1_pruned": 0.9,
                "heldout_curve": [{"episode": 1, "heldout_top1": 0.9}], "macs_fraction": 0.5, "search_wall_s": 1.0,
                "episodes": 1, "evaluations": 1, "test_top1_unpruned": 0.95}
        return with_finetunes(base, {s: {"test_top1_finetuned": v} for s, v in tunes.items()})

    records = [row("uniform", 0, {0: 0.90, 1: 0.92, 2: 0.94}), row("ddpg", 0, {0: 0.91}), row("ddpg", 1, {1: 0.93}),
               row("ddpg", 2, {})]
    by = {g["strategy"]: g for g in groups(records)}
    assert by["uniform"]["n_ft"] == 3 and by["uniform"]["test_top1_finetuned"] == pytest.approx(0.92)
    assert by["uniform"]["test_top1_finetuned_std"] == pytest.approx(0.02)
    assert by["ddpg"]["n_ft"] == 2 and by["ddpg"]["test_top1_finetuned"] == pytest.approx(0.92)
    assert records[0]["test_top1_finetuned"] == 0.90  # the row's own fields are its first fine-tune's
