"""Fine-tuning a pruned model: the library call, the run-folder call and the CLI command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from adc.analysis.cost import cost_of_kept, count
from adc.analysis.graph import analyze
from adc.inputs.finetune import distillation_loss, finetune, kept_epoch
from adc.inputs.models import build_model, load_checkpoint
from adc.inputs.training import evaluate
from adc.pruning.pruner import prune
from adc.pruning.serialization import load
from adc.pruning.soft import soft_prune
from adc.pruning.sparsity import SPARSITY
from adc.run.config import RunConfig
from adc.run.finetune_run import SparseTraining, finetune_run, train_run
from adc.run.pipeline import run_search
from adc.utils.errors import AdcError

FINETUNED_FILE, SETTINGS_FILE = "model_finetuned.pt", "finetune.json"


@pytest.fixture(scope="module")
def run_dir(trained_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished search folder: the default model (plain20 on digits) pruned uniformly to half its FLOPs."""
    out = tmp_path_factory.mktemp("ft") / "run"
    config = RunConfig.from_values({"agent": "uniform", "episodes": 1, "budget": ["flops=0.5"], "bn_calibration": 128,
                                    "val_size": 100})
    run_search(config, out=out)
    return out


def _kept_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_finetune_records_epochs_and_returns_best(trained, digits, digits_input) -> None:
    pruned = prune(trained, digits_input, _half(trained, digits_input))
    before = evaluate(pruned, digits.test)["top1"]
    seen: list[dict] = []
    best, records = finetune(pruned, digits, epochs=2, lr=0.01, seed=0, progress=seen.append)
    assert [r["epoch"] for r in records] == [0, 1, 2]
    assert [r["epoch"] for r in seen] == [1, 2]
    assert records[0]["test_top1"] == pytest.approx(before)
    assert all(0.0 <= r["test_top1"] <= 1.0 and r["train_loss"] > 0 for r in records[1:])
    assert records[1]["lr"] == pytest.approx(0.01) and records[2]["lr"] < 0.01  # cosine schedule
    kept = kept_epoch(records)
    assert kept["val_top1"] == max(r["val_top1"] for r in records)  # chosen on validation, never on test
    assert evaluate(best, digits.val)["top1"] == pytest.approx(kept["val_top1"])
    assert evaluate(best, digits.test)["top1"] == pytest.approx(kept["test_top1"])
    assert _kept_shapes(best) == _kept_shapes(pruned)
    assert best.adc_pruning == pruned.adc_pruning and not best.training
    # The input model is left untouched.
    assert evaluate(pruned, digits.test)["top1"] == pytest.approx(before)


def _half(model: torch.nn.Module, x: torch.Tensor) -> dict[str, float]:
    from adc.analysis.graph import analyze

    return {u.name: 0.5 for u in analyze(model, x).units}


def test_distillation_loss_matches_hinton() -> None:
    torch.manual_seed(0)
    s, t, y = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))
    p = torch.softmax(t / 4, 1)
    kl = (p * (torch.log(p) - torch.log_softmax(s / 4, 1))).sum(1).mean()
    expected = 0.9 * 16 * kl + 0.1 * torch.nn.functional.cross_entropy(s, y)
    assert distillation_loss(s, t, y, temperature=4.0, alpha=0.9).item() == pytest.approx(expected.item(), rel=1e-5)
    assert distillation_loss(s, s, y, temperature=2.0, alpha=1.0).item() == pytest.approx(0.0, abs=1e-6)


def test_finetune_never_hands_back_a_worse_model(trained, digits, digits_input) -> None:
    from adc.inputs.training import recalibrate_bn

    pruned = prune(trained, digits_input, _half(trained, digits_input))
    recalibrate_bn(pruned, torch.stack([digits.train[i][0] for i in range(256)]))
    before = evaluate(pruned, digits.val)["top1"]
    assert before > 0.2
    best, records = finetune(pruned, digits, epochs=1, lr=2.0, momentum=0.0, seed=0)  # a rate that wrecks it
    assert records[1]["val_top1"] < before  # training made it worse ...
    assert kept_epoch(records)["epoch"] == 0  # ... so the model it was given is kept
    assert evaluate(best, digits.val)["top1"] == pytest.approx(before)


