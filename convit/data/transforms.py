"""Train and eval transforms from timm's `create_transform`, parameterised by the trial config."""

from __future__ import annotations

from typing import Callable

from PIL import Image, ImageOps
from timm.data import create_transform

from ..config import TrialConfig


def _posterize(img: Image.Image, bits: int, **_: object) -> Image.Image:
    """Posterize that keeps 0 bits meaning "all black", as Pillow < 12 did.

    RandAugment's PosterizeIncreasing asks for 0 bits at magnitude 10 (reached by m9 with mstd 0.5 about
    2 % of the time); Pillow 13 raises ValueError there, which would kill a trial mid-epoch.
    """
    if bits >= 8:
        return img
    if bits <= 0:
        return Image.new(img.mode, img.size)
    return ImageOps.posterize(img, bits)


def _patch_posterize(transform: Callable) -> Callable:
    for t in getattr(transform, "transforms", []):
        for op in getattr(t, "ops", []):
            if getattr(op, "name", "").startswith("Posterize"):
                op.aug_fn = _posterize
    return transform


def train_transform(cfg: TrialConfig, img_size: int, mean: tuple, std: tuple) -> Callable:
    return _patch_posterize(create_transform(
        img_size,
        is_training=True,
        no_aug=cfg.no_aug,
        scale=tuple(cfg.crop_scale),
        hflip=cfg.hflip,
        color_jitter=cfg.color_jitter,
        auto_augment=cfg.randaugment,
        interpolation=cfg.train_interpolation,
        mean=mean,
        std=std,
        re_prob=0.0 if cfg.no_aug else cfg.reprob,
        re_mode=cfg.remode,
        re_count=cfg.recount,
        crop_pct=1.0 if cfg.no_aug else None,
    ))


def eval_transform(cfg: TrialConfig, img_size: int, mean: tuple, std: tuple) -> Callable:
    return create_transform(img_size, is_training=False, interpolation="bicubic", mean=mean, std=std,
                            crop_pct=cfg.crop_pct)
