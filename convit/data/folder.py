"""ImageFolder: ``root/train/<class>/<image>`` and ``root/val/<class>/<image>`` (or ``root/test/...``), torchvision's
layout and file rule (the extensions below are torchvision.datasets.folder.IMG_EXTENSIONS; a test keeps them equal),
listed without importing torch so that a dry run stays fast (a 50,000-file tree: about 0.7 s for `convit-sweep data`, docs/training.md).
16-bit grayscale files are scaled to 8 bits (convit.data.sources.to_8bit). A file that cannot be decoded is found
when it is read (a header check of every file would cost a full pass over the tree): the trial fails naming it.

The channel count and the native size come from the image headers of a spread of training files (Pillow reads
headers without decoding): grayscale only when every sampled image is, a native size only when every sampled image
is the same square size (otherwise ``model_kwargs.img_size`` must be set).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import DataError
from .sources import FileSource, Splits

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
GRAYSCALE_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
HEADERS_SAMPLED = 64


def _split_dir(root: Path, names: tuple[str, ...]) -> Path:
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise DataError(f"ImageFolder layout expects {str(root / names[0])!r} with one folder per class "
                    f"(found {sorted(e.name for e in os.scandir(root))[:8]})")


def _list(split_dir: Path, classes: list[str]) -> tuple[list[str], np.ndarray, list[int]]:
    """(paths, labels, file sizes) in torchvision's order: classes sorted, files sorted within each class."""
    paths, labels, sizes = [], [], []
    for label, cls in enumerate(classes):
        folder = split_dir / cls
        if not folder.is_dir():
            raise DataError(f"{str(split_dir)!r} has no folder for class {cls!r} (found in train/): every class "
                            "needs a folder in each split")
        for dirpath, dirnames, files in os.walk(folder, followlinks=True):
            dirnames.sort()
            for f in sorted(files):
                if f.lower().endswith(IMG_EXTENSIONS):
                    path = os.path.join(dirpath, f)
                    paths.append(path)
                    labels.append(label)
                    sizes.append(os.path.getsize(path))
    return paths, np.asarray(labels, dtype=np.int64), sizes


def _headers(paths: list[str]) -> tuple[set[str], list[tuple[int, int]]]:
    """The PIL modes and sizes of up to HEADERS_SAMPLED files spread over the list (headers only)."""
    picks = np.unique(np.linspace(0, len(paths) - 1, min(HEADERS_SAMPLED, len(paths))).astype(int))
    modes, sizes = set(), []
    for i in picks:
        try:
            with Image.open(paths[i]) as img:
                modes.add(img.mode)
                sizes.append(img.size)
        except (UnidentifiedImageError, OSError) as err:
            raise DataError(f"{paths[i]} is not an image Pillow can read ({err}); remove it or convert it") \
                from None
    return modes, sizes


def read_imagefolder(root: Path) -> Splits:
    """The ImageFolder tree under ``root``. Raises DataError for a missing split, a class folder missing in the
    test split, an empty class, or an unreadable image among those sampled."""
    train_dir, test_dir = _split_dir(root, ("train",)), _split_dir(root, ("val", "test"))
    classes = sorted(e.name for e in os.scandir(train_dir) if e.is_dir())
    if not classes:
        raise DataError(f"no class folders in {str(train_dir)!r}")
    train_paths, train_labels, train_sizes = _list(train_dir, classes)
    empty = [c for i, c in enumerate(classes) if not np.any(train_labels == i)]
    if empty:
        raise DataError(f"class folder(s) without images in {str(train_dir)!r}: {empty[:5]} (images need one of "
                        f"the extensions {', '.join(IMG_EXTENSIONS)})")
    test_paths, test_labels, _ = _list(test_dir, classes)
    if not test_paths:
        raise DataError(f"{str(test_dir)!r} holds no images: the test split is what a trial is scored on; put the "
                        "held-out images there, one folder per class")
    modes, seen = _headers(train_paths)
    channels = 1 if modes <= GRAYSCALE_MODES else 3
    native = seen[0][0] if len(set(seen)) == 1 and seen[0][0] == seen[0][1] else None
    digest = hashlib.sha256()
    for path, size in zip(train_paths, train_sizes):
        digest.update(f"{os.path.relpath(path, train_dir)}\0{size}\n".encode())
    mode = "L" if channels == 1 else "RGB"
    return Splits(FileSource(train_paths, train_labels, mode), FileSource(test_paths, test_labels, mode), classes,
                  channels, native, None, sorted(set(seen)), f"imagefolder:{digest.hexdigest()}")