def test_finetune_run_saves_best_loadable_with_same_structure(run_dir: Path) -> None:
    out, summary = finetune_run(run_dir, epochs=1)
    assert out == run_dir / FINETUNED_FILE
    original, tuned = load(run_dir / "model.pt"), load(out)
    assert _kept_shapes(tuned) == _kept_shapes(original)
    assert tuned.adc_pruning["kept"] == original.adc_pruning["kept"]
    settings = json.loads((run_dir / SETTINGS_FILE).read_text())
    assert settings["epochs"] == 1 and settings["data"] == "digits" and settings["distill"] is False
    assert all(not isinstance(v, (dict, list)) for v in settings.values())  # one flat object
    assert settings == summary and settings["selected_on"] == "validation top-1" and settings["threads"] == 1
    assert 0.0 < settings["test_top1_kept"] <= 1.0 and settings["kept_epoch"] in (0, 1)
    assert settings["val_top1_kept"] >= settings["val_top1_before"]
    from adc.inputs.data import load_data

    assert evaluate(tuned, load_data("digits").test)["top1"] == pytest.approx(settings["test_top1_kept"])


def test_finetune_run_distills(run_dir: Path) -> None:
    finetune_run(run_dir, epochs=1, distill=True)
    settings = json.loads((run_dir / SETTINGS_FILE).read_text())
    assert settings["distill"] is True and settings["temperature"] == 4.0 and settings["alpha"] == 0.9
    assert settings["test_top1_kept"] > 0.5


