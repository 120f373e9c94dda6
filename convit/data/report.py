"""What a dataset holds, before a long run (``convit-sweep data``): images per split and per class, image size and
channels, the normalisation a trial would use, and the training subset at each data fraction.

It opens the data exactly as a trial does (convit.data.sources, the validation split, the nested subsets), so what
it reports is what the trials get. Pixels are decoded only to compute missing statistics (then cached).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..config import TrialConfig
from . import _subset_indices, data_geometry, divisors, sources
from .registry import open_splits
from .split import validation_split
from .stats import resolve_stats


@dataclass
class DataReport:
    dataset: str
    data_root: str | None
    classes: list[str]
    splits: dict[str, int]  # train (all), validation, pool (train minus validation), test
    per_class: dict[str, list[int]]  # split -> images per class, in class order
    channels: int
    native_size: int | None
    sizes_seen: list[tuple[int, int]]
    model_img_size: int
    model_in_chans: int
    patch_size: int | None  # None: the default (16) does not divide the image size and none was given
    patch_sizes: list[int]  # those that divide model_img_size (a grid of at least 2x2)
    norm_mean: list[float]
    norm_std: list[float]
    norm_source: str
    subsets: dict[str, int] = field(default_factory=dict)  # data fraction -> training subset size
    smallest_class_in_subset: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def describe_dataset(cfg: TrialConfig, fractions: list[float]) -> DataReport:
    """The report for ``cfg``'s dataset (its data_root, class limit, val_fraction and seed) at ``fractions``.
    Raises DataError like `convit.data.check_data`."""
    start = time.perf_counter()
    splits = open_splits(cfg)
    # an explicit patch size must fit; the default (16) not fitting is reported with the choices instead
    geometry = data_geometry(cfg, splits, check_patch="patch_size" in cfg.model_kwargs)
    stats = resolve_stats(cfg, splits, geometry.in_chans)
    labels, test_labels = splits.train.labels, splits.test.labels
    pool, val = validation_split(labels, cfg.val_fraction, cfg.seed)
    k = splits.num_classes
    count = lambda y: np.bincount(y, minlength=k).tolist()  # noqa: E731
    report = DataReport(
        dataset=cfg.dataset, data_root=_root(cfg), classes=splits.classes,
        splits={"train": len(labels), "validation": len(val), "pool": len(pool), "test": len(test_labels)},
        per_class={"train": count(labels), "validation": count(labels[val]), "pool": count(labels[pool]),
                   "test": count(test_labels)},
        channels=splits.channels, native_size=splits.native_size, sizes_seen=splits.sizes_seen[:8],
        model_img_size=geometry.img_size, model_in_chans=geometry.in_chans, patch_size=geometry.patch_size if geometry.img_size % geometry.patch_size == 0 else None,
        patch_sizes=divisors(geometry.img_size),
        norm_mean=list(stats.mean), norm_std=list(stats.std), norm_source=stats.source)
    for f in fractions:
        subset, _ = _subset_indices(labels, cfg.model_copy(update={"data_fraction": f}))
        report.subsets[f"{f:g}"] = len(subset)
        report.smallest_class_in_subset[f"{f:g}"] = int(np.bincount(labels[subset], minlength=k).min())
    report.seconds = round(time.perf_counter() - start, 2)
    return report


def _root(cfg: TrialConfig) -> str | None:
    return None if cfg.dataset == "synthetic" else str(sources.resolve_root(cfg.data_root, cfg.dataset))
