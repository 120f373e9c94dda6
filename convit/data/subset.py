"""Nested, stratified, seeded training subsets (the data fraction f).

For one seed and class, a single permutation of that class's images is drawn, and the subset keeps its
first ceil(f · n_c) entries.  The permutation does not depend on f, so for one seed the 5 % subset is
contained in the 10 % one, which is contained in the 30 % one: a sweep over f compares models on the
same images.  (The public code kept the first files of each class in sorted order, unseeded.)
"""

from __future__ import annotations

import hashlib
import math

import numpy as np


def per_class_keep(n: int, fraction: float) -> int:
    """ceil(f · n), robust to float noise (0.1 · 5000 must be 500, not 501), at least 1."""
    return max(1, math.ceil(round(fraction * n, 9)))


def nested_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices (into ``labels``) of the subset kept at this fraction and seed."""
    if fraction >= 1.0:
        return np.arange(len(labels))
    kept = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        order = np.random.default_rng([seed, int(c)]).permutation(len(members))
        kept.append(members[order[: per_class_keep(len(members), fraction)]])
    return np.sort(np.concatenate(kept))


def subset_size(labels: np.ndarray, fraction: float) -> int:
    _, counts = np.unique(labels, return_counts=True)
    return len(labels) if fraction >= 1.0 else sum(per_class_keep(int(n), fraction) for n in counts)


def subset_record(labels: np.ndarray, indices: np.ndarray) -> dict:
    """What a trial records about its subset: size, count per class and a hash of the indices."""
    classes, counts = np.unique(labels[indices], return_counts=True)
    blob = np.sort(indices).astype("<i8").tobytes()
    return {
        "size": int(len(indices)),
        "per_class": {str(int(c)): int(n) for c, n in zip(classes, counts)},
        "indices_sha256": hashlib.sha256(blob).hexdigest(),
    }
