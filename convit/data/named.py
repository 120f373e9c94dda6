"""The named datasets, read from their standard on-disk layouts by torchvision's dataset classes.

torchvision checks each file's MD5 against the published archive; these readers keep its layouts and parsing but
check only that the files exist (``md5=None``), so a re-packed copy, a subset made for a test, or STL-10 without its
2.5 GB unlabelled file all load. ``download: true`` calls torchvision's downloader, which does verify the archive.
CIFAR-10 also reads this project's npz arrays (the layout of shared/data/cifar10_jpeg, see its README).

Known normalisation statistics (per channel, [0, 1] units, over the training split):
CIFAR-10 and CIFAR-100 as in the DeiT/timm CIFAR recipes and torchvision's examples (re-computed here on the CIFAR-10
arrays by tests/test_datasets.py), MNIST as in the PyTorch MNIST example (0.1307, 0.3081), Fashion-MNIST
(0.2860, 0.3530). KMNIST, SVHN and STL-10 have no one agreed value: they are computed from the training images
(convit.data.stats).
"""

from __future__ import annotations

import pickle  # noqa: S403 - only the CIFAR meta file, through torchvision's own reader
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import DataError
from .sources import ArraySource, Splits, Stats

CIFAR10_STATS = Stats((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
                      "CIFAR-10 training split (torchvision/timm CIFAR recipes)")
CIFAR100_STATS = Stats((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), "CIFAR-100 training split")
MNIST_STATS = Stats((0.1307,), (0.3081,), "MNIST training split (PyTorch's MNIST example)")
FASHION_STATS = Stats((0.2860,), (0.3530,), "Fashion-MNIST training split")

NPZ_TRAIN_FILES = tuple(f"train_{i}.npz" for i in range(5))
NPZ_TEST_FILE = "test.npz"
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

#: Where each dataset's files go under data_root (what an offline user must place there).
LAYOUTS: dict[str, str] = {
    "cifar10": "cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta} (torchvision's layout, the "
               "extracted cifar-10-python.tar.gz) or this project's train_0..4.npz + test.npz",
    "cifar100": "cifar-100-python/{train, test, meta} (the extracted cifar-100-python.tar.gz)",
    "mnist": "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte (the unzipped idx files)",
    "fashion_mnist": "FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte (the unzipped idx files)",
    "kmnist": "KMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte (the unzipped idx files)",
    "svhn": "train_32x32.mat and test_32x32.mat (the cropped-digits format)",
    "stl10": "stl10_binary/{train_X.bin, train_y.bin, test_X.bin, test_y.bin, class_names.txt}",
}


def _without_checksums(base: type) -> type:
    """``base`` with its file list's MD5s dropped: torchvision's check_integrity(path, None) tests existence."""
    attrs: dict[str, Any] = {}
    if hasattr(base, "train_list"):
        keep = 2 if base.__name__ == "STL10" else None  # the labelled files only
        attrs["train_list"] = [[name, None] for name, _ in base.train_list[:keep]]
        attrs["test_list"] = [[name, None] for name, _ in base.test_list]
    if hasattr(base, "meta"):
        attrs["meta"] = {**base.meta, "md5": None}
    if hasattr(base, "split_list"):
        attrs["split_list"] = {k: [url, name, None] for k, (url, name, _) in base.split_list.items()}
    return type(base.__name__, (base,), attrs)


def _torchvision_class(name: str) -> type:
    from torchvision import datasets  # heavy: torch; only for these layouts

    return {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100, "mnist": datasets.MNIST,
            "fashion_mnist": datasets.FashionMNIST, "kmnist": datasets.KMNIST, "svhn": datasets.SVHN,
            "stl10": datasets.STL10}[name]


def _expected_files(name: str, root: Path, train: bool) -> list[Path]:
    """The files torchvision's reader of ``name`` opens for one split (read from its class attributes)."""
    cls = _torchvision_class(name)
    if name in ("mnist", "fashion_mnist", "kmnist"):
        prefix = "train" if train else "t10k"
        raw = root / cls.__name__ / "raw"
        return [raw / f"{prefix}-images-idx3-ubyte", raw / f"{prefix}-labels-idx1-ubyte"]
    if name == "svhn":
        return [root / cls.split_list["train" if train else "test"][1]]
    folder = root / cls.base_folder
    files = [folder / f for f, _ in (cls.train_list[:2] if name == "stl10" else cls.train_list)] if train else \
        [folder / f for f, _ in cls.test_list]
    if hasattr(cls, "meta"):
        files.append(folder / cls.meta["filename"])
    return files


def _missing_message(name: str, root: Path, train: bool, download: bool) -> str:
    expected = _expected_files(name, root, train) + _expected_files(name, root, not train)  # CIFAR checks both
    missing = [p for p in dict.fromkeys(expected) if not p.is_file()]
    listed = ", ".join(str(p.relative_to(root)) for p in missing[:4]) or "(none: the files are there but unreadable)"
    gz = [p for p in missing if p.with_name(p.name + ".gz").is_file()]
    hint = f"; decompress them first (gunzip {gz[0].parent}/*.gz)" if gz else ""
    fetch = "the download did not provide them" if download else \
        "or set download: true on a machine that can reach the data"
    return (f"{name}: files missing under {str(root)!r}: {listed}{hint}. Expected "
            f"{LAYOUTS[name]}; {fetch}")


def _open_split(name: str, root: Path, train: bool, download: bool) -> Any:
    cls = _without_checksums(_torchvision_class(name))
    split_kw: dict[str, Any] = {"split": "train" if train else "test"} if name in ("svhn", "stl10") else \
        {"train": train}
    try:
        return cls(str(root), download=download, **split_kw)
    except RuntimeError:  # torchvision: "Dataset not found or corrupted. You can use download=True ..."
        raise DataError(_missing_message(name, root, train, download)) from None
    except OSError as err:  # a download attempt without network, or an unreadable file
        if download:
            raise DataError(f"{name}: could not download into {str(root)!r} ({err}). Place {LAYOUTS[name]} there "
                            "by hand on a machine without network") from None
        raise DataError(f"{name}: could not read the files under {str(root)!r} ({err}); expected "
                        f"{LAYOUTS[name]} (a truncated copy? fetch it again)") from None
    except (ValueError, pickle.UnpicklingError, EOFError, KeyError, IndexError) as err:
        raise DataError(f"{name}: the files under {str(root)!r} are not in torchvision's layout or are truncated "
                        f"({type(err).__name__}: {err}); expected {LAYOUTS[name]}") from None


def _arrays(name: str, ds: Any) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 NHWC or NHW, labels int64) from a torchvision dataset object."""
    data = ds.data.numpy() if hasattr(ds.data, "numpy") else np.asarray(ds.data)
    if name in ("svhn", "stl10"):  # stored NCHW
        data = data.transpose(0, 2, 3, 1)
    labels = getattr(ds, "targets", None)
    if labels is None:
        labels = ds.labels
    labels = labels.numpy() if hasattr(labels, "numpy") else np.asarray(labels)
    return np.ascontiguousarray(data), labels.astype(np.int64)


def _classes(name: str, ds: Any) -> list[str]:
    classes = getattr(ds, "classes", None)
    if classes:
        return [str(c) for c in classes]
    return [str(i) for i in range(10)]  # SVHN: the digits, with torchvision's label 0 for the digit 0


def _read_npz(root: Path) -> Splits:
    def load(names: tuple[str, ...]) -> ArraySource:
        parts = [np.load(root / n) for n in names]
        return ArraySource(np.concatenate([p["images"] for p in parts]),
                           np.concatenate([p["labels"] for p in parts]).astype(np.int64))

    return Splits(load(NPZ_TRAIN_FILES), load((NPZ_TEST_FILE,)), list(CIFAR10_CLASSES), 3, 32, CIFAR10_STATS)


def _check_npz(root: Path) -> bool:
    """True for this project's CIFAR-10 npz layout; a partial copy is refused with the missing files."""
    present = [f for f in NPZ_TRAIN_FILES + (NPZ_TEST_FILE,) if (root / f).is_file()]
    if present and len(present) < len(NPZ_TRAIN_FILES) + 1:
        missing = sorted(set(NPZ_TRAIN_FILES + (NPZ_TEST_FILE,)) - set(present))
        raise DataError(f"CIFAR-10 npz files missing in {str(root)!r}: {missing} (expected the layout of "
                        "shared/data/cifar10_jpeg)")
    return bool(present)


