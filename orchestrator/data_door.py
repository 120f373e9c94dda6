"""``convit-sweep data DATASET``: what a dataset holds, as the trials will see it, before a long run
(convit.data.report does the counting; this module parses and prints)."""

from __future__ import annotations

import argparse
import json
from typing import Any, Sequence

from rich.console import Console
from rich.table import Table

from convit.config import DATASETS, ConfigError, TrialConfig, apply_overrides
from convit.exitcodes import EXIT_OK
from orchestrator.errors import OrchestratorError

DEFAULT_FRACTIONS = (0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
MAX_CLASS_ROWS = 20


def add_parser(sub: Any) -> None:
    p = sub.add_parser("data", help="what a dataset holds: images per split and class, size, channels, "
                       "normalisation, subset sizes",
                       description="Open a dataset exactly as a trial would and report its splits (train, the "
                       "validation hold-out, the pool the data fractions are drawn from, test), images per class, "
                       "image size and channels, the model input it implies, the normalisation statistics "
                       "(computed and cached when not known), and the training subset at each data fraction.",
                       epilog="examples:\n  convit-sweep data cifar10 --data-root ~/data/cifar10\n"
                       "  convit-sweep data mnist --data-root ~/data --fractions 0.01,0.1,1 model_kwargs.patch_size=7\n"
                       "  convit-sweep data hf --data-root ~/data/my_hf_dataset image_column=img\n"
                       "  convit-sweep data imagefolder --data-root ~/data/pets model_kwargs.img_size=224",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", choices=DATASETS, metavar="DATASET", help="one of " + ", ".join(DATASETS))
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="trial keys that change what the trials see (num_classes=10, val_fraction=0.1, seed=0, "
                   "image_column=img, label_column=label, model_kwargs.patch_size=4, model_kwargs.img_size=64, "
                   "norm_stats=imagenet; preset=cifar applies a preset's values, e.g. its img_size)")
    p.add_argument("--data-root", help="the dataset folder (default: $CONVIT_DATA_ROOT)")
    p.add_argument("--fractions", type=_fractions, default=list(DEFAULT_FRACTIONS), metavar="F,F,...",
                   help="data fractions to size the training subset for, comma-separated (default: "
                   + ",".join(f"{f:g}" for f in DEFAULT_FRACTIONS) + ")")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _fractions(text: str) -> list[float]:
    """argparse type of --fractions: comma-separated numbers in (0, 1]."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated numbers, e.g. 0.1,0.5,1") from None
    bad = [v for v in values if not 0 < v <= 1]
    if bad or not values:
        raise argparse.ArgumentTypeError(f"{text!r}: data fractions are in (0, 1], e.g. 0.1,0.5,1")
    return values


def cmd_data(args: argparse.Namespace, console: Console) -> int:
    from convit.data import DataError  # heavy: numpy, PIL (the named layouts import torchvision when read)
    from convit.data.report import describe_dataset  # heavy: as above

    base: dict[str, Any] = {"dataset": args.dataset, "model": "convit_tiny"}
    if args.data_root:
        base["data_root"] = args.data_root
    clash = [o for o in args.overrides if o.split("=", 1)[0].strip() in ("dataset", "data_root")]
    if clash:
        raise OrchestratorError(f"{clash[0]}: give the dataset as the first argument and the folder as --data-root")
    try:
        cfg = TrialConfig.from_dict(apply_overrides(base, args.overrides))
        report = describe_dataset(cfg, sorted(set(args.fractions)))
    except (ConfigError, DataError) as err:
        raise OrchestratorError(str(err)) from None
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return EXIT_OK
    _print(report, console)
    return EXIT_OK


def _print(r: Any, console: Console) -> None:
    size = f"{r.native_size}x{r.native_size}" if r.native_size else \
        "varies: " + ", ".join(f"{w}x{h}" for w, h in r.sizes_seen[:4])
    patch = f"patch {r.patch_size} ({r.model_img_size // r.patch_size}x{r.model_img_size // r.patch_size} grid)" \
        if r.patch_size else f"[yellow]set model_kwargs.patch_size[/] to one of {r.patch_sizes[:8]} (16 does not divide it)"
    console.print(f"[bold]{r.dataset}[/] ({r.data_root or 'generated'}): {len(r.classes)} classes, "
                  f"{r.splits['train']:,} training and {r.splits['test']:,} test images")
    console.print(f"images: {size}, {r.channels} channel{'s' if r.channels > 1 else ''} -> model input "
                  f"{r.model_img_size}x{r.model_img_size}x{r.model_in_chans}, {patch}")
    console.print(f"normalisation: mean {_fmt(r.norm_mean)}, std {_fmt(r.norm_std)} ({r.norm_source})")
    console.print(f"splits: validation {r.splits['validation']:,} held out of train, pool {r.splits['pool']:,} "
                  "(the data fractions are drawn from it), test evaluated once at the end")
    table = Table(title="images per class")
    for col in ("class", "train", "validation", "pool", "test"):
        table.add_column(col, justify="left" if col == "class" else "right")
    rows = list(zip(r.classes, *(r.per_class[s] for s in ("train", "validation", "pool", "test"))))
    for row in rows[:MAX_CLASS_ROWS]:
        table.add_row(str(row[0]), *(f"{v:,}" for v in row[1:]))
    if len(rows) > MAX_CLASS_ROWS:
        table.add_row(f"... {len(rows) - MAX_CLASS_ROWS} more", *("" for _ in range(4)))
    console.print(table)
    train = r.per_class["train"]
    if min(train) and max(train) / min(train) > 1.5:
        console.print(f"[yellow]imbalanced:[/] {max(train):,} images in the largest class, {min(train):,} in the "
                      "smallest (subsets keep the proportions)")
    if min(train) == 0:
        empty = [c for c, n in zip(r.classes, train) if n == 0]
        console.print(f"[yellow]{len(empty)} class(es) without training images:[/] " + ", ".join(empty[:12]) +
                      (", ..." if len(empty) > 12 else ""))
    subsets = Table(title="training subset per data fraction")
    subsets.add_column("data fraction", justify="right")
    subsets.add_column("images", justify="right")
    subsets.add_column("smallest class", justify="right")
    for f, n in r.subsets.items():
        subsets.add_row(f, f"{n:,}", f"{r.smallest_class_in_subset[f]:,}")
    console.print(subsets)
    console.print(f"[dim]read in {r.seconds:.2f} s[/]")


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.4f}" for v in values) + ")"
