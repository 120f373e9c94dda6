"""Open a trial's dataset with the reader of its layout (the table in convit.data.sources), once per process."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from ..config import DATASETS, TrialConfig
from .errors import DataError
from .folder import read_imagefolder
from .huggingface import read_hf
from .named import read_named
from .sources import Splits, resolve_root
from .synthetic import synthetic

NAMED = DATASETS[:7]


def first_classes(splits: Splits, n: int | None) -> Splits:
    """Keep the first ``n`` classes (labels < n) of both splits; ``None`` keeps all."""
    if n is None:
        return splits
    if n > splits.num_classes:
        raise DataError(f"num_classes={n} but the dataset has {splits.num_classes} classes", key="num_classes")
    keep = lambda src: src.take(np.flatnonzero(src.labels < n))  # noqa: E731
    return Splits(keep(splits.train), keep(splits.test), splits.classes[:n], splits.channels, splits.native_size,
                  splits.known_stats, splits.sizes_seen, splits.fingerprint)


def check_labels(splits: Splits, dataset: str) -> Splits:
    """Both splits hold images, and every label is a class index in [0, number of classes): a test split of
    unlabelled rows (label -1, the Hub's marker) or a label beyond the class list would only fail at the end of
    training. Raises DataError naming the split."""
    for name, source in (("training", splits.train), ("test", splits.test)):
        if len(source) == 0:
            raise DataError(f"{dataset}: the {name} split holds no images")
        low, high = int(source.labels.min()), int(source.labels.max())
        if low < 0:
            raise DataError(f"{dataset}: the {name} split has unlabelled images (label {low}, e.g. a Hub test "
                            "split without labels); use a labelled split as the test split")
        if high >= splits.num_classes:
            raise DataError(f"{dataset}: the {name} split has label {high} but the dataset names "
                            f"{splits.num_classes} classes")
    return splits


@functools.lru_cache(maxsize=4)
def _open(dataset: str, root: str, download: bool, image_column: str, label_column: str) -> Splits:
    if dataset == "hf":
        splits = read_hf(Path(root), image_column, label_column)
    elif dataset == "imagefolder":
        splits = read_imagefolder(Path(root))
    else:
        splits = read_named(dataset, Path(root), download)
    return check_labels(splits, dataset)


def open_splits(cfg: TrialConfig) -> Splits:
    """The trial's dataset with its class limit applied (cached per process: a sweep worker reads it once).
    Raises DataError with what to fix when the files are missing or in another layout."""
    if cfg.dataset == "synthetic":
        return synthetic(cfg.synthetic_train_size, cfg.synthetic_val_size, cfg.num_classes,
                         int(cfg.model_kwargs.get("img_size", 32)))
    if cfg.download and cfg.dataset not in NAMED:
        raise DataError(f"download applies to the named datasets ({', '.join(NAMED)}), not to "
                        f"'{cfg.dataset}': remove it", key="download")
    if cfg.download and cfg.data_root:  # torchvision downloads into it
        Path(cfg.data_root).expanduser().mkdir(parents=True, exist_ok=True)
    root = resolve_root(cfg.data_root, cfg.dataset)
    splits = _open(cfg.dataset, str(root.resolve()), cfg.download, cfg.image_column, cfg.label_column)
    return first_classes(splits, cfg.num_classes)
