"""Hugging Face datasets on disk: a folder written by ``save_to_disk`` (a DatasetDict with a ``train`` split and a
``test`` or ``validation`` split), or a folder of parquet files as the Hub stores them (``train-*.parquet``,
``test-*.parquet``, also under ``data/``). The image and label columns are named in the config (``image_column``,
``label_column``); labels are a ClassLabel (its names are the classes), integers 0..K-1, or strings (the classes,
sorted).

Nothing is downloaded: the datasets library is asked to stay offline.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .errors import DataError
from .folder import GRAYSCALE_MODES
from .sources import Splits, to_8bit

TEST_SPLITS = ("test", "validation", "valid", "val")
HEADERS_SAMPLED = 16


class HFSource:
    """One split of a Hugging Face dataset (memory-mapped Arrow); ``image(i)`` decodes one row's image."""

    def __init__(self, table: Any, image_column: str, labels: np.ndarray, rows: np.ndarray | None = None):
        self.table, self.image_column, self.labels = table, image_column, labels
        self.rows = np.arange(len(labels)) if rows is None else rows

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> Image.Image:
        value = self.table[int(self.rows[i])][self.image_column]
        return to_8bit(value) if isinstance(value, Image.Image) else Image.fromarray(np.asarray(value, dtype=np.uint8))

    def take(self, keep: np.ndarray) -> "HFSource":
        return HFSource(self.table, self.image_column, self.labels[keep], self.rows[keep])


def _load(root: Path) -> dict[str, Any]:
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # before the import: local files only
    import datasets  # heavy; only for this source

    datasets.disable_progress_bars()
    if (root / "dataset_dict.json").is_file() or (root / "state.json").is_file():
        try:
            loaded = datasets.load_from_disk(str(root))
        except (FileNotFoundError, ValueError, OSError) as err:
            raise DataError(f"hf: {str(root)!r} is not a readable save_to_disk folder ({err})") from None
        if isinstance(loaded, datasets.Dataset):
            raise DataError(f"hf: {str(root)!r} holds one split; save a DatasetDict with 'train' and 'test' splits")
        return dict(loaded)
    files = sorted(root.rglob("*.parquet"))
    by_split: dict[str, list[str]] = {}
    for f in files:
        split = next((s for s in ("train",) + TEST_SPLITS if f.name.startswith(s) or f.parent.name == s), None)
        if split:
            by_split.setdefault(split, []).append(str(f))
    if not by_split or not any(Path(f).stat().st_size for fs in by_split.values() for f in fs):
        raise DataError(f"hf: {str(root)!r} is neither a save_to_disk folder (dataset_dict.json) nor a folder of "
                        "parquet files named train-*.parquet / test-*.parquet")
    loaded = datasets.load_dataset("parquet", data_files=by_split)
    return dict(loaded)


def _check_column(table: Any, column: str, split: str, key: str) -> Any:
    if column not in table.column_names:
        raise DataError(f"hf: split '{split}' has no column {column!r} (columns: {table.column_names}); set {key}",
                        key=key)
    return table.features[column]


def _labels(train: Any, test: Any, test_name: str, column: str) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """(train labels, test labels, class names or None). A ClassLabel keeps its names; integers are the classes;
    strings become classes in sorted order (the same mapping for both splits)."""
    features = [_check_column(t, column, name, "label_column") for t, name in ((train, "train"), (test, test_name))]
    if all(str(getattr(f, "dtype", "")) == "string" for f in features):
        y_train, y_test = (np.asarray(t[column], dtype=object) for t in (train, test))
        classes = sorted(set(y_train.tolist()) | set(y_test.tolist()))
        index = {c: i for i, c in enumerate(classes)}
        return (np.array([index[v] for v in y_train], dtype=np.int64),
                np.array([index[v] for v in y_test], dtype=np.int64), [str(c) for c in classes])
    for f in features:
        if not (hasattr(f, "names") or str(getattr(f, "dtype", "")).startswith(("int", "uint"))):
            raise DataError(f"hf: column {column!r} is {f}, not class labels (a ClassLabel, integers or strings); "
                            "set label_column", key="label_column")
    y_train, y_test = (np.asarray(t.with_format("numpy")[column], dtype=np.int64) for t in (train, test))
    return y_train, y_test, list(getattr(features[0], "names", None) or []) or None


def _check_images(table: Any, column: str, split: str) -> None:
    feature = _check_column(table, column, split, "image_column")
    kind = type(feature).__name__
    if kind not in ("Image", "Array2D", "Array3D"):
        raise DataError(f"hf: column {column!r} is {feature}, not images (an Image feature or a 2-D/3-D uint8 array); "
                        "set image_column", key="image_column")


def read_hf(root: Path, image_column: str, label_column: str) -> Splits:
    """The dataset under ``root``. Raises DataError for a missing split or column, or labels that are not
    classes."""
    splits = _load(root)
    if "train" not in splits:
        raise DataError(f"hf: no 'train' split in {str(root)!r} (splits: {sorted(splits)})")
    test_name = next((s for s in TEST_SPLITS if s in splits), None)
    if test_name is None:
        raise DataError(f"hf: no test split in {str(root)!r} (splits: {sorted(splits)}; expected one of "
                        f"{', '.join(TEST_SPLITS)})")
    train, test = splits["train"], splits[test_name]
    for name, table in (("train", train), (test_name, test)):
        _check_images(table, image_column, name)
        if len(table) == 0:
            raise DataError(f"hf: split '{name}' of {str(root)!r} is empty")
    y_train, y_test, names = _labels(train, test, test_name, label_column)
    classes = names or [str(i) for i in range(int(max(y_train.max(), y_test.max())) + 1)]
    images = train.select_columns([image_column])
    picks = np.unique(np.linspace(0, len(train) - 1, min(HEADERS_SAMPLED, len(train))).astype(int))
    try:
        sampled = [HFSource(images, image_column, y_train).image(int(i)) for i in picks]
    except (OSError, ValueError, TypeError) as err:
        raise DataError(f"hf: an image of column {image_column!r} cannot be decoded ({err})", key="image_column") \
            from None
    modes, seen = {im.mode for im in sampled}, sorted({im.size for im in sampled})
    channels = 1 if modes <= GRAYSCALE_MODES else 3
    native = seen[0][0] if len(seen) == 1 and seen[0][0] == seen[0][1] else None
    fingerprint = hashlib.sha256(f"{train._fingerprint}:{image_column}".encode()).hexdigest()
    return Splits(HFSource(images, image_column, y_train), HFSource(test.select_columns([image_column]),
                                                                     image_column, y_test),
                  classes, channels, native, None, seen, f"hf:{fingerprint}")
