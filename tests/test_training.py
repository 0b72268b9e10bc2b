"""Training, evaluation, adaptive BN and the trained-model cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import Subset

import adc.inputs.pretrained as pretrained
from adc.inputs.data import load_data, make_loader
from adc.utils.errors import AdcError
from adc.inputs.models import build_model, load_checkpoint
from adc.inputs.training import evaluate, recalibrate_bn, train_classifier


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


@pytest.fixture(scope="module")
def trained(digits):
    """vgg_small trained briefly on digits; tests copy it before changing it."""
    torch.manual_seed(0)
    model = build_model("zoo:vgg_small", num_classes=10, in_channels=1)
    return train_classifier(model, digits.train, epochs=4, seed=0)


def _copy(model: nn.Module) -> nn.Module:
    clone = build_model("zoo:vgg_small", num_classes=10, in_channels=1)
    clone.load_state_dict(model.state_dict())
    return clone.eval()


def test_train_classifier_learns_and_reports(digits, trained) -> None:
    losses: list[tuple[int, float]] = []
    torch.manual_seed(0)
    model = build_model("zoo:vgg_small", num_classes=10, in_channels=1)
    subset = Subset(digits.train, range(256))
    train_classifier(model, subset, epochs=3, seed=0, progress=lambda e, l: losses.append((e, l)))
    assert [e for e, _ in losses] == [1, 2, 3]
    assert losses[-1][1] < losses[0][1]
    assert not model.training
    assert evaluate(trained, digits.test)["top1"] > 0.9


def test_train_classifier_is_deterministic(digits) -> None:
    weights = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_model("zoo:vgg_small", num_classes=10, in_channels=1)
        train_classifier(model, Subset(digits.train, range(128)), epochs=1, seed=5)
        weights.append(model.fc.weight.detach().clone())
    assert torch.equal(weights[0], weights[1])


def test_train_classifier_bad_input(digits) -> None:
    model = build_model("zoo:vgg_small", num_classes=10, in_channels=1)
    with pytest.raises(AdcError, match="epochs"):
        train_classifier(model, digits.train, epochs=-1)
    before = model.fc.weight.detach().clone()
    train_classifier(model, digits.train, epochs=0)
    assert torch.equal(before, model.fc.weight)


def test_evaluate_fields_and_limits(digits, trained) -> None:
    full = evaluate(trained, digits.test)
    assert set(full) == {"top1", "top5", "loss", "samples"}
    assert full["samples"] == 360 and 0 <= full["top1"] <= full["top5"] <= 1 and full["loss"] > 0
    part = evaluate(trained, digits.test, max_samples=50, batch_size=16)
    assert part["samples"] == 50
    via_loader = evaluate(trained, make_loader(digits.test, batch_size=32), max_samples=50)
    assert via_loader["samples"] == 50 and via_loader["top1"] == pytest.approx(part["top1"])
    assert evaluate(trained, make_loader(digits.test, batch_size=100))["top1"] == pytest.approx(full["top1"])
    ready = [(x, y) for x, y in make_loader(digits.test, batch_size=64)]  # pre-batched, as the search does
    assert evaluate(trained, ready) == pytest.approx(full)
    assert evaluate(trained, ready, max_samples=50)["top1"] == pytest.approx(part["top1"])
    trained.train()
    evaluate(trained, digits.test, max_samples=10)
    assert trained.training  # the mode is restored
    trained.eval()
    with pytest.raises(AdcError, match="nothing to evaluate"):
        evaluate(trained, digits.test, max_samples=0)


def test_evaluate_top5_with_few_classes() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    data = torch.utils.data.TensorDataset(torch.randn(10, 1, 2, 2), torch.arange(10) % 3)
    result = evaluate(model, data)
    assert result["top5"] == 1.0  # top-3 of 3 classes always hits


def _corrupt_bn(model: nn.Module) -> None:
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.add_(torch.randn(m.running_mean.shape, generator=gen) * 3)
            m.running_var.mul_(20)


def test_recalibrate_bn_repairs_corrupted_stats(digits, trained) -> None:
    model = _copy(trained)
    before = evaluate(model, digits.val)["top1"]
    _corrupt_bn(model)
    corrupted = evaluate(model, digits.val)["top1"]
    assert corrupted < before - 0.2
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    old_mean = bns[0].running_mean.clone()
    images = torch.stack([digits.train[i][0] for i in range(513)])  # 513: the last batch of one is merged
    recalibrate_bn(model, images, batch_size=64)
    assert not torch.equal(old_mean, bns[0].running_mean)
    assert all(bn.momentum == 0.1 for bn in bns) and not model.training
    assert evaluate(model, digits.val)["top1"] > max(corrupted + 0.2, before - 0.05)
    # The statistics are an exact average over the images, whatever the batch size.
    again = _copy(model)
    recalibrate_bn(again, images, batch_size=100)
    first = [m for m in again.modules() if isinstance(m, nn.BatchNorm2d)][0]
    assert torch.allclose(first.running_mean, bns[0].running_mean, atol=1e-5)


def test_recalibrate_bn_without_bn_is_a_noop() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(4, 2)).train()
    before = model[2].weight.clone()
    assert recalibrate_bn(model, torch.randn(4, 1, 2, 2)) is model
    assert torch.equal(before, model[2].weight) and not model.training


def test_recalibrate_bn_needs_two_images(trained) -> None:
    with pytest.raises(AdcError, match="at least 2 images"):
        recalibrate_bn(_copy(trained), torch.zeros(1, 1, 8, 8))


def test_ensure_trained_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real_train = pretrained.train_classifier

    def counting_train(*args, **kwargs):
        calls.append(1)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(pretrained, "train_classifier", counting_train)
    rng_state = torch.get_rng_state()
    path = pretrained.ensure_trained("zoo:vgg_small", "fake:40", epochs=1, cache_dir=tmp_path)
    assert torch.equal(rng_state, torch.get_rng_state())  # the caller's global RNG is untouched
    assert path.is_file() and path.parent == tmp_path and calls == [1]
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["model"] == "zoo:vgg_small" and meta["epochs"] == 1 and 0 <= meta["test_top1"] <= 1
    assert not list(tmp_path.glob("*.tmp"))
    mtime = path.stat().st_mtime_ns
    assert pretrained.ensure_trained("zoo:vgg_small", "fake:40", epochs=1, cache_dir=tmp_path) == path
    assert calls == [1] and path.stat().st_mtime_ns == mtime  # nothing trained, nothing rewritten
    load_checkpoint(build_model("zoo:vgg_small", num_classes=10, in_channels=3), path)
    other = pretrained.ensure_trained("zoo:vgg_small", "fake:40", epochs=1, seed=1, cache_dir=tmp_path)
    assert other != path and calls == [1, 1]


def test_ensure_trained_is_reproducible(tmp_path: Path) -> None:
    a = pretrained.ensure_trained("zoo:vgg_small", "fake:40", epochs=1, cache_dir=tmp_path / "a")
    b = pretrained.ensure_trained("zoo:vgg_small", "fake:40", epochs=1, cache_dir=tmp_path / "b")
    sa, sb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_cache_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADC_CACHE_DIR", str(tmp_path))
    path = pretrained.cache_path("zoo:plain20", "digits", epochs=30)
    assert path.parent == tmp_path / "models" and path.suffix == ".pt"
    assert path != pretrained.cache_path("zoo:plain20", "digits", epochs=31)
    assert path != pretrained.cache_path("zoo:plain20", "digits", epochs=30, split_seed=1)


def test_defaults_build() -> None:
    splits = load_data(pretrained.DEFAULT_DATA)
    model = build_model(pretrained.DEFAULT_MODEL, num_classes=splits.num_classes, in_channels=splits.in_channels)
    assert pretrained.DEFAULT_EPOCHS > 0 and isinstance(model, nn.Module)


def test_a_diverging_training_is_refused_in_one_line_with_the_learning_rate(digits) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with torch.no_grad():
        model[1].weight.fill_(float("inf"))  # the first batch's loss is not finite
    with pytest.raises(AdcError, match=r"^training diverged at epoch 1 \(loss nan\); lower the learning rate \(now 0.5\)$"):
        train_classifier(model, digits.train, epochs=1, lr=0.5)
