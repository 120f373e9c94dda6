"""Does the loader keep up?  End-to-end training throughput on CIFAR-10 next to loader-only and step-only.

Runs the engine's own components (the `cifar` preset: ConViT-Ti, 32 px, patch 4, RandAugment, random
erasing, mixup/cutmix, AdamW, AMP as the device warrants) for a few steps per mode, on CPU and on CUDA
when present, prints a table and writes JSON.

    CONVIT_DATA_ROOT=../shared/data/cifar10_jpeg python benchmarks/bench_engine.py --steps 20
    python benchmarks/bench_engine.py --device cuda --batch-size 256 --workers 8 --steps 100

img/s counts training images (global batch × steps), measured after `--warmup` untimed steps.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from convit.config import load_config  # noqa: E402
from convit.data import check_data  # noqa: E402
from convit.engine.control import TrialControl  # noqa: E402
from convit.engine.distributed import DistContext  # noqa: E402
from convit.engine.trial import _Trial  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _trial(args: argparse.Namespace, device: torch.device, out: Path) -> _Trial:
    cfg = load_config("cifar", [f"batch_size={args.batch_size}", f"num_workers={args.workers}",
                                f"model={args.model}", f"compile={args.compile}", "analysis_every=0"]
                      + ([f"data_root={args.data_root}"] if args.data_root else []))
    ctx = DistContext(rank=0, world_size=1, local_rank=0, device=device, owns_group=False)
    return _Trial(cfg, check_data(cfg), out, ctx, reporter=None, control=TrialControl())


def _timed(n_warm: int, n: int, device: torch.device, body) -> float:
    """Seconds for ``n`` calls of ``body`` after ``n_warm`` untimed ones."""
    for _ in range(n_warm):
        body()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        body()
    _sync(device)
    return time.perf_counter() - t0


def _endless(trial: _Trial):
    epoch = 0
    while True:
        trial.sampler.set_epoch(epoch)
        yield from trial.train_loader
        epoch += 1


def bench_device(args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        trial = _trial(args, device, Path(tmp))
        trial.model.train()
        batch = args.batch_size
        total = args.warmup + args.steps

        batches = _endless(trial)
        loader_s = _timed(args.warmup, args.steps, device, lambda: next(batches))

        x, y = next(batches)
        step_s = _timed(args.warmup, args.steps, device, lambda: trial._train_step(x, y))

        batches = _endless(trial)
        e2e_s = _timed(args.warmup, args.steps, device, lambda: trial._train_step(*next(batches)))
        del batches
    imgs = batch * args.steps
    return {"device": str(device), "batch_size": batch, "workers": args.workers, "steps": args.steps,
            "amp": trial.res.amp, "warmup_steps": args.warmup, "total_steps": total,
            "loader_img_per_s": imgs / loader_s, "step_img_per_s": imgs / step_s,
            "end_to_end_img_per_s": imgs / e2e_s}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto: CPU, plus CUDA when present")
    p.add_argument("--model", default="convit_tiny")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--data-root", default=None, help="CIFAR-10 npz folder (default: $CONVIT_DATA_ROOT)")
    p.add_argument("--json", type=Path, default=Path("benchmarks/results/bench_engine.json"))
    args = p.parse_args(argv)
    if args.data_root is None and not os.environ.get("CONVIT_DATA_ROOT"):
        default = REPO.parent / "shared" / "data" / "cifar10_jpeg"
        if default.is_dir():
            args.data_root = str(default)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] if args.device in ("auto", "cpu") else []
    if args.device in ("auto", "cuda") and torch.cuda.is_available():
        devices.append(torch.device("cuda:0"))
    if not devices:
        print("error: CUDA requested but not available", file=sys.stderr)
        return 2
    rows = [bench_device(args, d) for d in devices]

    print(f"{args.model} on CIFAR-10 (32 px, cifar preset augmentation), batch {args.batch_size}, "
          f"{args.workers} loader workers, {args.steps} timed steps, torch threads {torch.get_num_threads()}")
    print(f"{'device':<8} {'amp':<5} {'loader img/s':>13} {'step img/s':>11} {'end-to-end img/s':>17}")
    for r in rows:
        print(f"{r['device']:<8} {r['amp']:<5} {r['loader_img_per_s']:>13.0f} {r['step_img_per_s']:>11.0f} "
              f"{r['end_to_end_img_per_s']:>17.0f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "python": platform.python_version(), "cpus": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "threads": torch.get_num_threads(), "argv": sys.argv[1:]}
    args.json.write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
