"""Raw image sources: where pixels and labels come from, before subsetting and augmentation.

This module holds the types and the data folder rule; convit.data.registry opens a trial's dataset (once per
process, cached) with the reader of its layout. Its train and test `Source`s expose every label up
front, so subsets are drawn without touching pixels, and decode one image at a time (``source.image(i)`` → a PIL
image in the dataset's own mode: "L" for grayscale, "RGB" otherwise). The readers live in their own modules:

=================  =======================================================  ====================================
``dataset``        layout under ``data_root``                               module
=================  =======================================================  ====================================
cifar10            this project's npz arrays, or ``cifar-10-batches-py``    `named` (torchvision's CIFAR10)
cifar100           ``cifar-100-python``                                     `named` (torchvision's CIFAR100)
mnist              ``MNIST/raw/*-ubyte``                                    `named` (torchvision's MNIST)
fashion_mnist      ``FashionMNIST/raw/*-ubyte``                             `named` (torchvision's FashionMNIST)
kmnist             ``KMNIST/raw/*-ubyte``                                   `named` (torchvision's KMNIST)
svhn               ``train_32x32.mat``, ``test_32x32.mat``                  `named` (torchvision's SVHN)
stl10              ``stl10_binary/{train,test}_{X,y}.bin`` (labelled)       `named` (torchvision's STL10)
imagefolder        ``train/<class>/*``, ``val/<class>/*`` (or ``test/``)     `folder`
hf                 a Hugging Face ``save_to_disk`` folder, or parquet files `huggingface`
synthetic          nothing (generated)                                      `synthetic`
=================  =======================================================  ====================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import DataError

DATA_ROOT_ENV = "CONVIT_DATA_ROOT"


class Source(Protocol):
    """One split of a dataset: ``labels`` (int64, one per image) and ``image(i)`` (PIL, the dataset's mode)."""

    labels: np.ndarray

    def __len__(self) -> int: ...

    def image(self, i: int) -> Image.Image: ...

    def take(self, keep: np.ndarray) -> "Source": ...


class UnreadableImage(OSError):
    """An image file of the dataset that Pillow cannot decode (found when a trial reads it); names the file."""


def to_8bit(img: Image.Image) -> Image.Image:
    """16- and 32-bit integer images (medical, microscopy PNG/TIFF) scaled to 8 bits: Pillow's own conversion to "L"
    clips them at 255, which turns most of a 16-bit image white."""
    if img.mode not in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return img
    pixels = np.asarray(img, dtype=np.float64)
    top = 65535.0 if img.mode.startswith("I;16") or (img.mode == "I" and pixels.max(initial=0) > 255) else 255.0
    if img.mode == "F":
        top = 1.0 if pixels.max(initial=0) <= 1.0 else 255.0
    return Image.fromarray(np.clip(np.round(pixels / top * 255.0), 0, 255).astype(np.uint8), mode="L")


@dataclass
class ArraySource:
    """Images held in memory as uint8, NHWC (RGB) or NHW (grayscale): the named datasets, synthetic."""

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
    """Images on disk, decoded on demand (ImageFolder); ``mode`` is the PIL mode every image is converted to."""

    paths: list[str]
    labels: np.ndarray
    mode: str = "RGB"

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> Image.Image:
        try:
            with Image.open(self.paths[i]) as img:
                return to_8bit(img).convert(self.mode)
        except (UnidentifiedImageError, OSError, ValueError) as err:
            raise UnreadableImage(f"{self.paths[i]} cannot be decoded ({err}); remove or replace the file") from None

    def take(self, keep: np.ndarray) -> "FileSource":
        return FileSource([self.paths[i] for i in keep], self.labels[keep], self.mode)


@dataclass(frozen=True)
class Stats:
    """Per-channel normalisation: ``mean``/``std`` in [0, 1] units (one value per channel), and where they
    come from (a citation, "computed over N training images", or "config")."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str


@dataclass
class Splits:
    """A dataset as a trial sees it: train and test sources (the validation split is carved out of ``train``
    by convit.data.split), class names, channels (1 or 3), the native square image size (None when images
    differ in size) and the known normalisation (None: computed from the training images, convit.data.stats)."""

    train: Source
    test: Source
    classes: list[str]
    channels: int
    native_size: int | None
    known_stats: Stats | None = None
    sizes_seen: list[tuple[int, int]] = field(default_factory=list)
    fingerprint: str = ""  # identifies the files (for the statistics cache); empty for in-memory data

    @property
    def num_classes(self) -> int:
        return len(self.classes)


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
