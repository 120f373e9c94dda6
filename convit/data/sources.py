"""Raw image sources: where pixels and labels come from, before subsetting and augmentation.

A source is indexable (``source.image(i)`` → PIL image) and exposes all its labels up front, so that
subsets can be drawn without touching any pixels.  CIFAR-10 arrays are decompressed once per process
(`functools.lru_cache`): a sweep running many trials in one worker pays the ~1 s load once.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import DataError

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_TRAIN_FILES = tuple(f"train_{i}.npz" for i in range(5))
CIFAR10_TEST_FILE = "test.npz"
DATA_ROOT_ENV = "CONVIT_DATA_ROOT"


@dataclass
class ArraySource:
    """Images held in memory as uint8 NHWC (CIFAR-10, synthetic)."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> Image.Image:
        return Image.fromarray(self.images[i])

    def take(self, keep: np.ndarray) -> "ArraySource":
        return ArraySource(self.images[keep], self.labels[keep])


@dataclass
class FileSource:
    """Images on disk, decoded on demand (ImageFolder)."""

    paths: list[str]
    labels: np.ndarray
    classes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> Image.Image:
        with Image.open(self.paths[i]) as img:
            return img.convert("RGB")

    def take(self, keep: np.ndarray) -> "FileSource":
        return FileSource([self.paths[i] for i in keep], self.labels[keep], self.classes)


Source = ArraySource | FileSource


@dataclass
class Splits:
    """The train and test sources of one dataset (ImageFolder: train/ and val/), with its class count and
    normalisation.  The validation split is carved out of ``train`` (convit.data.split)."""

    train: Source
    test: Source
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def resolve_root(data_root: str | None, dataset: str) -> Path:
    """The dataset folder: the config key, else $CONVIT_DATA_ROOT; it must exist."""
    raw = data_root or os.environ.get(DATA_ROOT_ENV)
    if not raw:
        raise DataError(f"dataset '{dataset}' needs a data folder: set 'data_root' in the config "
                        f"or the environment variable {DATA_ROOT_ENV}")
    root = Path(raw).expanduser()
    if not root.is_dir():
        raise DataError(f"data_root {str(root)!r} is not a directory (set 'data_root' or {DATA_ROOT_ENV})")
    return root


def check_cifar10(root: Path) -> None:
    missing = [f for f in CIFAR10_TRAIN_FILES + (CIFAR10_TEST_FILE,) if not (root / f).is_file()]
    if missing:
        raise DataError(f"CIFAR-10 files missing in {str(root)!r}: {missing} "
                        "(expected the npz layout of shared/data/cifar10_jpeg)")


@functools.lru_cache(maxsize=2)
def _load_cifar10(root: str) -> tuple[ArraySource, ArraySource]:
    def load(names: tuple[str, ...]) -> ArraySource:
        parts = [np.load(Path(root) / n) for n in names]
        return ArraySource(np.concatenate([p["images"] for p in parts]),
                           np.concatenate([p["labels"] for p in parts]).astype(np.int64))

    return load(CIFAR10_TRAIN_FILES), load((CIFAR10_TEST_FILE,))


def cifar10_train_labels(root: Path) -> np.ndarray:
    """Train labels only (cheap: the npz members are decompressed one by one)."""
    check_cifar10(root)
    return np.concatenate([np.load(root / n)["labels"] for n in CIFAR10_TRAIN_FILES]).astype(np.int64)


def _first_classes(src: Source, n: int | None) -> Source:
    if n is None:
        return src
    keep = np.flatnonzero(src.labels < n)
    if isinstance(src, ArraySource):
        return src.take(keep)
    return FileSource([src.paths[i] for i in keep], src.labels[keep], src.classes[:n])


def cifar10(root: Path, num_classes: int | None) -> Splits:
    check_cifar10(root)
    train, val = _load_cifar10(str(root.resolve()))
    n = num_classes or 10
    return Splits(_first_classes(train, num_classes), _first_classes(val, num_classes), n,
                  CIFAR10_MEAN, CIFAR10_STD)


def _folder(split_dir: Path, classes: list[str]) -> FileSource:
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset  # heavy: torch; only to build the data

    class_to_idx = {c: i for i, c in enumerate(classes)}
    try:
        samples = make_dataset(str(split_dir), class_to_idx, extensions=IMG_EXTENSIONS)
    except FileNotFoundError as err:
        raise DataError(f"{split_dir}: {err}") from None
    return FileSource([p for p, _ in samples], np.array([t for _, t in samples], dtype=np.int64), classes)


def imagefolder_classes(root: Path, num_classes: int | None) -> list[str]:
    """Sorted class folder names of root/train (the first N when a limit is set)."""
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise DataError(f"ImageFolder layout expects {str(root / split)!r} with one folder per class")
    classes = sorted(e.name for e in os.scandir(root / "train") if e.is_dir())
    if not classes:
        raise DataError(f"no class folders in {str(root / 'train')!r}")
    if num_classes is not None:
        if num_classes > len(classes):
            raise DataError(f"num_classes={num_classes} but {root / 'train'} has {len(classes)} classes")
        classes = classes[:num_classes]
    return classes


def imagefolder(root: Path, num_classes: int | None) -> Splits:
    classes = imagefolder_classes(root, num_classes)
    return Splits(_folder(root / "train", classes), _folder(root / "val", classes), len(classes),
                  IMAGENET_MEAN, IMAGENET_STD)


def synthetic(train_size: int, val_size: int, num_classes: int | None, img_size: int) -> Splits:
    """A learnable toy problem for smoke tests: each class is a fixed coarse colour pattern plus noise.

    It is the same for every seed (like a real dataset), so seeds only change subsets and training.
    """
    n_cls = num_classes or 10
    rng = np.random.default_rng(20210319)
    patterns = rng.integers(0, 256, size=(n_cls, 4, 4, 3)).astype(np.float32)
    reps = -(-img_size // 4)

    def make(n: int) -> ArraySource:
        labels = np.arange(n, dtype=np.int64) % n_cls
        base = np.kron(patterns[labels], np.ones((1, reps, reps, 1), np.float32))[:, :img_size, :img_size]
        noise = rng.normal(0.0, 40.0, size=base.shape)
        return ArraySource(np.clip(base + noise, 0, 255).astype(np.uint8), labels)

    return Splits(make(train_size), make(val_size), n_cls, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
