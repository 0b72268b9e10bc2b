"""The benchmark harness: every suite is runnable as declared, rows are found again exactly, pages say what ran."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from adc.agents import AGENTS
from adc.engine.options import SearchOptions
from adc.objective.budgets import parse_budget
from adc.pruning.criteria import CRITERIA
from benchmarks import synthetic
from benchmarks.harness import Cell, Row, Runner, Settings, Suite, Variant
from benchmarks.reporter import COLUMNS, paired, verdict, write_page
from benchmarks.suites import SUITES, suite
from conftest import TEST_EPOCHS

OPTION_FIELDS = {f.name for f in dataclasses.fields(SearchOptions)}


@pytest.mark.parametrize("name", sorted(SUITES))
def test_every_suite_is_declared_with_names_adc_knows(name: str) -> None:
    s = SUITES[name]
    names = [v.name for v in s.variants]
    assert len(names) == len(set(names)) and s.baseline in names
    for variant in s.variants:
        assert variant.agent in AGENTS.names(), variant
        assert set(dict(variant.options)) <= OPTION_FIELDS, variant
        if "criterion" in dict(variant.options):
            assert dict(variant.options)["criterion"] in CRITERIA.names()
    for cell in s.cells:
        if cell.model.startswith("synthetic:"):
            assert cell.model.split(":", 1)[1] in synthetic.KINDS and cell.budget.startswith("cost=")
        else:
            parse_budget(cell.budget)
            assert cell.model.split(":", 1)[0] in ("zoo", "torchvision")
    keys = [r.key(s.settings) for r in s.rows()]
    assert len(keys) == len(set(keys)), "two rows of a suite share a cache file"


def test_an_unknown_suite_names_the_valid_ones() -> None:
    from adc.utils.errors import AdcError

    with pytest.raises(AdcError, match="valid: .*rivals"):
        suite("rival")


def test_a_row_is_found_again_exactly_when_what_changes_its_numbers_is_the_same() -> None:
    cell, settings = Cell("zoo:plain20", "flops=0.5"), Settings()
    row = Row(cell, Variant("ddpg", "ddpg"), 0)
    assert row.key(settings) == Row(cell, Variant("ddpg", "ddpg", note="other words"), 0).key(settings)
    assert row.key(settings) == Row(cell, Variant("renamed", "ddpg"), 0).key(settings).replace("renamed", "ddpg")
    changed = [Row(cell, Variant("ddpg", "ddpg"), 1).key(settings),
               Row(Cell("zoo:plain20", "flops=0.3"), Variant("ddpg", "ddpg"), 0).key(settings),
               Row(cell, Variant("ddpg", "ddpg", (("reward", "loss"),)), 0).key(settings),
               row.key(dataclasses.replace(settings, episodes=100))]
    assert row.key(settings) not in changed and len(set(changed)) == len(changed)
    # a setting that does not apply to the rows keeps their key; once it applies, it counts
    assert row.key(dataclasses.replace(settings, calibration_images=64)) == row.key(settings)
    quantized = dataclasses.replace(settings, quantize=("int8",))
    assert row.key(quantized) != row.key(settings)
    assert row.key(dataclasses.replace(quantized, calibration_images=64)) != row.key(quantized)


def _rows(values: list[float], variant: str) -> list[dict]:
    return [{"seed": i, "variant": variant, "test_top1_pruned": v} for i, v in enumerate(values)]


def test_paired_comparison_and_verdicts_say_who_wins_by_how_much() -> None:
    top1 = next(c for c in COLUMNS if c.key == "test_top1_pruned")
    base = _rows([0.90, 0.91, 0.92], "uniform")
    better = paired(_rows([0.92, 0.93, 0.94], "ddpg"), base, "test_top1_pruned")
    assert better is not None and better[0] == pytest.approx(0.02) and better[2:] == (3, 3)
    assert "ddpg beats uniform" in verdict("ddpg", "uniform", better, top1) and "+2.00" in verdict(
        "ddpg", "uniform", better, top1)
    worse = paired(_rows([0.88, 0.90, 0.90], "ddpg"), base, "test_top1_pruned")
    assert "loses to" in verdict("ddpg", "uniform", worse, top1)
    noisy = paired(_rows([0.95, 0.86, 0.93], "ddpg"), base, "test_top1_pruned")  # +0.003 mean, spread 5 points
    assert "ties" in verdict("ddpg", "uniform", noisy, top1)
    once = paired(_rows([0.92, 0.93], "ddpg"), _rows([0.91], "uniform"), "test_top1_pruned")
    assert once is not None and once[3] == 2  # a deterministic baseline run once pairs with every seed


def test_a_synthetic_suite_runs_caches_and_writes_its_page(tmp_path) -> None:
    s = Suite("tiny-synthetic", "Does ddpg beat random on a known optimum?", (Cell("synthetic:hard6", "cost=0.5"),),
              (Variant("random", "random"), Variant("ddpg", "ddpg")), "random", Settings(episodes=12, seeds=2))
    records = Runner(s, cache=tmp_path / "cache", log=lambda m: None).run()
    assert len(records) == 4 and all(0.0 <= r["gap_closed"] <= 1.0 for r in records)
    assert all("gap_closed_at_100" not in r for r in records)  # fewer episodes than the checkpoint: not claimed
    again = Runner(s, cache=tmp_path / "cache", log=lambda m: None)
    again.measure = None  # type: ignore[assignment]  # a cached row must not be measured again
    assert again.run() == records
    md, table = write_page(s, records, command="test", elapsed_s=1.0, out_dir=tmp_path)
    page = md.read_text()
    assert "4 of 4 rows measured." in page and "ddpg" in page and "on gap closed" in page
    mean = sum(r["gap_closed"] for r in records if r["variant"] == "ddpg") / 2
    assert f"| ddpg | 2 | {mean:.3f} ± " in page  # the table shows what the rows hold
    assert table.read_text().count("\n") == 5


def test_a_model_suite_measures_the_model_it_hands_back(tmp_path, trained_checkpoint) -> None:
    """On the digits reference the tests trained: two strategies, a fine-tune and a timing, end to end."""
    s = Suite("tiny-digits", "Does random search beat uniform pruning?", (Cell("zoo:plain20", "flops=0.5"),),
              (Variant("uniform", "uniform", seeded=False), Variant("random", "random")), "uniform",
              Settings(data="digits", train_epochs=TEST_EPOCHS, episodes=3, seeds=1, val_size=200, bn_calibration=64,
                       select_top=0, select_size=None, finetune_epochs=1, finetune_samples=200, runtimes=("torch",),
                       timing_rounds=1, quantize=("int8",), calibration_images=64))
    records = Runner(s, cache=tmp_path / "cache", log=lambda m: None).run()
    assert [r["variant"] for r in records] == ["uniform", "random"]
    for r in records:
        assert "error" not in r, r
        assert r["flops_ratio"] <= 0.5 + 1e-3  # the budget, counted on the model handed back
        assert 0.0 < r["test_top1_pruned"] <= 1.0 and 0.0 < r["test_top1_finetuned"] <= 1.0
        assert r["torch_speedup"] > 0 and r["episodes"] >= 1
        assert r["ort_int8_size_ratio"] < r["ort_fp32_size_ratio"] < 1.0  # measured on the files
        assert abs(r["test_top1_int8"] - r["test_top1_ort_fp32"]) < 0.05 and r["test_top1_unpruned_int8"] > 0.5
    saved = json.loads(next((tmp_path / "cache").glob("plain20-flops0.5-random-s0-*.json")).read_text())
    assert saved == records[1]
    md, _ = write_page(s, records, command="test", elapsed_s=1.0, out_dir=tmp_path)
    assert "random" in md.read_text() and "torch speedup" in md.read_text() and "ORT int8 speedup" in md.read_text()


def test_a_variants_setting_wins_over_the_suites(tmp_path, monkeypatch) -> None:
    """``ddpg-no-bn-recal`` must search without BN recalibration although the suite recalibrates."""
    import adc

    seen: dict = {}

    def fake_search(model, x, **options):
        seen.update(options)
        raise adc.AdcError("stop here")

    monkeypatch.setattr(adc, "search", fake_search)
    s = Suite("t", "?", (Cell("zoo:plain20", "flops=0.5"),), (Variant("v", "ddpg", (("bn_calibration", 0),)),), "v",
              Settings(data="digits", train_epochs=TEST_EPOCHS, bn_calibration=512))
    runner = Runner(s, cache=tmp_path, log=lambda m: None)
    x = torch.zeros(1, 1, 8, 8)
    monkeypatch.setattr(runner, "model", lambda spec, prepare=None: (None, x, {"test_top1": 0.9}))
    record = runner.measure(s.rows()[0])
    assert seen["bn_calibration"] == 0 and seen["agent"] == "ddpg" and "stop here" in record["error"]
