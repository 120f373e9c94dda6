"""The order in which training samples are seen: repeated augmentation, per-epoch reshuffling, sharding.

Everything here is a pure function of (seed, epoch), so the position inside an epoch (a step count) is
all a checkpoint needs to resume the data stream exactly, and every rank derives the same global order.

Repeated augmentation (DeiT's RA) shows each chosen image ``repeats`` times in a row of the global
order; a global batch is cut from that order and rank r takes positions r, r+W, ... of it, so the
repeats of one image land on different processes, as in DeiT.  Two budgets:

* ``cover``: every epoch holds every subset image ``repeats`` times (repeats · n samples).
* ``deit``:  every epoch holds about n samples, i.e. n / repeats distinct images; the subset is permuted
  once per cycle of ``repeats`` epochs and each epoch takes the next slice, so ``repeats`` consecutive
  epochs cover the subset exactly.  (The public code draws the same slice every epoch when it is not
  distributed, and yields no sample at all below 256 images.)

Every sample also gets its own augmentation seed, so augmentation does not depend on the loader's
worker count or on where a run was resumed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np


@dataclass(frozen=True)
class EpochOrder:
    """One epoch's global sample order: subset positions and their augmentation seeds."""

    positions: np.ndarray
    seeds: np.ndarray


def epoch_order(n: int, epoch: int, seed: int, repeats: int = 1, budget: str = "cover") -> EpochOrder:
    if budget == "deit" and repeats > 1:
        cycle, part = divmod(epoch, repeats)
        perm = np.random.default_rng([seed, cycle, 0]).permutation(n)
        chosen = np.array_split(perm, repeats)[part]
    else:
        chosen = np.random.default_rng([seed, epoch, 0]).permutation(n)
    positions = np.repeat(chosen, repeats)
    seeds = np.random.default_rng([seed, epoch, 1]).integers(0, 2**31 - 1, size=len(positions))
    return EpochOrder(positions, seeds)


def steps_per_epoch(n: int, batch_size: int, repeats: int, budget: str) -> int:
    """Full global batches per epoch (the last partial batch is dropped, as DeiT does)."""
    lengths = [len(epoch_order(n, e, 0, repeats, budget).positions) for e in range(max(1, repeats))] \
        if budget == "deit" and repeats > 1 else [n * repeats]
    return min(lengths) // batch_size


class EpochBatchSampler:
    """Yields this rank's share of each global batch as lists of (dataset index, augmentation seed).

    Lives in the main process (also with loader workers), so `set_epoch` before each `iter()` is enough,
    even with persistent workers.  Every epoch has the same number of steps (the minimum over epochs).
    """

    def __init__(self, subset: np.ndarray, seed: int, batch_size: int, repeats: int = 1,
                 budget: str = "cover", rank: int = 0, world_size: int = 1):
        if batch_size % world_size:
            raise ValueError(f"global batch {batch_size} is not divisible by {world_size} processes")
        self.subset = np.asarray(subset)
        self.seed, self.batch_size, self.repeats, self.budget = seed, batch_size, repeats, budget
        self.rank, self.world_size = rank, world_size
        self.steps = steps_per_epoch(len(self.subset), batch_size, repeats, budget)
        self.epoch, self.start_step, self.stop_step = 0, 0, self.steps

    def set_epoch(self, epoch: int, start_step: int = 0, stop_step: int | None = None) -> None:
        """Iterate epoch ``epoch`` from ``start_step`` (resume) up to ``stop_step`` (a partial last epoch)."""
        self.epoch, self.start_step = epoch, start_step
        self.stop_step = self.steps if stop_step is None else min(stop_step, self.steps)

    def __len__(self) -> int:
        return max(0, self.stop_step - self.start_step)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order = epoch_order(len(self.subset), self.epoch, self.seed, self.repeats, self.budget)
        for step in range(self.start_step, self.stop_step):
            lo = step * self.batch_size
            sl = slice(lo + self.rank, lo + self.batch_size, self.world_size)
            idx, seeds = self.subset[order.positions[sl]], order.seeds[sl]
            yield [(int(i), int(s)) for i, s in zip(idx, seeds)]