@pytest.mark.parametrize("kwargs, match", [
    ({"epochs": 0}, "at least 1 epoch"),
    ({"epochs": 1, "lr": 0.0}, "learning rate"),
    ({"epochs": 1, "data": "no-such-data"}, "no-such-data"),
    ({"epochs": 1, "alpha": 2.0}, "alpha"),
])
def test_finetune_run_bad_settings(run_dir: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(AdcError, match=match) as excinfo:
        finetune_run(run_dir, **kwargs)
    assert "\n" not in str(excinfo.value)


def test_finetune_run_bad_folders(tmp_path: Path) -> None:
    with pytest.raises(AdcError, match="does not exist"):
        finetune_run(tmp_path / "missing", epochs=1)
    with pytest.raises(AdcError, match="no model.pt"):
        finetune_run(tmp_path, epochs=1)


def test_finetune_command(run_dir: Path) -> None:
    from adc.cli.finetune import finetune_command

    app = typer.Typer()
    app.command("finetune")(finetune_command)
    app.command("noop")(lambda: None)  # two commands, so "finetune" is a subcommand as in adc.cli
    result = CliRunner().invoke(app, ["finetune", str(run_dir), "--epochs", "1", "--lr", "0.005", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "chosen on validation" in result.output
    assert json.loads((run_dir / SETTINGS_FILE).read_text())["lr"] == 0.005
    bad = CliRunner().invoke(app, ["finetune", str(run_dir), "--epochs", "0"])
    assert isinstance(bad.exception, AdcError)


# -- sparse training and soft filter pruning ----------------------------------------------------------


@pytest.mark.parametrize("name", SPARSITY.names())
def test_sparsity_regulariser_shrinks_what_it_targets(name, trained, digits, digits_input) -> None:
    graph = analyze(trained, digits_input)
    method = SPARSITY.get(name)
    common = dict(epochs=1, lr=0.01, seed=0, train_samples=600, keep_last=True)
    plain, _ = finetune(trained, digits, **common)
    sparse, _ = finetune(trained, digits, extra_loss=method.regulariser(graph, 0.05), **common)
    with torch.no_grad():
        before, without, with_it = (float(method.penalty(m, graph)) for m in (trained, plain, sparse))
    assert with_it < without and with_it < before and without - with_it > 0.005 * before, (before, without, with_it)


def test_soft_pruning_moves_its_mask_and_prunes_for_real(trained, digits, digits_input) -> None:
    graph = analyze(trained, digits_input)
    kept = {u.name: u.kept(0.5) for u in graph.units}
    result = soft_prune(trained, digits_input, kept, digits, epochs=2, lr=0.01, seed=0, train_samples=600)
    assert len(result.masks) == 3 and all(len(m) == len(kept) for m in result.masks)
    moved = [sum(set(a[u]) != set(b[u]) for u in a) for a, b in zip(result.masks, result.masks[1:])]
    assert any(moved), "the zeroed channels never changed"
    for mask in result.masks:  # always exactly channels - kept zeroed per unit
        assert all(len(mask[u.name]) == u.channels - kept[u.name] for u in graph.units)
    pruned = result.model
    predicted = np.array([kept[u.name] for u in graph.units], dtype=np.float64)
    assert count(pruned, digits_input).flops == cost_of_kept(graph, predicted).flops < count(trained, digits_input).flops
    mask = result.masks[result.kept_epoch]
    assert {u: sorted(set(range(graph.unit(u).channels)) - set(pruned.adc_pruning["kept"][u])) for u in mask} == mask
    # The zeroed model it chose on validation scored exactly what the pruned one scores.
    assert evaluate(pruned, digits.val)["top1"] == pytest.approx(result.records[result.kept_epoch]["val_top1"])
    assert evaluate(trained, digits.val)["top1"] > 0.5  # the input model is untouched


def test_train_run_sparse_checkpoint_feeds_a_later_search(trained_checkpoint, tmp_path) -> None:
    out, summary = train_run("zoo:plain20", tmp_path / "sparse", checkpoint=str(trained_checkpoint), data="digits",
                             shaping=SparseTraining("slimming", 1e-3), epochs=1, train_samples=600)
    assert out == tmp_path / "sparse" / "model.pt" and (tmp_path / "sparse" / SETTINGS_FILE).is_file()
    assert summary["sparsity_target_after"] < summary["sparsity_target_before"]
    assert summary["selected_on"].startswith("the last epoch") and summary["kept_epoch"] == 1
    config = RunConfig.from_values({"model": "zoo:plain20", "checkpoint": str(out), "agent": "uniform", "episodes": 1,
                                    "bn_calibration": 64, "val_size": 100})
    result, folder = run_search(config, out=tmp_path / "search")
    assert result.metrics["flops_ratio"] <= 0.5 + 1e-9 and folder.model.is_file()


def test_train_run_soft_prunes_to_the_budget(trained_checkpoint, digits_input, tmp_path) -> None:
    out, summary = train_run("zoo:plain20", tmp_path / "soft", checkpoint=str(trained_checkpoint), data="digits",
                             shaping=SparseTraining(soft=True), budget=["flops=0.5"], epochs=1, train_samples=300)
    pruned = load(out)
    original = load_checkpoint(build_model("zoo:plain20", num_classes=10, in_channels=1), trained_checkpoint)
    assert count(pruned, digits_input).flops <= 0.5 * count(original, digits_input).flops
    assert summary["soft"] is True and summary["budget"] == "flops=0.5"


def test_finetune_run_soft_keeps_the_search_widths(run_dir: Path) -> None:
    out, summary = finetune_run(run_dir, epochs=1, train_samples=300, shaping=SparseTraining(soft=True))
    assert _kept_shapes(load(out)) == _kept_shapes(load(run_dir / "model.pt"))
    assert summary["soft"] is True and isinstance(summary["soft_changed_channels"], str)


@pytest.mark.parametrize("kwargs, match", [
    ({"shaping": SparseTraining()}, "give --sparsity"),
    ({"shaping": SparseTraining(soft=True)}, "needs --budget"),
    ({"shaping": SparseTraining("slimming"), "budget": ["flops=0.5"]}, "needs --soft"),
])
def test_train_run_refuses_bad_combinations(kwargs, match, tmp_path) -> None:
    with pytest.raises(AdcError, match=match) as excinfo:
        train_run("zoo:plain20", tmp_path / "x", data="digits", epochs=1, **kwargs)
    assert "\n" not in str(excinfo.value) and not (tmp_path / "x").exists()


@pytest.mark.parametrize("kwargs, match", [
    ({"sparsity": "l0"}, "unknown sparsity regulariser 'l0'; valid: group_lasso, slimming"),
    ({"sparsity": "slimming", "strength": -1.0}, "--sparsity-strength -1.0: must be a positive number"),
    ({"strength": 1e-4}, "give --sparsity too"),
])
def test_sparse_training_settings_are_checked(kwargs, match) -> None:
    with pytest.raises(AdcError, match=match):
        SparseTraining(**kwargs)


def test_finetune_command_trains_a_model_from_its_checkpoint(trained_checkpoint, tmp_path) -> None:
    from adc.cli import main

    out = tmp_path / "sparse"
    with pytest.raises(SystemExit) as exit_info:
        main(["finetune", "--model", "zoo:plain20", "--checkpoint", str(trained_checkpoint), "--data", "digits",
              "--sparsity", "group_lasso", "--sparsity-strength", "0.01", "--epochs", "1", "--train-samples", "300",
              "--out", str(out)])
    assert exit_info.value.code in (0, None)
    assert load(out / "model.pt") is not None and json.loads((out / SETTINGS_FILE).read_text())["sparsity"] == "group_lasso"


@pytest.mark.parametrize("args, match", [
    (["--epochs", "1"], "give a run folder"),
    (["--model", "zoo:plain20"], "needs --out"),
])
def test_finetune_command_refuses_bad_doors(args, match, capsys) -> None:
    from adc.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["finetune", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1
