"""How long ``convit-sweep data DATASET`` takes, as a fresh process from a shell (interpreter start and imports
included), on the real CIFAR-10 arrays and on a 50,000-file ImageFolder tree made from them (PNG, 32x32, written
once into --tree, outside the repository).

- ``cifar10``: the npz arrays (decompressed once, statistics published: nothing computed);
- ``imagefolder cold``: the tree with an empty statistics cache (lists 50,000 files, reads 64 headers, decodes a
  seeded sample of 2,000 images for the statistics);
- ``imagefolder warm``: the same with the cache filled (what every later report and trial of a sweep pays).

Commands run in interleaved rounds (each round runs each once); medians with min-max.

    python benchmarks/bench_data_report.py --rounds 5 --tree /tmp/imagefolder50k
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def make_tree(cifar: Path, tree: Path) -> None:
    if (tree / ".complete").is_file():
        return
    for split, files in (("train", [f"train_{i}.npz" for i in range(5)]), ("val", ["test.npz"])):
        for name in files:
            data = np.load(cifar / name)
            for i, (im, label) in enumerate(zip(data["images"], data["labels"])):
                folder = tree / split / CLASSES[int(label)]
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(im).save(folder / f"{name[:-4]}_{i:05d}.png")
    (tree / ".complete").write_text("")


def timed(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "orchestrator.cli", "data", *args], cwd=REPO, env=env,
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tree", type=Path, default=Path(tempfile.gettempdir()) / "convit_imagefolder50k")
    parser.add_argument("--cifar", type=Path, default=Path(os.environ.get("CONVIT_DATA_ROOT",
                                                                          REPO.parent / "shared/data/cifar10_jpeg")))
    args = parser.parse_args()
    start = time.perf_counter()
    make_tree(args.cifar, args.tree)
    print(f"tree: {args.tree} ({time.perf_counter() - start:.0f} s to make or find)")
    cache = Path(tempfile.mkdtemp())
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "PYTHONPATH": str(REPO)}
    times: dict[str, list[float]] = {"cifar10": [], "imagefolder cold": [], "imagefolder warm": []}
    for _ in range(args.rounds):
        times["cifar10"].append(timed(["cifar10", "--data-root", str(args.cifar)], env))
        shutil.rmtree(cache / "convit", ignore_errors=True)
        times["imagefolder cold"].append(timed(["imagefolder", "--data-root", str(args.tree)], env))
        times["imagefolder warm"].append(timed(["imagefolder", "--data-root", str(args.tree)], env))
    for name, values in times.items():
        print(f"{name:18s} median {statistics.median(values):6.2f} s  (min {min(values):.2f}, max {max(values):.2f}, "
              f"n={len(values)})")


if __name__ == "__main__":
    main()
