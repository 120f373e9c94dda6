"""Torch datasets over a source: per-sample seeded augmentation for training, plain for evaluation."""

from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .sources import Source


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run augmentation under its own seed and leave the caller's RNG streams untouched.

    timm's and torchvision's transforms draw from python's `random`, numpy's global RNG and torch's
    CPU generator; seeding all three per sample makes augmentation independent of worker count and
    resume position, and restoring them keeps the training RNG (dropout, mixup) unaffected by loading.
    """
    py, npy, pt = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.random.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        torch.random.set_rng_state(pt)


def _in_mode(image: Image.Image, mode: str) -> Image.Image:
    return image if image.mode == mode else image.convert(mode)


class TrainDataset(Dataset):
    """Indexed by (source index, seed) pairs, as produced by `EpochBatchSampler`; images are converted to
    ``mode`` ("L": the model has one input channel, "RGB": three)."""

    def __init__(self, source: Source, transform: Callable, mode: str = "RGB"):
        self.source, self.transform, self.mode = source, transform, mode

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, seed = key
        image = _in_mode(self.source.image(index), self.mode)
        with seeded(seed):
            x = self.transform(image)
        return x, int(self.source.labels[index])


class EvalDataset(Dataset):
    """Deterministic transform: no seeding needed."""

    def __init__(self, source: Source, transform: Callable, mode: str = "RGB"):
        self.source, self.transform, self.mode = source, transform, mode

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(_in_mode(self.source.image(index), self.mode)), int(self.source.labels[index])
