"""Parallel search on a local Ray instance with 2 workers: determinism, a killed worker, resume, bad inputs.

One local Ray instance serves the whole module (starting one costs seconds);
the pools the searches create join it and leave it running.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import adc
from adc.engine.checkpoint import Checkpoint
from adc.utils.errors import AdcError

ray = pytest.importorskip("ray")

FAST = {"bn_calibration": 128, "val_size": 300, "select_top": 0}
DDPG = {"agent": "ddpg", "episodes": 8, "agent_options": {"warmup": 2, "hidden": (16, 16)}}


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


def policies(result) -> list[dict]:
    return [r["kept"] for r in result.history]


def test_same_seed_and_workers_give_the_same_search_and_the_history_names_the_worker(make_trained, digits, digits_input,
                                                                                    capfd):
    runs = [adc.search(make_trained(), digits_input, data=digits, workers=2, seed=3, **DDPG, **FAST) for _ in range(2)]
    assert "core_worker" not in capfd.readouterr().err  # no Ray error line about restartable actors' arguments
    assert policies(runs[0]) == policies(runs[1])
    assert [r["reward"] for r in runs[0].history] == [r["reward"] for r in runs[1].history]
    assert [r["worker"] for r in runs[0].history] == [0, 1] * 4
    assert [r["phase"] for r in runs[0].history][:2] == ["uniform", "warmup"]


def test_random_search_plays_the_same_policies_with_one_or_two_workers(make_trained, digits, digits_input):
    one = adc.search(make_trained(), digits_input, data=digits, agent="random", episodes=5, workers=1, seed=2, **FAST)
    two = adc.search(make_trained(), digits_input, data=digits, agent="random", episodes=5, workers=2, seed=2, **FAST)
    assert policies(one) == policies(two)
    assert [r["reward"] for r in one.history] == [r["reward"] for r in two.history]  # evaluation is exact anywhere


def dies_once(marker: Path, digits, kill: bool = True):
    """An evaluation that kills its own worker process the first time it runs in a worker."""
    images = torch.stack([x for x, _ in digits.val][:200])
    labels = torch.tensor([y for _, y in digits.val][:200])
    driver = os.getpid()

    def evaluate(model: nn.Module) -> float:
        if kill and os.getpid() != driver and not marker.exists():
            marker.write_text(str(os.getpid()))
            os._exit(1)  # like the kernel's OOM killer: no exception, the process is gone
        with torch.no_grad():
            return (model(images).argmax(1) == labels).float().mean().item()

    return evaluate


def test_a_killed_worker_is_replaced_and_its_episode_run_again(make_trained, digits, digits_input, tmp_path):
    marker = tmp_path / "killed"
    common = dict(calibration=digits.train, agent="random", episodes=4, seed=5, workers=2, bn_calibration=64,
                  reconstruct=False)
    calm = adc.search(make_trained(), digits_input, evaluate=dies_once(marker, digits, kill=False), **common)
    assert not marker.exists()
    killed = adc.search(make_trained(), digits_input, evaluate=dies_once(marker, digits), **common)
    assert marker.exists()  # a worker did die
    assert not killed.interrupted and killed.failure is None
    assert policies(killed) == policies(calm)
    assert [r["reward"] for r in killed.history] == [r["reward"] for r in calm.history]


def test_resume_with_workers_gives_the_uninterrupted_search(make_trained, digits, digits_input, tmp_path):
    common = dict(data=digits, workers=2, seed=1, checkpoint_every=100, **DDPG, **FAST)

    def ctrl_c(record, best):
        if record["episode"] == 2:
            os.kill(os.getpid(), signal.SIGINT)

    first = adc.search(make_trained(), digits_input, out=tmp_path, progress=ctrl_c, **common)
    assert first.interrupted and len(first.history) == 4  # the round of episodes 2 and 3 finished
    assert len(Checkpoint(tmp_path / "checkpoint").history()) == 4
    resumed = adc.search(make_trained(), digits_input, out=tmp_path, resume=True, **common)
    straight = adc.search(make_trained(), digits_input, **common)
    assert policies(resumed) == policies(straight)
    assert [r["worker"] for r in resumed.history] == [r["worker"] for r in straight.history]


USER_NET = """
from torch import nn

class UserNet(nn.Module):  # defined in a file no worker can import by module name
    def __init__(self, num_classes=10, in_channels=1):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(in_channels, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                      nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))

    def forward(self, x):
        return self.head(self.features(x))

def build(num_classes=10, in_channels=1):
    return UserNet(num_classes, in_channels)
"""


def test_a_model_from_a_users_file_is_searched_on_workers(digits, digits_input, tmp_path):
    (tmp_path / "user_net.py").write_text(USER_NET)
    model = adc.build_model(f"{tmp_path / 'user_net.py'}:build", in_channels=1)
    assert type(model).__module__.startswith("adc_plugin_")
    result = adc.search(model, digits_input, data=digits, agent="random", episodes=4, workers=2, seed=0, **FAST)
    assert [r["worker"] for r in result.history] == [0, 1, 0, 1]


def test_an_evaluation_failing_on_a_worker_stops_with_one_line(trained, digits, digits_input):
    driver = os.getpid()

    def flaky(model: nn.Module) -> float:
        if os.getpid() != driver:  # fine on the unpruned model in this process, failing on the workers
            raise ValueError("disk went away")
        return 0.5

    with pytest.raises(AdcError) as err:  # no episode finished: nothing to hand back, the one-line reason
        adc.search(trained, digits_input, evaluate=flaky, agent="random", episodes=4, workers=2, bn_calibration=0,
                   reconstruct=False)
    assert "episode 0: evaluate failed: ValueError: disk went away" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("options, fragment", [
    ({"workers": 0}, "--workers 0"),
    ({"workers": "two"}, "--workers 'two': must be an integer"),
    ({"workers": 2, "ray_address": "not an address"}, "--ray-address 'not an address'"),
])
def test_bad_worker_settings_are_one_line(options, fragment, trained, digits, digits_input):
    with pytest.raises(AdcError) as err:
        adc.search(trained, digits_input, data=digits, agent="random", episodes=2, **options)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_an_unreachable_cluster_is_one_line(trained, digits, digits_input):
    ray.shutdown()
    try:
        with pytest.raises(AdcError, match="--ray-address: cannot start or join the Ray cluster at '127.0.0.1:1'"):
            adc.search(trained, digits_input, data=digits, agent="random", episodes=2, workers=2,
                       ray_address="127.0.0.1:1", **FAST)
    finally:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")


def test_missing_ray_names_the_extra_to_install(trained, digits, digits_input, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(AdcError, match=r"pip install 'adc\[ray\]'"):
        adc.search(trained, digits_input, data=digits, agent="random", episodes=2, workers=2, **FAST)
