"""Small datasets written in each real on-disk layout from the shared CIFAR-10 arrays, for tests of the readers.

Every writer follows the format's own specification (what torchvision's reader parses), not our reader's code:
CIFAR pickles (dicts with ``data`` N×3072 uint8 channel-planar, ``labels`` / ``fine_labels``), IDX files (magic
0x0803/0x0801, big-endian sizes), SVHN's .mat (``X`` H×W×3×N, ``y`` N×1 with 10 for the digit 0), STL-10's binaries
(N×3×96×96, column-major images; labels 1..10), ImageFolder PNGs, and Hugging Face save_to_disk and parquet.
"""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CIFAR = Path(os.environ.get("CONVIT_DATA_ROOT", REPO.parent / "shared" / "data" / "cifar10_jpeg"))
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def cifar_sample(per_class: int, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """The first ``per_class`` images of each class of the shared CIFAR-10 ``split`` (NHWC uint8, labels)."""
    data = np.load(CIFAR / ("train_0.npz" if split == "train" else "test.npz"))
    images, labels = data["images"], data["labels"].astype(np.int64)
    keep = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(10)])
    return images[keep], labels[keep]


def gray(images: np.ndarray, size: int = 28) -> np.ndarray:
    """N×size×size uint8 luminance images (the MNIST family's shape)."""
    return np.stack([np.asarray(Image.fromarray(im).convert("L").resize((size, size), Image.BICUBIC))
                     for im in images])


def write_cifar10_pickles(root: Path, train: tuple, test: tuple) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    parts = np.array_split(np.arange(len(train[1])), 5)
    for i, idx in enumerate(parts, 1):
        _pickle(folder / f"data_batch_{i}", {"data": _planar(train[0][idx]), "labels": train[1][idx].tolist()})
    _pickle(folder / "test_batch", {"data": _planar(test[0]), "labels": test[1].tolist()})
    _pickle(folder / "batches.meta", {"label_names": CLASSES})


def write_cifar100_pickles(root: Path, train: tuple, test: tuple) -> None:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    _pickle(folder / "train", {"data": _planar(train[0]), "fine_labels": train[1].tolist()})
    _pickle(folder / "test", {"data": _planar(test[0]), "fine_labels": test[1].tolist()})
    _pickle(folder / "meta", {"fine_label_names": [f"c{i}" for i in range(100)]})


def write_idx(root: Path, folder_name: str, train: tuple, test: tuple) -> None:
    raw = root / folder_name / "raw"
    raw.mkdir(parents=True)
    for prefix, (images, labels) in (("train", train), ("t10k", test)):
        n, h, w = images.shape
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x0803, n, h, w) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x0801, n)
                                                          + labels.astype(np.uint8).tobytes())


def write_svhn(root: Path, train: tuple, test: tuple) -> None:
    from scipy.io import savemat

    for name, (images, labels) in (("train_32x32.mat", train), ("test_32x32.mat", test)):
        y = np.where(labels == 0, 10, labels).astype(np.uint8).reshape(-1, 1)
        savemat(root / name, {"X": images.transpose(1, 2, 3, 0), "y": y})


def write_stl10(root: Path, train: tuple, test: tuple) -> None:
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    for prefix, (images, labels) in (("train", train), ("test", test)):
        big = images.repeat(3, axis=1).repeat(3, axis=2)  # 32 -> 96 px
        (folder / f"{prefix}_X.bin").write_bytes(big.transpose(0, 3, 2, 1).astype(np.uint8).tobytes())
        (folder / f"{prefix}_y.bin").write_bytes((labels + 1).astype(np.uint8).tobytes())
    (folder / "class_names.txt").write_text("\n".join(CLASSES) + "\n")


def write_imagefolder(root: Path, train: tuple, test: tuple, mode: str = "RGB") -> None:
    for split, (images, labels) in (("train", train), ("val", test)):
        for i, (im, label) in enumerate(zip(images, labels)):
            folder = root / split / CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(im).convert(mode).save(folder / f"{i:05d}.png")


def write_hf(root: Path, train: tuple, test: tuple, parquet: bool = False, image_column: str = "image") -> None:
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image as HFImage, disable_progress_bars

    disable_progress_bars()
    features = Features({image_column: HFImage(), "label": ClassLabel(names=CLASSES)})

    def table(images: np.ndarray, labels: np.ndarray) -> Dataset:
        return Dataset.from_dict({image_column: [Image.fromarray(im) for im in images],
                                  "label": labels.tolist()}, features=features)

    splits = DatasetDict(train=table(*train), test=table(*test))
    if parquet:
        (root / "data").mkdir(parents=True)
        for name, ds in splits.items():
            ds.to_parquet(str(root / "data" / f"{name}-00000-of-00001.parquet"))
    else:
        splits.save_to_disk(str(root))


def _planar(images: np.ndarray) -> np.ndarray:
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def write_all(root: Path, per_class: int = 12, test_per_class: int = 4) -> Path:
    """Every named layout side by side under ``root`` (torchvision's layouts coexist in one folder), plus an
    ImageFolder tree and Hugging Face parquet files; returns ``root``."""
    train, test = cifar_sample(per_class), cifar_sample(test_per_class, "test")
    gray_train, gray_test = (gray(train[0]), train[1]), (gray(test[0]), test[1])
    root.mkdir(parents=True, exist_ok=True)
    write_cifar10_pickles(root, train, test)
    write_cifar100_pickles(root, train, test)
    for folder in ("MNIST", "FashionMNIST", "KMNIST"):
        write_idx(root, folder, gray_train, gray_test)
    write_svhn(root, train, test)
    write_stl10(root, train, test)
    write_imagefolder(root, train, test)
    write_hf(root, train, test, parquet=True)
    return root
