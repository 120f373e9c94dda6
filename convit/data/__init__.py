"""Data for one trial: the dataset (named layouts, ImageFolder, Hugging Face, synthetic: convit.data.sources), the
model's input geometry and normalisation, the validation split, the nested subset, the transforms.

`check_data(cfg)` validates everything a trial needs (folder, files, image size vs patch size, subset size vs
batch) without decoding images beyond a few headers, so a CLI can refuse bad input before writing anything.
`build_data(cfg)` returns the `TrialData` the engine trains on.

Importing this package, and `check_data` on this project's CIFAR-10 arrays, ImageFolder trees and synthetic data,
are torch-free (numpy, PIL and the files; torchvision's readers of the named layouts import torch): the torch
datasets and timm's transforms (`dataset`, `transforms`) are imported by `build_data`, and
`TrainDataset`/`EvalDataset` on first access; the recipe names are checked by `recipe`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import TrialConfig
from . import sources
from .budget import TrainingPlan, plan_budget
from .errors import DataError
from .order import EpochBatchSampler, epoch_order, steps_per_epoch
from .recipe import check_recipe_names
from .registry import open_splits
from .sources import Stats
from .split import validation_split
from .stats import check_norm_stats, resolve_stats
from .subset import nested_subset, subset_record

if TYPE_CHECKING:
    from .dataset import EvalDataset, TrainDataset

__all__ = ["DataError", "EpochBatchSampler", "EvalDataset", "Geometry", "TrainDataset", "TrainingPlan", "TrialData",
           "build_data", "check_data", "data_geometry", "epoch_order", "nested_subset", "plan_budget",
           "steps_per_epoch", "subset_record", "validation_split"]


def __getattr__(name: str) -> Any:
    """The torch datasets, imported on first use (PEP 562): the data check never needs them."""
    if name in ("EvalDataset", "TrainDataset"):
        from . import dataset  # heavy: torch

        return getattr(dataset, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class Geometry:
    """What the model is built for: ``img_size`` (square, pixels), ``in_chans`` (1 or 3), ``patch_size``."""

    img_size: int
    in_chans: int
    patch_size: int

    def model_kwargs(self, cfg: TrialConfig) -> dict[str, Any]:
        """The config's model_kwargs completed with the dataset's size and channels (what create_model takes)."""
        return {**cfg.model_kwargs, "img_size": self.img_size, "in_chans": self.in_chans}


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
    geometry: Geometry
    stats: Stats


def divisors(n: int) -> list[int]:
    """The patch sizes that divide an image of ``n`` pixels into a grid of at least 2x2."""
    return [d for d in range(2, n // 2 + 1) if n % d == 0]


def data_geometry(cfg: TrialConfig, splits: sources.Splits | None = None, check_patch: bool = True) -> Geometry:
    """The image size and channels the trial's model gets: the config's when set, else the dataset's own.
    Raises DataError (key model_kwargs.*) for RGB data asked to be one channel, images of differing sizes with
    no img_size, or (``check_patch``) a patch size that does not divide the image size."""
    splits = splits or open_splits(cfg)
    kw = cfg.model_kwargs
    in_chans = int(kw.get("in_chans", splits.channels))
    if in_chans == 1 and splits.channels == 3:
        raise DataError(f"model_kwargs.in_chans=1 but '{cfg.dataset}' is RGB; remove it (grayscale data trains with "
                        "1 channel by default, RGB with 3)", key="model_kwargs.in_chans")
    img_size = kw.get("img_size") or splits.native_size
    if img_size is None:
        seen = ", ".join(f"{w}x{h}" for w, h in splits.sizes_seen[:4])
        raise DataError(f"the images of '{cfg.dataset}' differ in size or are not square ({seen}): set "
                        "model_kwargs.img_size (they are resized and cropped to it)", key="model_kwargs.img_size")
    patch = int(kw.get("patch_size", 16))
    if check_patch and img_size % patch:
        where = "model_kwargs.img_size" if "img_size" in kw else f"the native size of '{cfg.dataset}'"
        raise DataError(f"patch_size={patch} does not divide img_size={img_size} ({where}): choose a patch_size "
                        f"among {divisors(int(img_size))[:8]}, or set model_kwargs.img_size to a multiple of {patch}",
                        key="model_kwargs.patch_size")
    return Geometry(int(img_size), in_chans, patch)


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
    """The trial's training plan; raises DataError (with the key to fix) if the data is missing, its images do
    not fit the model (channels, patch size), the subset does not fit the batch size and budget, or a recipe name
    timm does not know would only fail inside the trial (the optimizer, the RandAugment string)."""
    check_recipe_names(cfg)
    splits = open_splits(cfg)
    check_norm_stats(cfg, data_geometry(cfg, splits).in_chans)
    labels = splits.train.labels
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


def build_data(cfg: TrialConfig) -> TrialData:
    """The trial's datasets, built from ``cfg`` (raises DataError like `check_data`)."""
    from .dataset import EvalDataset, TrainDataset  # heavy: torch, only to train
    from .transforms import eval_transform, train_transform  # heavy: timm, torch, only to train

    splits = open_splits(cfg)
    geometry = data_geometry(cfg, splits)
    stats = resolve_stats(cfg, splits, geometry.in_chans)
    mode = "L" if geometry.in_chans == 1 else "RGB"
    labels = splits.train.labels
    subset, val = _subset_indices(labels, cfg)
    evaluate = eval_transform(cfg, geometry.img_size, stats.mean, stats.std)
    record = subset_record(labels, subset)
    record["val"] = subset_record(labels, val)
    return TrialData(
        train=TrainDataset(splits.train, train_transform(cfg, geometry.img_size, stats.mean, stats.std), mode),
        val=EvalDataset(splits.train.take(val), evaluate, mode),
        test=EvalDataset(splits.test, evaluate, mode),
        subset=subset,
        subset_record=record,
        num_classes=splits.num_classes,
        geometry=geometry,
        stats=stats,
    )
