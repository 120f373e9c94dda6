"""Data: nested stratified subsets, epoch order with repeated augmentation, sharding, seeded augmentation."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from convit.config import TrialConfig
from convit.data import DataError, EpochBatchSampler, build_data, check_data, epoch_order, nested_subset
from convit.data.subset import subset_record

REPO = Path(__file__).resolve().parents[1]
CIFAR = Path(os.environ.get("CONVIT_DATA_ROOT", REPO.parent / "shared" / "data" / "cifar10_jpeg"))


def test_subsets_are_nested_stratified_and_seeded():
    labels = np.repeat(np.arange(10), [500 + 7 * c for c in range(10)])
    subsets = {f: set(nested_subset(labels, f, seed=3)) for f in (0.05, 0.1, 0.3, 1.0)}
    assert subsets[0.05] < subsets[0.1] < subsets[0.3] < subsets[1.0]
    for f in (0.05, 0.1, 0.3):
        counts = np.bincount(labels[sorted(subsets[f])], minlength=10)
        assert counts.tolist() == [int(np.ceil(round(f * (500 + 7 * c), 9))) for c in range(10)]
    assert set(nested_subset(labels, 0.1, seed=4)) != subsets[0.1]
    assert set(nested_subset(labels, 0.1, seed=3)) == subsets[0.1]
    assert len(nested_subset(np.repeat(np.arange(2), 5000), 0.1, 0)) == 1000  # 0.1*5000 is not 501


def test_subset_record_identifies_the_subset():
    labels = np.repeat(np.arange(3), 100)
    a = subset_record(labels, nested_subset(labels, 0.1, 0))
    b = subset_record(labels, nested_subset(labels, 0.1, 1))
    assert a["per_class"] == {"0": 10, "1": 10, "2": 10} and a["size"] == 30
    assert a["indices_sha256"] != b["indices_sha256"]


@pytest.mark.parametrize("n", [10, 100, 255])
def test_every_epoch_covers_the_subset_with_repeats(n):
    orders = [epoch_order(n, e, seed=0, repeats=3).positions for e in range(3)]
    for o in orders:
        assert np.array_equal(np.sort(o), np.repeat(np.arange(n), 3))
        assert np.array_equal(o[0::3], o[1::3])  # the repeats of an image are neighbours
    assert not np.array_equal(orders[0], orders[1])  # reshuffled per epoch


def test_deit_budget_covers_the_subset_over_repeats_epochs():
    n, r = 100, 3
    chosen = [set(epoch_order(n, e, seed=0, repeats=r, budget="deit").positions) for e in range(r)]
    assert set().union(*chosen) == set(range(n)) and sum(map(len, chosen)) == n
    assert set(epoch_order(n, 3, 0, r, "deit").positions) != chosen[0]  # next cycle reshuffles


def test_rank_shards_make_up_the_global_batch():
    subset = np.arange(20, 60)
    one = list(EpochBatchSampler(subset, 5, 8, repeats=2))
    shards = [list(EpochBatchSampler(subset, 5, 8, repeats=2, rank=r, world_size=2)) for r in range(2)]
    assert len(one) == 10 == len(shards[0])
    for step, batch in enumerate(one):
        assert sorted(batch) == sorted(shards[0][step] + shards[1][step])
        ids = [[i for i, _ in shard[step]] for shard in shards]
        # the two repeats of an image go to different ranks: no rank sees an image twice in a step
        assert len(set(ids[0])) == len(ids[0]) and set(ids[0]) == set(ids[1])
    s = EpochBatchSampler(subset, 5, 8, repeats=2)
    s.set_epoch(0, start_step=7)
    assert list(s) == one[7:]


def test_augmentation_is_seeded_per_sample_and_leaves_global_rng_alone():
    data = build_data(TrialConfig.preset("smoke"))
    state = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    a, b, c = data.train[(3, 11)][0], data.train[(3, 11)][0], data.train[(3, 12)][0]
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.get_rng_state(), state[0]) and np.array_equal(np.random.get_state()[1], state[1])
    assert random.getstate() == state[2]


def test_check_data_refuses_bad_input(tmp_path, monkeypatch):
    monkeypatch.delenv("CONVIT_DATA_ROOT", raising=False)
    with pytest.raises(DataError, match="CONVIT_DATA_ROOT"):
        check_data(TrialConfig(dataset="cifar10"))
    with pytest.raises(DataError, match="missing"):
        check_data(TrialConfig(dataset="cifar10", data_root=str(tmp_path)))
    with pytest.raises(DataError, match="larger than the training subset"):
        check_data(TrialConfig.from_dict({"preset": "smoke", "batch_size": 128}))
    with pytest.raises(DataError, match="even batch"):
        check_data(TrialConfig.from_dict({"preset": "smoke", "batch_size": 15}))


def test_imagefolder_first_classes(tmp_path):
    from PIL import Image

    for split, n in (("train", 4), ("val", 2)):
        for c in ("c", "a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (40, 40), (i * 40, 0, 0)).save(tmp_path / split / c / f"{i}.png")
    cfg = TrialConfig.from_dict({"preset": "smoke", "dataset": "imagefolder", "data_root": str(tmp_path),
                                 "num_classes": 2, "batch_size": 4})
    check_data(cfg)
    data = build_data(cfg)
    # 4 training images per class: 1 held out for validation (never all), 3 left to train on
    assert data.num_classes == 2 and len(data.subset) == 6 and len(data.val) == 2 and len(data.test) == 4
    from convit.data.registry import open_splits

    assert open_splits(cfg).classes == ["a", "b"]
    assert data.val[0][0].shape == (3, 32, 32) and data.test[0][0].shape == (3, 32, 32)


@pytest.mark.skipif(not (CIFAR / "test.npz").is_file(), reason="CIFAR-10 npz not available")
def test_cifar10_fraction_from_real_data():
    cfg = TrialConfig.from_dict({"preset": "cifar", "data_root": str(CIFAR), "data_fraction": 0.05,
                                 "num_classes": 5})
    check_data(cfg)
    data = build_data(cfg)
    # 10 % of each class held out (500), then 5 % of the remaining 4,500 per class
    assert data.subset_record["per_class"] == {str(c): 225 for c in range(5)}
    assert data.subset_record["val"]["per_class"] == {str(c): 500 for c in range(5)}
    assert len(data.val) == 2500 and len(data.test) == 5000  # the test split is never subsampled
    x, y = data.train[(int(data.subset[0]), 0)]
    assert x.shape == (3, 32, 32) and 0 <= y < 5


def test_validation_split_is_stratified_seeded_and_disjoint_from_every_subset():
    from convit.data import validation_split

    labels = np.repeat(np.arange(4), [50, 30, 20, 7])
    pool, val = validation_split(labels, 0.1, seed=3)
    assert set(pool).isdisjoint(val) and len(pool) + len(val) == len(labels)
    assert np.bincount(labels[val]).tolist() == [5, 3, 2, 1]  # round(0.1 n_c), at least one per class
    again, val_again = validation_split(labels, 0.1, seed=3)
    assert np.array_equal(val, val_again) and not np.array_equal(val, validation_split(labels, 0.1, seed=4)[1])
    for f in (0.1, 0.5, 1.0):  # every data fraction is drawn from the pool only
        assert set(pool[nested_subset(labels[pool], f, 3)]).isdisjoint(val)
    with pytest.raises(DataError, match="at least two per class"):
        validation_split(np.array([0, 0, 1]), 0.1, seed=0)


@pytest.mark.skipif(not (CIFAR / "test.npz").is_file(), reason="CIFAR-10 npz not available")
def test_cifar10_validation_split_is_held_out_of_training_and_is_not_the_test_split():
    from convit.data import _subset_indices
    from convit.data.registry import open_splits

    cfg = TrialConfig.from_dict({"preset": "cifar", "data_root": str(CIFAR), "data_fraction": 1.0, "seed": 1})
    train = open_splits(cfg).train
    labels = train.labels
    subset, val = _subset_indices(labels, cfg)
    assert len(val) == 5000 and len(subset) == 45_000 and set(subset).isdisjoint(val)
    data = build_data(cfg)
    assert len(data.val) == 5000 and len(data.test) == 10_000
    assert len(train) == 50_000  # carved from the training arrays
    assert np.array_equal(data.val.source.images[0], train.images[val[0]])
