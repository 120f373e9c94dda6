"""Data for one trial: sources (CIFAR-10 npz, ImageFolder, synthetic), the nested subset, transforms.

`check_data(cfg)` validates everything a trial needs (folder, files, subset size vs batch) without
decoding images, so a CLI can refuse bad input before writing anything.  `build_data(cfg)` returns the
`TrialData` the engine trains on.

Importing this package and `check_data` are torch-free (numpy, PIL and the files): the torch datasets and timm's
transforms (`dataset`, `transforms`) are imported by `build_data`, and `TrainDataset`/`EvalDataset` on first
access; the recipe names are checked by `recipe` (timm only where its tested lists do not answer).
"""

from __future__ import annotations

from pathlib import Path

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import TrialConfig
from .budget import TrainingPlan, plan_budget
from . import sources
from .errors import DataError
from .order import EpochBatchSampler, epoch_order, steps_per_epoch
from .recipe import check_recipe_names
from .split import validation_split
from .subset import nested_subset, subset_record

if TYPE_CHECKING:
    from .dataset import EvalDataset, TrainDataset

__all__ = ["DataError", "EpochBatchSampler", "EvalDataset", "TrainDataset", "TrainingPlan", "TrialData", "build_data",
           "check_data", "epoch_order", "nested_subset", "plan_budget", "steps_per_epoch", "subset_record",
           "validation_split"]


def __getattr__(name: str) -> Any:
    """The torch datasets, imported on first use (PEP 562): the data check never needs them."""
    if name in ("EvalDataset", "TrainDataset"):
        from . import dataset  # heavy: torch

        return getattr(dataset, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class TrialData:
    """What a trial trains and evaluates on.  ``subset`` indexes ``train``'s source (the pool left after the
    validation split, then the data fraction); ``val`` is the held-out validation split of the training
    data; ``test`` is the dataset's test split (evaluated after the last epoch)."""

    train: TrainDataset
    val: EvalDataset
    test: EvalDataset
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


def _subset_indices(labels: np.ndarray, cfg: TrialConfig) -> tuple[np.ndarray, np.ndarray]:
    """(subset, val): indices into the training source of the trial's subset and of the validation split."""
    pool, val = validation_split(labels, cfg.val_fraction, cfg.seed)
    return pool[nested_subset(labels[pool], cfg.data_fraction, cfg.seed)], val


def check_init_checkpoint(cfg: TrialConfig) -> None:
    """Before a fresh start (the CLI, a sweep's pre-check): ``init_checkpoint`` names a file. Its content is
    checked when the trial starts (convit.models.finetune, needs torch); a resumed trial no longer needs it."""
    if cfg.init_checkpoint and not Path(cfg.init_checkpoint).expanduser().is_file():
        raise DataError(f"init_checkpoint {cfg.init_checkpoint} is not a file; give the path of a timm-format state "
                        "dict or one of this project's checkpoints", key="init_checkpoint")


def check_data(cfg: TrialConfig, world_size: int = 1) -> TrainingPlan:
    """The trial's training plan; raises DataError (with the key to fix) if the data is missing or does not
    fit the batch size and budget, or if a recipe name timm does not know would only fail inside the trial
    (the optimizer, the RandAugment string).  Decodes no pixels."""
    check_recipe_names(cfg)
    labels = _train_labels(cfg)
    if len(labels) == 0:
        raise DataError(f"dataset '{cfg.dataset}' has no training images")
    subset, _ = _subset_indices(labels, cfg)
    n = len(subset)
    if cfg.batch_size > n:
        raise DataError(f"batch_size={cfg.batch_size} is larger than the training subset ({n} images at "
                        f"data_fraction={cfg.data_fraction}, after holding out val_fraction={cfg.val_fraction}); "
                        "lower batch_size or raise data_fraction", key="batch_size")
    if cfg.batch_size % world_size:
        raise DataError(f"batch_size={cfg.batch_size} (global) is not divisible by {world_size} processes",
                        key="batch_size")
    mixing = (cfg.mixup > 0 or cfg.cutmix > 0) and cfg.mixup_prob > 0
    if mixing and (cfg.batch_size // world_size) % 2:
        raise DataError(f"mixup/cutmix needs an even batch per process, got {cfg.batch_size // world_size}",
                        key="batch_size")
    return plan_budget(cfg, n)


def _splits(cfg: TrialConfig, img_size: int) -> sources.Splits:
    if cfg.dataset == "synthetic":
        return sources.synthetic(cfg.synthetic_train_size, cfg.synthetic_val_size, cfg.num_classes, img_size)
    root = sources.resolve_root(cfg.data_root, cfg.dataset)
    if cfg.dataset == "cifar10":
        return sources.cifar10(root, cfg.num_classes)
    return sources.imagefolder(root, cfg.num_classes)


def build_data(cfg: TrialConfig) -> TrialData:
    from .dataset import EvalDataset, TrainDataset  # heavy: torch, only to train
    from .transforms import eval_transform, train_transform  # heavy: timm, torch, only to train

    img_size = cfg.resolve().img_size
    splits = _splits(cfg, img_size)
    labels = splits.train.labels
    subset, val = _subset_indices(labels, cfg)
    evaluate = eval_transform(cfg, img_size, splits.mean, splits.std)
    record = subset_record(labels, subset)
    record["val"] = subset_record(labels, val)
    return TrialData(
        train=TrainDataset(splits.train, train_transform(cfg, img_size, splits.mean, splits.std)),
        val=EvalDataset(splits.train.take(val), evaluate),
        test=EvalDataset(splits.test, evaluate),
        subset=subset,
        subset_record=record,
        num_classes=splits.num_classes,
    )
