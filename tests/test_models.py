"""Model zoo, model specs and checkpoint loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from adc.utils.errors import AdcError
from adc.inputs.models import build_model, load_checkpoint
from adc.inputs.zoo import ZOO


@pytest.mark.parametrize("name", ZOO.names())
@pytest.mark.parametrize("in_channels,size", [(1, 8), (3, 8), (1, 32), (3, 32)])
def test_zoo_forward_shape(name: str, in_channels: int, size: int) -> None:
    torch.manual_seed(0)
    model = build_model(f"zoo:{name}", num_classes=7, in_channels=in_channels).eval()
    with torch.no_grad():
        out = model(torch.randn(2, in_channels, size, size))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ZOO.names())
def test_zoo_conventions(name: str) -> None:
    model = ZOO.get(name)(num_classes=10, in_channels=3)
    assert isinstance(model.fc, nn.Linear) and model.fc.out_features == 10
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears == [model.fc]
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            assert m.bias is None
        if isinstance(m, nn.ReLU):
            assert not m.inplace


def test_zoo_depths() -> None:
    def convs(name: str) -> int:
        model = ZOO.get(name)()
        # Shortcut 1x1 convs are not counted in the paper's depth.
        return sum(1 for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3))

    assert convs("plain20") == 19
    assert convs("resnet20") == 19
    assert convs("resnet56") == 55


def test_build_model_records_spec_as_json() -> None:
    model = build_model("zoo:vgg_small", num_classes=4, in_channels=1)
    assert model.adc_model_spec == {"spec": "zoo:vgg_small", "num_classes": 4, "in_channels": 1}
    assert json.loads(json.dumps(model.adc_model_spec)) == model.adc_model_spec
    assert "adc_model_spec" not in "".join(model.state_dict())


def test_torchvision_model_and_errors() -> None:
    model = build_model("torchvision:resnet18", num_classes=5)  # the only torchvision build in the tests
    assert model.fc.out_features == 5
    assert model.adc_model_spec["spec"] == "torchvision:resnet18"
    with pytest.raises(AdcError, match=r"unknown torchvision model 'resnet19'.*resnet18"):
        build_model("torchvision:resnet19")
    with pytest.raises(AdcError, match="3-channel"):
        build_model("torchvision:resnet18", in_channels=1)


def test_unknown_specs_list_valid_choices() -> None:
    with pytest.raises(AdcError) as err:
        build_model("zoo:resnet99")
    assert "resnet99" in str(err.value) and "plain20" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(AdcError, match=r"zoo:plain20"):
        build_model("plain20")  # hints at the zoo: prefix
    with pytest.raises(AdcError, match="torchvision:NAME"):
        build_model("no such model")


def test_plugin_file_models(tmp_path: Path) -> None:
    plugin = tmp_path / "my_models.py"
    plugin.write_text(
        "import torch.nn as nn\n"
        "def with_kwargs(num_classes, in_channels):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 4, num_classes))\n"
        "def no_kwargs():\n"
        "    return nn.Linear(3, 2)\n"
        "def not_a_module():\n"
        "    return 42\n"
    )
    model = build_model(f"{plugin}:with_kwargs", num_classes=3, in_channels=2)
    assert model(torch.zeros(1, 2, 2, 2)).shape == (1, 3)
    assert model.adc_model_spec["spec"] == f"{plugin}:with_kwargs"
    assert isinstance(build_model(f"{plugin}:no_kwargs"), nn.Linear)
    with pytest.raises(AdcError, match="must return a torch.nn.Module"):
        build_model(f"{plugin}:not_a_module")
    with pytest.raises(AdcError, match="no callable named 'missing'"):
        build_model(f"{plugin}:missing")


def test_module_plugin_model() -> None:
    model = build_model("adc.inputs.zoo:plain20", num_classes=3, in_channels=1)
    assert model.fc.out_features == 3
    with pytest.raises(AdcError, match=r"No module named 'my_nets' \(put its folder on PYTHONPATH, or name the file: "
                                       r"my_nets/cnn\.py:build\)"):
        build_model("my_nets.cnn:build")


def _small(num_classes: int = 10) -> nn.Module:
    return build_model("zoo:vgg_small", num_classes=num_classes, in_channels=1)


def test_checkpoint_round_trip_and_wrappers(tmp_path: Path) -> None:
    torch.manual_seed(0)
    src = _small()
    target_sd = src.state_dict()
    for name, obj in [
        ("raw.pt", target_sd),
        ("wrapped.pt", {"state_dict": target_sd, "epoch": 3}),
        ("model.pt", {"model": target_sd}),
        ("dp.pt", {f"module.{k}": v for k, v in target_sd.items()}),
    ]:
        torch.save(obj, tmp_path / name)
        torch.manual_seed(1)
        dst = load_checkpoint(_small(), tmp_path / name)
        for k, v in dst.state_dict().items():
            assert torch.equal(v, target_sd[k]), (name, k)


def test_checkpoint_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AdcError, match="does not exist"):
        load_checkpoint(_small(), tmp_path / "nope.pt")


@pytest.mark.parametrize("content", [b"", b"hello, not a checkpoint", b"PK\x03\x04garbage"])
def test_checkpoint_not_a_checkpoint(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(AdcError, match="not a PyTorch checkpoint") as err:
        load_checkpoint(_small(), path)
    assert "\n" not in str(err.value)


def test_a_pickled_whole_model_is_refused_with_how_to_save_its_weights(tmp_path: Path) -> None:
    torch.save(_small(), tmp_path / "whole.pt")  # torch.save(model), not model.state_dict()
    with pytest.raises(AdcError) as err:
        load_checkpoint(_small(), tmp_path / "whole.pt")
    message = str(err.value)
    assert "holds a pickled object" in message and "torch.save(model.state_dict(), PATH)" in message
    assert "\n" not in message and "\x1b" not in message


def test_checkpoint_not_a_state_dict(tmp_path: Path) -> None:
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(AdcError, match="not a state dict"):
        load_checkpoint(_small(), tmp_path / "list.pt")
    torch.save({"fc.weight": torch.zeros(1), "note": "text"}, tmp_path / "mixed.pt")
    with pytest.raises(AdcError, match="'note' is a str"):
        load_checkpoint(_small(), tmp_path / "mixed.pt")


def test_checkpoint_shape_mismatch_names_key_and_shapes(tmp_path: Path) -> None:
    torch.save(_small(num_classes=7).state_dict(), tmp_path / "c7.pt")
    with pytest.raises(AdcError) as err:
        load_checkpoint(_small(num_classes=10), tmp_path / "c7.pt")
    msg = str(err.value)
    assert "checkpoint key 'fc.weight' has shape (7, 128) but the model expects (10, 128)" in msg


def test_checkpoint_missing_and_unexpected_keys(tmp_path: Path) -> None:
    sd = _small().state_dict()
    extra = dict(sd, **{"head.weight": torch.zeros(2)})
    torch.save(extra, tmp_path / "extra.pt")
    with pytest.raises(AdcError, match="has key 'head.weight' that the model does not have"):
        load_checkpoint(_small(), tmp_path / "extra.pt")
    fewer = {k: v for k, v in sd.items() if k != "fc.bias"}
    torch.save(fewer, tmp_path / "fewer.pt")
    with pytest.raises(AdcError, match="lacks key 'fc.bias'"):
        load_checkpoint(_small(), tmp_path / "fewer.pt")