KNOWN_STATS: dict[str, Stats] = {"cifar10": CIFAR10_STATS, "cifar100": CIFAR100_STATS, "mnist": MNIST_STATS,
                                 "fashion_mnist": FASHION_STATS}


def _torchvision_root(name: str, root: Path) -> Path:
    """Accept the folder torchvision wants (holding ``cifar-10-batches-py``) or that folder itself."""
    inner = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python", "stl10": "stl10_binary",
             "mnist": "MNIST", "fashion_mnist": "FashionMNIST", "kmnist": "KMNIST"}.get(name)
    return root.parent if inner and root.name == inner else root


def read_named(name: str, root: Path, download: bool) -> Splits:
    """One of the named datasets under ``root`` (see LAYOUTS). Raises DataError naming the files to place."""
    if name == "cifar10" and _check_npz(root):
        return _read_npz(root)
    root = _torchvision_root(name, root)
    train, test = (_open_split(name, root, is_train, download) for is_train in (True, False))
    (x_train, y_train), (x_test, y_test) = _arrays(name, train), _arrays(name, test)
    channels = 1 if x_train.ndim == 3 else 3
    return Splits(ArraySource(x_train, y_train), ArraySource(x_test, y_test), _classes(name, train), channels,
                  int(x_train.shape[1]), KNOWN_STATS.get(name))


