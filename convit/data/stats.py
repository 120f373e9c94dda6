"""Input normalisation: which per-channel mean and std a trial uses, and where they come from.

``norm_stats: dataset`` (the default) takes the published values of a named dataset (convit.data.named), else
computes them from the training split: exactly over all images for datasets held in memory, over a seeded sample of
`SAMPLE` images for files (ImageFolder, Hugging Face), cached in ``$XDG_CACHE_HOME/convit/norm_stats`` under a key
of the file list (names and sizes), so a sweep computes them once. ``imagenet`` is timm's ImageNet mean/std (for
fine-tuning ImageNet weights; for one channel, timm's rule: the mean of the three). An explicit ``{mean, std}``
is used as given. Statistics of grayscale data used with ``in_chans: 3`` are repeated per channel (the converted
image has three equal channels, hence the same statistics in each).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..config import NormStats, TrialConfig
from ..records import write_json
from .errors import DataError
from .sources import ArraySource, Splits, Stats, UnreadableImage

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # timm.data.IMAGENET_DEFAULT_MEAN
IMAGENET_STD = (0.229, 0.224, 0.225)  # timm.data.IMAGENET_DEFAULT_STD
SAMPLE = 2000
CHUNK = 4096
MIN_STD = 1e-3


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "convit" / "norm_stats"


def _mean_std(chunks: Iterable[np.ndarray], channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 pixels given as chunks of shape (..., channels), in [0, 1] units, rounded
    to 4 decimals (one pass: sums of values and of squares in float64)."""
    total, squares, count = np.zeros(channels), np.zeros(channels), 0
    for chunk in chunks:
        pixels = chunk.reshape(-1, channels).astype(np.float64) / 255.0
        total += pixels.sum(0)
        squares += np.square(pixels).sum(0)
        count += len(pixels)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean ** 2, 0.0))
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)


def _from_arrays(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    channels = 1 if images.ndim == 3 else images.shape[-1]
    return _mean_std((images[i:i + CHUNK] for i in range(0, len(images), CHUNK)), channels)


def _decoded(splits: Splits, picks: np.ndarray) -> Iterator[np.ndarray]:
    mode = "L" if splits.channels == 1 else "RGB"
    for i in picks:
        try:
            image = splits.train.image(int(i))
        except UnreadableImage as err:
            raise DataError(str(err)) from None
        yield np.asarray(image.convert(mode))


def _from_sample(splits: Splits) -> tuple[tuple[float, ...], tuple[float, ...], int]:
    n = len(splits.train)
    picks = np.sort(np.random.default_rng(0).choice(n, min(SAMPLE, n), replace=False))
    mean, std = _mean_std(_decoded(splits, picks), splits.channels)
    return mean, std, len(picks)


def _usable(mean: tuple[float, ...], std: tuple[float, ...], source: str) -> Stats:
    """A channel that never varies in the training images (std 0) would divide by zero: it keeps std 1."""
    if min(std) >= MIN_STD:
        return Stats(mean, std, source)
    return Stats(mean, tuple(s if s >= MIN_STD else 1.0 for s in std), source + "; constant channel(s): std 1")


def computed_stats(splits: Splits) -> Stats:
    """The training split's statistics (see the module docstring), read from the cache when the files match."""
    if isinstance(splits.train, ArraySource):
        mean, std = _from_arrays(splits.train.images)
        return _usable(mean, std, f"computed over the {len(splits.train)} training images")
    key = f"{splits.fingerprint}:{splits.num_classes}:{len(splits.train)}"
    path = cache_dir() / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".json")
    try:
        cached = json.loads(path.read_text())
        return _usable(tuple(cached["mean"]), tuple(cached["std"]), cached["source"] + " (cached)")
    except (OSError, ValueError, KeyError):
        pass
    mean, std, n = _from_sample(splits)
    stats = Stats(mean, std, f"computed over {n} of {len(splits.train)} training images (seeded sample)")
    try:
        write_json(path, {"mean": mean, "std": std, "source": stats.source})
    except OSError:  # a read-only home or a full disk: computed again next time, never an error
        pass
    return _usable(stats.mean, stats.std, stats.source)


def _channels(stats: Stats, in_chans: int) -> Stats:
    if len(stats.mean) == in_chans:
        return stats
    if len(stats.mean) == 1:  # grayscale data shown as RGB: three equal channels
        return Stats(stats.mean * in_chans, stats.std * in_chans, stats.source + ", repeated per channel")
    return Stats((float(np.mean(stats.mean)),), (float(np.mean(stats.std)),), stats.source + ", channel mean")


def check_norm_stats(cfg: TrialConfig, in_chans: int) -> None:
    """Explicit statistics need one value per input channel (DataError, key norm_stats)."""
    choice = cfg.norm_stats
    if isinstance(choice, NormStats) and len(choice.mean) != in_chans:
        raise DataError(f"norm_stats gives {len(choice.mean)} value(s) per statistic but the model has {in_chans} "
                        f"input channel(s) ('{cfg.dataset}'): give one mean and std per channel", key="norm_stats")


def resolve_stats(cfg: TrialConfig, splits: Splits, in_chans: int) -> Stats:
    """The mean and std (one per input channel) this trial normalises with."""
    choice = cfg.norm_stats
    check_norm_stats(cfg, in_chans)
    if isinstance(choice, NormStats):
        return Stats(tuple(choice.mean), tuple(choice.std), "config (norm_stats)")
    if choice == "imagenet":
        return _channels(Stats(IMAGENET_MEAN, IMAGENET_STD, "ImageNet (timm's defaults)"), in_chans)
    return _channels(splits.known_stats or computed_stats(splits), in_chans)
