"""The validation split: a stratified, seeded share of the training data, held out from every subset.

Every in-training decision (the best checkpoint, Ray's ASHA and PBT, early stopping) reads the validation
split; the dataset's own test split is evaluated once, after the last epoch, so nothing is ever selected on
it.  Data fractions are drawn from what remains (the "pool"), nested across fractions as before.

For one seed and class, one permutation of the class's images is drawn (a stream independent of the
subset's); its first round(val_fraction · n_c) entries (at least 1, never all) are the validation images.
"""

from __future__ import annotations

import numpy as np

from .errors import DataError

VAL_STREAM = 7919  # separates the validation draw from the subset draw of the same seed


def validation_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(pool, val): sorted, disjoint index arrays into ``labels`` that together cover it.

    Raises DataError when a class has fewer than two images (nothing would be left to train on).
    """
    pool, val = [], []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) < 2:
            raise DataError(f"class {int(c)} has {len(members)} training image(s): a validation split needs at "
                            "least two per class", key="val_fraction")
        k = min(len(members) - 1, max(1, int(round(val_fraction * len(members)))))
        order = np.random.default_rng([seed, int(c), VAL_STREAM]).permutation(len(members))
        val.append(members[order[:k]])
        pool.append(members[order[k:]])
    return np.sort(np.concatenate(pool)), np.sort(np.concatenate(val))
