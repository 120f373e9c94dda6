"""A learnable toy problem for smoke tests: each class is a fixed coarse colour pattern plus noise.

It is the same for every seed (like a real dataset), so seeds only change subsets and training.
"""

from __future__ import annotations

import numpy as np

from .sources import ArraySource, Splits, Stats

SYNTHETIC_STATS = Stats((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "synthetic data: maps [0, 1] to [-1, 1]")


def synthetic(train_size: int, test_size: int, num_classes: int | None, img_size: int) -> Splits:
    """``train_size``/``test_size`` RGB images of ``img_size``² pixels in ``num_classes`` (default 10) classes."""
    n_cls = num_classes or 10
    rng = np.random.default_rng(20210319)
    patterns = rng.integers(0, 256, size=(n_cls, 4, 4, 3)).astype(np.float32)
    reps = -(-img_size // 4)

    def make(n: int) -> ArraySource:
        labels = np.arange(n, dtype=np.int64) % n_cls
        base = np.kron(patterns[labels], np.ones((1, reps, reps, 1), np.float32))[:, :img_size, :img_size]
        noise = rng.normal(0.0, 40.0, size=base.shape)
        return ArraySource(np.clip(base + noise, 0, 255).astype(np.uint8), labels)

    return Splits(make(train_size), make(test_size), [str(c) for c in range(n_cls)], 3, img_size, SYNTHETIC_STATS)
