"""What a backend costs around the training: Ray Tune vs the local backend on the same 8 tiny trials.

Each backend runs the same sweep through the real `convit-sweep submit` command (fresh working folder, embedded
MLflow store) twice:

- sequentially (one trial at a time): per-trial overhead = the gap between one trial's end (its final.json) and
  the next trial's first training step, i.e. teardown + scheduling + process start + imports + data/model build
  + MLflow run creation. The first trial's latency is counted from the command's start (the command's own
  start-up, and for Ray the start of a local Ray, included);
- with ``--parallel`` trials at a time: the total wall time of the sweep.

The first training step is taken as the moment the engine writes the trial's config.json: it does so after
building the data, model and optimizer, right before its first step (a file time, so no engine hook is needed).

    python benchmarks/bench_backends.py --trials 8 --parallel 2 --out bench_backends.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

SWEEP = """name: bench
base:
  preset: smoke
  epochs: {epochs}
  synthetic_train_size: 32
  synthetic_val_size: 16
  analysis_every: 0
grid:
  lr: {lrs}
local: {{max_parallel: {parallel}, cpus_per_trial: 1}}
ray: {{num_cpus: {cpus}, cpus_per_trial: 1, max_concurrent_trials: {parallel}}}
"""


def run_sweep(backend: str, trials: int, epochs: int, parallel: int, cpus: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"bench-{backend}-") as tmp:
        spec = Path(tmp) / "bench.yaml"
        lrs = [round(1e-3 * (1 + i / 10), 6) for i in range(trials)]
        spec.write_text(SWEEP.format(epochs=epochs, lrs=lrs, parallel=parallel, cpus=cpus))
        env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "CONVIT_WORKDIR")}
        env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
        start = time.time()
        out = subprocess.run([sys.executable, "-m", "orchestrator.cli", "submit", str(spec), "--backend", backend,
                              "--workdir", str(Path(tmp) / "runs")], cwd=REPO, env=env, capture_output=True,
                             text=True)
        wall = time.time() - start
        if out.returncode != 0:
            raise SystemExit(f"{backend} sweep failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        folders = sorted((Path(tmp) / "runs" / "sweeps" / "bench" / "trials").iterdir())
        spans = sorted(((f / "config.json").stat().st_mtime, (f / "final.json").stat().st_mtime) for f in folders)
    first_step = [s - start for s, _ in spans]
    gaps = [spans[i][0] - spans[i - 1][1] for i in range(1, len(spans))]
    return {"backend": backend, "trials": trials, "parallel": parallel, "wall_s": wall,
            "first_trial_latency_s": min(first_step), "train_s_mean": statistics.mean(e - s for s, e in spans),
            "between_trials_s_mean": statistics.mean(gaps) if gaps else None,
            "between_trials_s_median": statistics.median(gaps) if gaps else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--parallel", type=int, default=2, help="trials at a time in the wall-time run")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--backends", default="local,ray")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    rows = []
    for backend in args.backends.split(","):
        sequential = run_sweep(backend, args.trials, args.epochs, 1, args.cpus)
        parallel = run_sweep(backend, args.trials, args.epochs, args.parallel, args.cpus)
        rows.append({"backend": backend, "sequential": sequential, "parallel": parallel})
        print(f"{backend:6s} first trial {sequential['first_trial_latency_s']:6.1f} s after submit · "
              f"between trials {sequential['between_trials_s_mean']:5.1f} s (median "
              f"{sequential['between_trials_s_median']:.1f}) · training {sequential['train_s_mean']:5.1f} s/trial · "
              f"wall {args.trials} trials: {sequential['wall_s']:6.1f} s one at a time, "
              f"{parallel['wall_s']:6.1f} s {args.parallel} at a time", flush=True)
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": rows},
                                       indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
