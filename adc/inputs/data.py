"""Data sources: a spec string -> train / validation / test datasets.

A data spec is a registered source, optionally with an argument after a colon
(``digits``, ``fake:256``, ``fashion-mnist:/data/fmnist``, ``cifar10``,
``imagefolder:/data/imgs``), or a user's function (``file.py:fn`` /
``package.module:fn``). Each source documents its preprocessing.

The validation split, which the search's reward uses, is always carved out of
the training data with a fixed seed; the test split is separate and is only
reported. A model trained for pruning must train on ``train`` only, never on
``val``: otherwise the reward measures training accuracy, not how a pruned model generalises.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from adc.utils.errors import AdcError
from adc.utils.plugins import is_plugin_spec, load_callable
from adc.utils.files import cache_dir
from adc.utils.registry import Registry


@dataclass
class DataSplits:
    """The three splits of a data set and what a model needs to know about it.

    Attributes:
        train: Training images (the validation images are not in it).
        val: Held-out part of the training data, for the search's reward.
        test: The separate test set, for reporting only.
        num_classes: Number of classes.
        in_channels: Channels of an image (1 or 3).
        image_size: (height, width) of an image after preprocessing.
        name: The data spec.
        preprocessing: One line saying how the images were preprocessed.
    """

    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    in_channels: int
    image_size: tuple[int, int]
    name: str
    preprocessing: str


@dataclass
class _Source:
    """What a source function returns before the train / val split."""

    train: Dataset
    test: Dataset
    num_classes: int
    in_channels: int
    image_size: tuple[int, int]
    preprocessing: str
    val: Dataset | None = None  # only plugins may bring their own


# A source takes the argument after "name:" (None when absent).
DataSource = Callable[[str | None], _Source]
DATA_SOURCES: Registry[DataSource] = Registry("data source")


class ImageTensorDataset(Dataset):
    """Images held in one tensor, normalised on access; yields ``(float32 CHW tensor, int label)``.

    Images may be stored as uint8 (normalised per item, so 60k 28x28 images
    take 47 MB rather than 188 MB) or already as float32.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        mean: float = 0.0,
        std: float = 1.0,
        classes: list[str] | None = None,
    ) -> None:
        if images.ndim != 4 or len(images) != len(labels):
            raise ValueError(f"images must be NCHW with one label each, got {tuple(images.shape)} and {len(labels)} labels")
        self.images = images
        self.targets = labels.long()
        self.mean = mean
        self.std = std
        self.classes = classes if classes is not None else [str(i) for i in range(int(self.targets.max()) + 1)]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img = self.images[index]
        img = img.float() / 255.0 if img.dtype == torch.uint8 else img.float()
        return (img - self.mean) / self.std, int(self.targets[index])


# ------------------------------------------------------------------ digits

# Mean and std of scikit-learn's digits pixels after /16, over all 1797 images.
_DIGITS_MEAN = 0.3053
_DIGITS_STD = 0.3760


@DATA_SOURCES.register("digits")
def _digits(arg: str | None) -> _Source:
    """scikit-learn's 8x8 handwritten digits (1797 images, 10 classes), embedded, no download.

    Preprocessing: pixel / 16, then (x - 0.3053) / 0.3760. The test split is a
    fixed stratified 20% (360 images, always seed 0) so test numbers compare
    across runs whatever the search seed.
    """
    if arg:
        raise AdcError(f"data source 'digits' takes no argument, got 'digits:{arg}'")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    labels = torch.from_numpy(digits.target.astype(np.int64))
    idx_train, idx_test = train_test_split(np.arange(len(labels)), test_size=0.2, stratify=digits.target, random_state=0)
    classes = [str(c) for c in range(10)]

    def part(idx: np.ndarray) -> ImageTensorDataset:
        t = torch.from_numpy(idx)
        return ImageTensorDataset(images[t], labels[t], mean=_DIGITS_MEAN, std=_DIGITS_STD, classes=classes)

    return _Source(
        train=part(idx_train),
        test=part(idx_test),
        num_classes=10,
        in_channels=1,
        image_size=(8, 8),
        preprocessing=f"pixel/16, normalise mean {_DIGITS_MEAN} std {_DIGITS_STD}; fixed stratified 20% test split",
    )


# ---------------------------------------------------------------- fake


