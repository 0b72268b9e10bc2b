"""Data sources, splits and loaders."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from adc.inputs.data import (
    DATA_SOURCES,
    DataSplits,
    example_input,
    load_data,
    make_loader,
    read_idx,
)
from adc.utils.errors import AdcError


def _indices(ds: torch.utils.data.Subset) -> set[int]:
    return set(int(i) for i in ds.indices)


def _check_sample(splits: DataSplits) -> None:
    for part in (splits.train, splits.val, splits.test):
        assert len(part) > 0
        image, label = part[0]
        assert isinstance(image, torch.Tensor) and image.dtype == torch.float32
        assert tuple(image.shape) == (splits.in_channels, *splits.image_size)
        assert isinstance(label, int) and 0 <= label < splits.num_classes
    assert splits.preprocessing and "\n" not in splits.preprocessing


def test_every_source_is_tested() -> None:
    # Adding a source without a test here should fail loudly.
    assert set(DATA_SOURCES.names()) == {"digits", "fake", "fashion-mnist", "cifar10", "imagefolder"}


def test_digits() -> None:
    splits = load_data("digits")
    _check_sample(splits)
    assert (splits.num_classes, splits.in_channels, splits.image_size) == (10, 1, (8, 8))
    assert len(splits.test) == 360
    assert len(splits.train) + len(splits.val) + len(splits.test) == 1797
    train_x = torch.stack([splits.train[i][0] for i in range(len(splits.train))])
    # The literal constants normalise the data to about zero mean, unit std.
    assert abs(float(train_x.mean())) < 0.05 and abs(float(train_x.std()) - 1) < 0.05


def test_val_split_disjoint_and_deterministic() -> None:
    a = load_data("digits", seed=3)
    b = load_data("digits", seed=3)
    c = load_data("digits", seed=4)
    assert _indices(a.train).isdisjoint(_indices(a.val))
    assert len(a.val) == round(0.1 * (1797 - 360))
    assert _indices(a.val) == _indices(b.val) and _indices(a.train) == _indices(b.train)
    assert _indices(a.val) != _indices(c.val)
    # The test split is fixed whatever the seed.
    assert torch.equal(a.test.images, c.test.images)
    assert len(load_data("digits", val_fraction=0.25).val) == round(0.25 * 1437)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_bad_val_fraction(fraction: float) -> None:
    with pytest.raises(AdcError, match="val_fraction"):
        load_data("digits", val_fraction=fraction)


def test_fake() -> None:
    splits = load_data("fake:100")
    _check_sample(splits)
    assert (splits.num_classes, splits.in_channels, splits.image_size) == (10, 3, (32, 32))
    assert len(splits.train) + len(splits.val) == 100 and len(splits.test) == 25
    again = load_data("fake:100")
    assert torch.equal(splits.train[5][0], again.train[5][0])  # same data on every call
    assert len(load_data("fake").train) + len(load_data("fake").val) == 512
    with pytest.raises(AdcError, match="fake:abc"):
        load_data("fake:abc")


def _write_idx(path: Path, array: np.ndarray, compress: bool = True) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}i", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def _write_fmnist(root: Path, n_train: int = 30, n_test: int = 10) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    train_x = rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8)
    train_y = (np.arange(n_train) % 10).astype(np.uint8)
    _write_idx(root / "train-images-idx3-ubyte.gz", train_x)
    _write_idx(root / "train-labels-idx1-ubyte.gz", train_y)
    _write_idx(root / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8))
    _write_idx(root / "t10k-labels-idx1-ubyte", (np.arange(n_test) % 10).astype(np.uint8), compress=False)
    return train_x, train_y


def test_fashion_mnist_idx_files(tmp_path: Path) -> None:
    train_x, train_y = _write_fmnist(tmp_path)
    assert np.array_equal(read_idx(tmp_path / "train-images-idx3-ubyte.gz"), train_x)
    splits = load_data(f"fashion-mnist:{tmp_path}")
    _check_sample(splits)
    assert (splits.num_classes, splits.in_channels, splits.image_size) == (10, 1, (28, 28))
    assert len(splits.train) + len(splits.val) == 30 and len(splits.test) == 10
    i = int(splits.train.indices[0])
    image, label = splits.train[0]
    assert label == int(train_y[i])
    expected = (torch.from_numpy(train_x[i]).float() / 255 - 0.2860) / 0.3530
    assert torch.allclose(image[0], expected)


def test_fashion_mnist_errors(tmp_path: Path) -> None:
    with pytest.raises(AdcError, match="lacks the IDX files train-images-idx3-ubyte.gz"):
        load_data(f"fashion-mnist:{tmp_path}")
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as f:
        f.write(b"\x00\x00\x0d\x01\x00\x00\x00\x02ab")  # float type
    with pytest.raises(AdcError, match="0x0d"):
        read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(struct.pack(">BBBBi", 0, 0, 8, 1, 5) + b"abc")
    with pytest.raises(AdcError, match="should hold 5 bytes"):
        read_idx(short)
    (tmp_path / "junk").write_bytes(b"GIF89a")
    with pytest.raises(AdcError, match="magic"):
        read_idx(tmp_path / "junk")


def test_cifar10_missing_root_does_not_download(tmp_path: Path) -> None:
    with pytest.raises(AdcError, match="cifar-10-batches-py"):
        load_data(f"cifar10:{tmp_path}")


def _write_image_folder(root: Path, per_class: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("cat", "dog", "emu"):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(d / f"{i}.png")


def test_imagefolder(tmp_path: Path) -> None:
    _write_image_folder(tmp_path, per_class=4)
    splits = load_data(f"imagefolder:{tmp_path}@32", val_fraction=0.25)
    _check_sample(splits)
    assert (splits.num_classes, splits.in_channels, splits.image_size) == (3, 3, (32, 32))
    assert len(splits.train) == 9 and len(splits.val) == 3 and len(splits.test) == 12


def _files(ds: Any) -> set[str]:
    """The image files behind (nested) Subsets of an ImageFolder."""
    indices = list(range(len(ds)))
    while hasattr(ds, "indices"):
        indices = [ds.indices[i] for i in indices]
        ds = ds.dataset
    return {ds.samples[i][0] for i in indices}


def test_imagefolder_single_folder_holds_out_a_fixed_test_split(tmp_path: Path) -> None:
    _write_image_folder(tmp_path, per_class=5)
    val_dir = tmp_path / "val"  # DESIGN's example: --data imagefolder:/data/val, at torchvision's 224
    splits = load_data(f"imagefolder:{val_dir}", val_fraction=0.25)
    assert splits.image_size == (224, 224) and splits.num_classes == 3
    assert splits.train[0][0].shape == (3, 224, 224)
    assert "CenterCrop 224" in splits.preprocessing
    assert len(splits.test) == 3 and len(splits.train) + len(splits.val) == 12
    assert not _files(splits.train) & _files(splits.test) and not _files(splits.val) & _files(splits.test)
    again = load_data(f"imagefolder:{val_dir}", val_fraction=0.25)
    assert again.test.indices == splits.test.indices  # type: ignore[attr-defined]


def test_imagefolder_errors(tmp_path: Path) -> None:
    with pytest.raises(AdcError, match="needs a folder"):
        load_data("imagefolder")
    with pytest.raises(AdcError, match="is not a folder"):
        load_data(f"imagefolder:{tmp_path / 'missing'}")
    with pytest.raises(AdcError, match="image size 4 must be between 8 and 1024"):
        load_data(f"imagefolder:{tmp_path}@4")
    (tmp_path / "train").mkdir()
    with pytest.raises(AdcError, match=r"expected DIR/train and DIR/val, or one subfolder of images per class"):
        load_data(f"imagefolder:{tmp_path}")


def test_plugin_file_source(tmp_path: Path) -> None:
    plugin = tmp_path / "my_data.py"
    plugin.write_text(
        "import torch\n"
        "from torch.utils.data import TensorDataset\n"
        "class Pairs(torch.utils.data.Dataset):\n"
        "    def __init__(self, n):\n"
        "        self.x = torch.randn(n, 2, 12, 10, generator=torch.Generator().manual_seed(n))\n"
        "    def __len__(self):\n"
        "        return len(self.x)\n"
        "    def __getitem__(self, i):\n"
        "        return self.x[i], i % 4\n"
        "def tuple_source():\n"
        "    return Pairs(40), Pairs(8)\n"
        "def dict_source():\n"
        "    return {'train': Pairs(40), 'test': Pairs(8), 'val': Pairs(6)}\n"
        "def bad_source():\n"
        "    return Pairs(40)\n"
    )
    splits = load_data(f"{plugin}:tuple_source")
    _check_sample(splits)
    assert (splits.num_classes, splits.in_channels, splits.image_size) == (4, 2, (12, 10))
    assert len(splits.train) == 36 and len(splits.val) == 4
    own_val = load_data(f"{plugin}:dict_source")
    assert len(own_val.train) == 40 and len(own_val.val) == 6
    with pytest.raises(AdcError, match=r"must return \(train_dataset, test_dataset\)"):
        load_data(f"{plugin}:bad_source")


def test_unknown_source_lists_valid() -> None:
    with pytest.raises(AdcError) as err:
        load_data("mnist")
    msg = str(err.value)
    assert "'mnist'" in msg and "digits" in msg and "fashion-mnist" in msg and "\n" not in msg


def test_loader_and_example_input() -> None:
    splits = load_data("fake:40")
    loader = make_loader(splits.train, batch_size=8, shuffle=True, seed=1)
    order1 = [y.tolist() for _, y in loader]
    order2 = [y.tolist() for _, y in make_loader(splits.train, batch_size=8, shuffle=True, seed=1)]
    assert order1 == order2
    images, labels = next(iter(make_loader(splits.train, batch_size=8)))
    assert images.shape == (8, 3, 32, 32) and labels.dtype == torch.int64
    x = example_input(splits, batch=2)
    assert x.shape == (2, 3, 32, 32) and not x.any()
