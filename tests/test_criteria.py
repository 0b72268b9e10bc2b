"""Each channel criterion, on a tiny network where the channel to drop is known.

Two constructions of the same small CNN (conv -> BN -> ReLU -> conv -> BN ->
ReLU -> pool -> linear), each with exactly one useless channel ``DEAD`` in the
first unit:

- *dead weights*: the channel's filter, batch norm and the next layer's input
  column are zero, and the other filters come in opposite pairs around it
  (so it is also the geometric median, FPGM's redundant filter). Every
  criterion but ``random`` must drop it.
- *dead data*: the channel's filter is the largest of its layer, but it reads
  only an input channel that is zero in every calibration image. Every
  data-driven criterion must drop it, while the weight norm keeps it (so the
  test can tell the families apart).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from adc.analysis.graph import analyze
from adc.pruning.criteria import CRITERIA, DATA_CRITERIA, LABEL_CRITERIA, ScoreContext
from adc.pruning.criteria.activations import channel_entropy
from adc.pruning.criteria.selection import greedy_removal_order
from adc.pruning.pruner import ChannelPruner
from adc.utils.errors import AdcError

DEAD = 2
WIDTH = 5


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, WIDTH, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(WIDTH)
        self.conv2 = nn.Conv2d(WIDTH, 6, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


def _tiny(dead: str) -> nn.Module:
    gen = torch.Generator().manual_seed(0)
    model = Tiny()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * 0.5)
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
        w = model.conv1.weight
        if dead == "weights":
            others = [c for c in range(WIDTH) if c != DEAD]
            w[others[1]] = -w[others[0]]  # opposite pairs: the zero filter is their geometric median
            w[others[3]] = -w[others[2]]
            w[DEAD] = 0.0
            model.bn1.weight[DEAD] = 0.0
            model.bn1.bias[DEAD] = 0.0
            model.conv2.weight[:, DEAD] = 0.0
        else:  # dead data: the largest filter, reading only input channel 2 (always zero in the data)
            w[DEAD] = 0.0
            w[DEAD, 2] = 3.0
            model.bn1.running_mean[DEAD] = 0.0
            model.bn1.bias[DEAD] = 0.0
    return model.eval()


def _calibration(dead: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(64, 3, 8, 8, generator=gen)
    if dead == "data":
        images[:, 2] = 0.0
    return [(images[:32], torch.randint(0, 4, (32,), generator=gen)), (images[32:], torch.randint(0, 4, (32,), generator=gen))]


def _dropped(criterion: str, dead: str) -> int:
    model = _tiny(dead)
    x = torch.zeros(1, 3, 8, 8)
    pruner = ChannelPruner(model, x, criterion=criterion, calibration=_calibration(dead))
    unit = pruner.graph.units[0]
    assert unit.name == "conv1" and unit.channels == WIDTH
    kept = pruner.keep_indices_of_counts(np.array([WIDTH - 1, *[u.channels for u in pruner.graph.units[1:]]]))
    (gone,) = sorted(set(range(WIDTH)) - set(kept["conv1"].tolist()))
    return gone


@pytest.mark.parametrize("criterion", [c for c in CRITERIA.names() if c != "random"])
def test_every_criterion_drops_a_dead_channel(criterion: str) -> None:
    assert _dropped(criterion, "weights") == DEAD


@pytest.mark.parametrize("criterion", sorted(DATA_CRITERIA))
def test_data_criteria_drop_a_channel_the_data_never_excites(criterion: str) -> None:
    assert _dropped(criterion, "data") == DEAD
    assert _dropped("l1", "data") != DEAD  # the weights alone call it the most important


def test_data_criteria_compute_their_statistics_once_for_all_units() -> None:
    model = _tiny("data")
    graph = analyze(model, torch.zeros(1, 3, 8, 8))
    ctx = ScoreContext(model, graph, _calibration("data"))
    calls = []
    original = ctx.gradient_passes

    def counted(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    ctx.gradient_passes = counted  # type: ignore[method-assign]
    for criterion in ("taylor_weight", "fisher", "snip", "obd"):
        for unit in graph.units:
            CRITERIA.get(criterion)(ctx, unit)
    # one set of passes per statistic (fisher and snip share theirs), whatever the number of units
    assert len(calls) == 3
    assert all(p.grad is None for p in model.parameters())  # the model's gradients are restored


@pytest.mark.parametrize("criterion", sorted(LABEL_CRITERIA))
def test_label_criteria_refuse_without_calibration(criterion: str) -> None:
    with pytest.raises(AdcError, match=f"criterion '{criterion}' needs calibration data"):
        ChannelPruner(_tiny("weights"), torch.zeros(1, 3, 8, 8), criterion=criterion)


def test_entropy_of_a_constant_channel_is_zero_and_of_a_spread_one_is_log_bins() -> None:
    values = torch.stack([torch.zeros(320), torch.linspace(0, 1, 320)], 1).double()
    h = channel_entropy(values, bins=32)
    assert h[0] == 0.0 and h[1] == pytest.approx(np.log(32), rel=1e-3)


def test_thinet_greedy_removes_by_joint_error_not_by_size() -> None:
    # x1 nearly cancels x0: once x0 is gone, removing x1 too brings the error down, though x1 is the largest.
    x = torch.tensor([[1.0, -1.5, 0.0], [0.0, 0.0, 1.2]], dtype=torch.float64)
    assert greedy_removal_order(x.T @ x) == [0, 1, 2]
    assert np.argsort((x * x).sum(0).numpy()).tolist() == [0, 2, 1]  # what the norms alone would say