@DATA_SOURCES.register("fake")
def _fake(arg: str | None) -> _Source:
    """Random 3x32x32 images in 10 classes for smoke tests (``fake:N``, N = 512 by default).

    Preprocessing: none. Image i has label i % 10 and is Gaussian noise plus
    its class's fixed random pattern, so a model can learn it; everything comes
    from fixed-seed generators, so the data is identical on every call. The
    test set has N // 4 images (at least 10).
    """
    try:
        n = 512 if not arg else int(arg)
    except ValueError:
        raise AdcError(f"data source 'fake:{arg}': N must be an integer number of samples, e.g. fake:512") from None
    if n < 20:
        raise AdcError(f"data source 'fake:{arg}': N must be at least 20 samples")
    gen = torch.Generator().manual_seed(1234)
    prototypes = torch.randn(10, 3, 32, 32, generator=gen)

    def make(count: int) -> ImageTensorDataset:
        labels = torch.arange(count) % 10
        images = torch.randn(count, 3, 32, 32, generator=gen) + 0.5 * prototypes[labels]
        return ImageTensorDataset(images, labels, classes=[str(c) for c in range(10)])

    train = make(n)
    test = make(max(n // 4, 10))
    return _Source(train, test, 10, 3, (32, 32), "synthetic: N(0,1) noise + 0.5 x class pattern, no normalisation")


# ------------------------------------------------------------ fashion-mnist

_FMNIST_MEAN = 0.2860
_FMNIST_STD = 0.3530
_FMNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_FMNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
_FMNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


def _cache_data_dir() -> Path:
    """Where sources that download put their files (``$ADC_DATA_DIR``, else ``$ADC_CACHE_DIR/data``)."""
    return cache_dir("data")


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzip-compressed or not, into a uint8 array.

    Format: two zero bytes, a type byte (0x08 = unsigned byte, the only type
    MNIST-style data uses), a byte with the number of dimensions, one
    big-endian int32 per dimension, then the data in C order.

    Raises:
        AdcError: if the file is not a uint8 IDX file or is truncated.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise AdcError(f"IDX file {str(path)!r} cannot be read: {exc}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise AdcError(f"IDX file {str(path)!r} has no IDX magic number (expected bytes 00 00 08 NDIM)")
    if raw[2] != 0x08:
        raise AdcError(f"IDX file {str(path)!r} has data type 0x{raw[2]:02x}; only unsigned bytes (0x08) are supported")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise AdcError(f"IDX file {str(path)!r} is truncated inside its header")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    size = int(np.prod(dims)) if dims else 1
    if len(raw) - header != size:
        raise AdcError(f"IDX file {str(path)!r} should hold {size} bytes of data for shape {dims}, has {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def _find_idx_dir(root: Path) -> dict[str, Path] | None:
    """The four Fashion-MNIST files under ``root`` (or torchvision's ``FashionMNIST/raw`` below it), if all exist."""
    for d in (root, root / "FashionMNIST" / "raw"):
        found: dict[str, Path] = {}
        for key, stem in _FMNIST_FILES.items():
            for candidate in (d / f"{stem}.gz", d / stem):
                if candidate.is_file():
                    found[key] = candidate
                    break
        if len(found) == len(_FMNIST_FILES):
            return found
    return None


@DATA_SOURCES.register("fashion-mnist")
def _fashion_mnist(arg: str | None) -> _Source:
    """Fashion-MNIST (60k train / 10k test, 1x28x28, 10 classes) from IDX files.

    ``fashion-mnist:ROOT`` reads ``train-images-idx3-ubyte.gz`` and friends
    from ROOT; plain ``fashion-mnist`` reads them from
    ``/usr/share/datasets/fashion-mnist`` (Debian's package) when present, else
    downloads them with torchvision into ``~/.cache/adc/data``.
    Preprocessing: pixel / 255, then (x - 0.2860) / 0.3530.
    """
    if arg:
        root = Path(arg).expanduser()
        files = _find_idx_dir(root)
        if files is None:
            names = ", ".join(f"{s}.gz" for s in _FMNIST_FILES.values())
            raise AdcError(f"data source 'fashion-mnist:{arg}': {str(root)!r} lacks the IDX files {names}")
    else:
        files = _find_idx_dir(_FMNIST_SYSTEM_DIR) or _find_idx_dir(_cache_data_dir())
        if files is None:
            _torchvision_download("fashion-mnist", "FashionMNIST", _cache_data_dir())
            files = _find_idx_dir(_cache_data_dir())
            assert files is not None, "torchvision downloaded Fashion-MNIST somewhere unexpected"
    arrays = {key: read_idx(path) for key, path in files.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise AdcError(
                f"data source 'fashion-mnist': {split} images {images.shape} and labels {labels.shape} do not match"
                " (expected N x H x W images and N labels)"
            )

    def part(split: str) -> ImageTensorDataset:
        images = torch.from_numpy(arrays[f"{split}_images"]).unsqueeze(1)
        labels = torch.from_numpy(arrays[f"{split}_labels"].astype(np.int64))
        return ImageTensorDataset(images, labels, mean=_FMNIST_MEAN, std=_FMNIST_STD, classes=list(_FMNIST_CLASSES))

    h, w = arrays["train_images"].shape[1:]
    return _Source(
        train=part("train"),
        test=part("test"),
        num_classes=10,
        in_channels=1,
        image_size=(int(h), int(w)),
        preprocessing=f"pixel/255, normalise mean {_FMNIST_MEAN} std {_FMNIST_STD}",
    )


def _torchvision_download(spec: str, cls_name: str, root: Path) -> None:
    """Download a torchvision data set into ``root``; one-line AdcError when offline."""
    import torchvision

    try:
        for train in (True, False):
            getattr(torchvision.datasets, cls_name)(str(root), train=train, download=True)
    except Exception as exc:  # network errors come in many types
        raise AdcError(
            f"data source {spec!r}: downloading into {str(root)!r} failed ({type(exc).__name__}: {exc}); "
            f"pass '{spec}:ROOT' with the files already there"
        ) from exc


# ----------------------------------------------------------------- cifar10

_CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
_CIFAR_STD = (0.2470, 0.2435, 0.2616)


@DATA_SOURCES.register("cifar10")
def _cifar10(arg: str | None) -> _Source:
    """CIFAR-10 (50k train / 10k test, 3x32x32, 10 classes) via torchvision.

    ``cifar10:ROOT`` reads torchvision's ``cifar-10-batches-py`` from ROOT and
    never downloads; plain ``cifar10`` downloads into ``~/.cache/adc/data``
    once. Preprocessing: ToTensor, normalise with the usual CIFAR-10 channel
    mean (0.4914, 0.4822, 0.4465) and std (0.2470, 0.2435, 0.2616); no
    augmentation.
    """
    import torchvision
    from torchvision import transforms

    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(_CIFAR_MEAN, _CIFAR_STD)])
    if arg:
        root = Path(arg).expanduser()
        if not (root / "cifar-10-batches-py").is_dir():
            raise AdcError(
                f"data source 'cifar10:{arg}': {str(root)!r} has no cifar-10-batches-py folder"
                " (torchvision's CIFAR-10 layout); use plain 'cifar10' to download it"
            )
    else:
        root = _cache_data_dir()
        if not (root / "cifar-10-batches-py").is_dir():
            _torchvision_download("cifar10", "CIFAR10", root)
    try:
        train = torchvision.datasets.CIFAR10(str(root), train=True, transform=tf, download=False)
        test = torchvision.datasets.CIFAR10(str(root), train=False, transform=tf, download=False)
    except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted"
        raise AdcError(f"data source 'cifar10': {str(root)!r} holds no readable CIFAR-10: {exc}") from exc
    return _Source(train, test, 10, 3, (32, 32), "ToTensor, normalise with CIFAR-10 channel mean/std, no augmentation")


# -------------------------------------------------------------- imagefolder

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_IMAGEFOLDER_SIZE = 224
_IMAGEFOLDER_TEST_FRACTION = 0.2


def _imagefolder_transform(size: int) -> tuple[Any, str]:
    """ImageNet evaluation preprocessing at ``size`` (Resize + CenterCrop); small sizes resize only."""
    from torchvision import transforms

    normalize = transforms.Normalize(_IMAGENET_MEAN, _IMAGENET_STD)
    if size > 64:  # torchvision's classification preset: resize to size/0.875, centre crop
        resize = int(round(size / 0.875))
        return (transforms.Compose([transforms.Resize(resize), transforms.CenterCrop(size), transforms.ToTensor(), normalize]),
                f"RGB, Resize {resize}, CenterCrop {size}, ToTensor, ImageNet mean/std")
    return (transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor(), normalize]),
            f"RGB, Resize {size}x{size}, ToTensor, ImageNet mean/std")


@DATA_SOURCES.register("imagefolder")
def _imagefolder(arg: str | None) -> _Source:
    """A folder of images, one subfolder per class (torchvision ``ImageFolder``): ``imagefolder:DIR[@SIZE]``.

    Two layouts: DIR/train plus DIR/val (or DIR/test), each with the same
    class subfolders; or DIR itself holding the class subfolders (say an
    ImageNet validation folder), of which a fixed fifth (seed 0) is held out
    as the test split and the rest serves training-side uses (BN
    recalibration, reconstruction, the reward's validation subset).
    Preprocessing at SIZE (default 224, torchvision's ImageNet models):
    Resize to SIZE/0.875, CenterCrop SIZE, ImageNet mean/std; SIZE <= 64
    (CIFAR-style zoo models: ``@32``) resizes to SIZE x SIZE.
    """
    usage = "'imagefolder:DIR' or 'imagefolder:DIR@SIZE' (e.g. imagefolder:/data/val@224)"
    if not arg:
        raise AdcError(f"data source 'imagefolder' needs a folder: {usage}")
    from torchvision import datasets

    folder, at, size_text = arg.rpartition("@")
    if not at or not size_text.isdigit():
        folder, size_text = arg, str(_IMAGEFOLDER_SIZE)
    size = int(size_text)
    if not 8 <= size <= 1024:
        raise AdcError(f"data source 'imagefolder:{arg}': image size {size} must be between 8 and 1024 ({usage})")
    tf, preprocessing = _imagefolder_transform(size)
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise AdcError(f"data source 'imagefolder:{arg}': {str(root)!r} is not a folder ({usage})")
    train_dir = root / "train"
    test_dir = next((d for d in (root / "val", root / "test") if d.is_dir()), None)
    split = train_dir.is_dir() and test_dir is not None
    try:
        if split:
            train = datasets.ImageFolder(str(train_dir), transform=tf)
            test = datasets.ImageFolder(str(test_dir), transform=tf)
        else:
            whole = datasets.ImageFolder(str(root), transform=tf)
    except (FileNotFoundError, RuntimeError) as exc:  # no class folders / no images
        raise AdcError(
            f"data source 'imagefolder:{arg}': {str(exc).splitlines()[0]} (expected DIR/train and DIR/val, or one"
            " subfolder of images per class in DIR)"
        ) from exc
    if not split:
        train, test = split_train_val(whole, val_fraction=_IMAGEFOLDER_TEST_FRACTION, seed=0)
        return _Source(train, test, len(whole.classes), 3, (size, size),
                       f"{preprocessing}; test split: a fixed {_IMAGEFOLDER_TEST_FRACTION:.0%} of {str(root)!r}")
    if train.classes != test.classes:
        raise AdcError(
            f"data source 'imagefolder:{arg}': {str(train_dir)!r} and {str(test_dir)!r} have different class"
            f" folders ({len(train.classes)} vs {len(test.classes)}); they must match"
        )
    return _Source(train, test, len(train.classes), 3, (size, size), preprocessing)


# ------------------------------------------------------------------ plugins


def _dataset_classes(ds: Dataset) -> int | None:
    """Number of classes from a ``classes`` attribute, looking through Subsets."""
    while isinstance(ds, Subset):
        ds = ds.dataset
    classes = getattr(ds, "classes", None)
    return len(classes) if classes is not None and len(classes) > 0 else None


def _plugin_source(spec: str) -> _Source:
    """A user's ``fn()`` returning ``(train, test)`` or ``{"train": ..., "test": ...[, "val": ...]}``."""
    fn = load_callable(spec, "data")
    try:
        result: Any = fn()
    except Exception as exc:  # the user's code may raise anything
        raise AdcError(f"data plugin {spec!r} raised {type(exc).__name__}: {exc}") from exc
    val = None
    if isinstance(result, dict) and "train" in result and "test" in result:
        train, test, val = result["train"], result["test"], result.get("val")
    elif isinstance(result, (tuple, list)) and len(result) == 2:
        train, test = result
    else:
        raise AdcError(f"data plugin {spec!r} must return (train_dataset, test_dataset) or a dict with 'train' and 'test'")
    for part, ds in (("train", train), ("test", test)):
        if not hasattr(ds, "__getitem__") or not hasattr(ds, "__len__") or len(ds) == 0:
            raise AdcError(f"data plugin {spec!r}: its {part} set is not a non-empty map-style Dataset")
    sample = train[0]
    if not (isinstance(sample, (tuple, list)) and len(sample) == 2 and isinstance(sample[0], torch.Tensor)):
        raise AdcError(f"data plugin {spec!r}: a sample must be (image tensor, label), got {type(sample).__name__}")
    image = sample[0]
    if image.ndim != 3:
        raise AdcError(f"data plugin {spec!r}: images must be CHW tensors, got shape {tuple(image.shape)}")
    num_classes = _dataset_classes(train)
    if num_classes is None:  # no ``classes`` attribute: scan the labels once
        num_classes = 1 + max(int(train[i][1]) for i in range(len(train)))
    return _Source(
        train=train,
        test=test,
        num_classes=num_classes,
        in_channels=int(image.shape[0]),
        image_size=(int(image.shape[1]), int(image.shape[2])),
        preprocessing=f"as done by {spec}",
        val=val,
    )


# ------------------------------------------------------------------ public


def split_train_val(dataset: Dataset, *, val_fraction: float, seed: int) -> tuple[Subset, Subset]:
    """Split ``dataset`` into disjoint (train, val) subsets by a permutation seeded with ``seed``."""
    n = len(dataset)
    n_val = int(round(n * val_fraction))
    if n_val < 1 or n_val >= n:
        raise AdcError(f"val_fraction={val_fraction} leaves an empty train or validation split of {n} training images")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return Subset(dataset, sorted(perm[n_val:])), Subset(dataset, sorted(perm[:n_val]))


FOLDER_SOURCES = ("fashion-mnist", "cifar10", "imagefolder")
"""The registered sources whose argument is a folder (``imagefolder:DIR[@SIZE]``, ``cifar10:ROOT``, ...)."""


def absolute_data_spec(spec: str) -> str:
    """``spec`` with its folder argument made absolute; any other spec unchanged.

    A run folder's config, ``adc finetune`` and ``adc export`` then read the
    same images from whatever folder they are run in.
    """
    name, sep, arg = spec.partition(":")
    if name not in FOLDER_SOURCES or not arg:
        return spec
    folder, at, size = arg.rpartition("@") if name == "imagefolder" else ("", "", "")
    if not at or not size.isdigit():
        folder, at, size = arg, "", ""
    return f"{name}:{Path(folder).expanduser().resolve()}{at}{size}"


def load_data(spec: str, *, seed: int = 0, val_fraction: float = 0.1) -> DataSplits:
    """Load the data set named by ``spec`` and split it into train / val / test.

    Args:
        spec: A source name, optionally ``name:ARG`` (see :data:`DATA_SOURCES`),
            or ``file.py:fn`` / ``package.module:fn``.
        seed: Seed of the train / validation split (the same seed gives the same split).
        val_fraction: Share of the training data held out as validation, in (0, 1).

    Raises:
        AdcError: on an unknown source, missing files, or a bad argument.
    """
    if not 0.0 < val_fraction < 1.0:
        raise AdcError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    name, sep, arg = spec.partition(":")
    if name in DATA_SOURCES:
        src = DATA_SOURCES.get(name)(arg if sep else None)
    elif is_plugin_spec(spec):
        src = _plugin_source(spec)
    else:
        raise AdcError(
            f"unknown data source {spec!r}; valid: {', '.join(DATA_SOURCES.names())}, or 'file.py:fn' / 'package.module:fn'"
        )
    if src.val is not None:
        train, val = src.train, src.val
    else:
        train, val = split_train_val(src.train, val_fraction=val_fraction, seed=seed)
    return DataSplits(
        train=train,
        val=val,
        test=src.test,
        num_classes=src.num_classes,
        in_channels=src.in_channels,
        image_size=src.image_size,
        name=spec,
        preprocessing=src.preprocessing,
    )


def make_loader(dataset: Dataset, batch_size: int = 128, shuffle: bool = False, seed: int = 0) -> DataLoader:
    """A single-process DataLoader; shuffling uses its own generator seeded with ``seed``."""
    # Always pass a generator: without one, every iteration draws a base seed
    # from torch's global RNG, and evaluating a model would shift the caller's random stream.
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=0, generator=gen)


def example_input(splits: DataSplits, batch: int = 1) -> torch.Tensor:
    """Zeros shaped like a batch of the data's images, for tracing and cost models."""
    return torch.zeros(batch, splits.in_channels, *splits.image_size)
