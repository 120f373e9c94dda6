"""Data for one trial: sources (CIFAR-10 npz, ImageFolder, synthetic), the nested subset, transforms.

`check_data(cfg)` validates everything a trial needs (folder, files, subset size vs batch) without
decoding images, so a CLI can refuse bad input before writing anything.  `build_data(cfg)` returns the
`TrialData` the engine trains on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import TrialConfig
from . import sources
from .dataset import EvalDataset, TrainDataset
from .errors import DataError
from .order import EpochBatchSampler, epoch_order, steps_per_epoch
from .subset import nested_subset, subset_record, subset_size
from .transforms import eval_transform, train_transform

__all__ = ["DataError", "EpochBatchSampler", "TrialData", "build_data", "check_data", "epoch_order",
           "nested_subset", "steps_per_epoch", "subset_record"]


@dataclass
class TrialData:
    train: TrainDataset
    val: EvalDataset
    subset: np.ndarray
    subset_record: dict
    num_classes: int


def _train_labels(cfg: TrialConfig) -> np.ndarray:
    """Training labels after the class limit, computed without decoding pixels."""
    if cfg.dataset == "synthetic":
        n = cfg.num_classes or 10
        return np.arange(cfg.synthetic_train_size) % n
    root = sources.resolve_root(cfg.data_root, cfg.dataset)
    if cfg.dataset == "cifar10":
        labels = sources.cifar10_train_labels(root)
        return labels[labels < (cfg.num_classes or 10)]
    classes = sources.imagefolder_classes(root, cfg.num_classes)
    counts = [sum(1 for e in (root / "train" / c).iterdir() if e.is_file()) for c in classes]
    return np.repeat(np.arange(len(classes)), counts)


def check_data(cfg: TrialConfig, world_size: int = 1) -> None:
    """Raise DataError if the trial's data is missing or does not fit its batch size."""
    labels = _train_labels(cfg)
    if len(labels) == 0:
        raise DataError(f"dataset '{cfg.dataset}' has no training images")
    n = subset_size(labels, cfg.data_fraction)
    if cfg.batch_size > n:
        raise DataError(f"batch_size={cfg.batch_size} is larger than the training subset ({n} images at "
                        f"data_fraction={cfg.data_fraction}); lower batch_size or raise data_fraction")
    if cfg.batch_size % world_size:
        raise DataError(f"batch_size={cfg.batch_size} (global) is not divisible by {world_size} processes")
    mixing = (cfg.mixup > 0 or cfg.cutmix > 0) and cfg.mixup_prob > 0
    if mixing and (cfg.batch_size // world_size) % 2:
        raise DataError(f"mixup/cutmix needs an even batch per process, got {cfg.batch_size // world_size}")


def _splits(cfg: TrialConfig, img_size: int) -> sources.Splits:
    if cfg.dataset == "synthetic":
        return sources.synthetic(cfg.synthetic_train_size, cfg.synthetic_val_size, cfg.num_classes, img_size)
    root = sources.resolve_root(cfg.data_root, cfg.dataset)
    if cfg.dataset == "cifar10":
        return sources.cifar10(root, cfg.num_classes)
    return sources.imagefolder(root, cfg.num_classes)


def build_data(cfg: TrialConfig) -> TrialData:
    img_size = cfg.resolve().img_size
    splits = _splits(cfg, img_size)
    subset = nested_subset(splits.train.labels, cfg.data_fraction, cfg.seed)
    return TrialData(
        train=TrainDataset(splits.train, train_transform(cfg, img_size, splits.mean, splits.std)),
        val=EvalDataset(splits.val, eval_transform(cfg, img_size, splits.mean, splits.std)),
        subset=subset,
        subset_record=subset_record(splits.train.labels, subset),
        num_classes=splits.num_classes,
    )
