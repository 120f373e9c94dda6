"""What a backend costs around the training: Ray Tune vs the local backend on the same 8 tiny trials.

Each backend runs the same sweep through the real `convit-sweep submit` command (fresh working folder, embedded
MLflow store) twice:

- sequentially (one trial at a time), ``--rounds`` times: per-trial overhead = the gap between one trial's end
  (its final.json) and the next trial's first training step, i.e. teardown + scheduling + process start +
  imports + data/model build + MLflow run creation. The first trial's latency is counted from the command's
  start (the command's own start-up, and for Ray the start of a local Ray, included);
- with ``--parallel`` trials at a time: the total wall time of the sweep.

With ``--baseline REV`` the same runs are made with the code of commit REV (a temporary copy; same interpreter
and packages), the rounds of the two alternating, and both are printed side by side: medians with [min-max].

The first training step is taken as the moment the engine writes the trial's config.json: it does so after
building the data, model and optimizer, right before its first step (a file time, so no engine hook is needed).

    python benchmarks/bench_backends.py --trials 6 --rounds 2 --baseline a2f0a53 --out bench_backends.json
"""
from __future__ import annotations

import argparse
import contextlib
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
sys.path.insert(0, str(REPO))

from benchmarks.baseline import code_at  # noqa: E402

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


def run_sweep(backend: str, trials: int, epochs: int, parallel: int, cpus: int, code: Path = REPO) -> dict[str, Any]:
    """One sweep through the real command of the code in ``code`` (this tree, or a baseline commit's copy)."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{backend}-") as tmp:
        spec = Path(tmp) / "bench.yaml"
        lrs = [round(1e-3 * (1 + i / 10), 6) for i in range(trials)]
        spec.write_text(SWEEP.format(epochs=epochs, lrs=lrs, parallel=parallel, cpus=cpus))
        env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "CONVIT_WORKDIR")}
        env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(code))
        start = time.time()
        out = subprocess.run([sys.executable, "-m", "orchestrator.cli", "submit", str(spec), "--backend", backend,
                              "--workdir", str(Path(tmp) / "runs")], cwd=code, env=env, capture_output=True,
                             text=True)
        wall = time.time() - start
        if out.returncode != 0:
            raise SystemExit(f"{backend} sweep failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        folders = sorted((Path(tmp) / "runs" / "sweeps" / "bench" / "trials").iterdir())
        spans = sorted(((f / "config.json").stat().st_mtime, (f / "final.json").stat().st_mtime) for f in folders)
    first_step = [s - start for s, _ in spans]
    return {"backend": backend, "trials": trials, "parallel": parallel, "wall_s": wall,
            "first_trial_latency_s": min(first_step), "train_s": [e - s for s, e in spans],
            "gaps_s": [spans[i][0] - spans[i - 1][1] for i in range(1, len(spans))]}


def _spread(values: list[float]) -> str:
    """median [min-max] of a list of seconds."""
    if not values:
        return "-"
    return f"{statistics.median(values):.1f} s [{min(values):.1f}-{max(values):.1f}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6, help="trials per sweep (gaps: trials - 1 per sweep)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2, help="sequential sweeps per code version, interleaved")
    parser.add_argument("--parallel", type=int, default=2, help="trials at a time in the wall-time run")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--backends", default="local,ray")
    parser.add_argument("--baseline", default=None, metavar="REV",
                        help="also run the code of this commit (e.g. main's), interleaved with this tree's")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        versions = {"this tree": REPO}
        if args.baseline:
            versions = {f"baseline {args.baseline}": stack.enter_context(code_at(args.baseline)), **versions}
        rows = []
        for backend in args.backends.split(","):
            seq: dict[str, list[dict[str, Any]]] = {name: [] for name in versions}
            for _ in range(args.rounds):  # interleaved: baseline, new, baseline, new: a burst of load hits both
                for name, code in versions.items():
                    seq[name].append(run_sweep(backend, args.trials, args.epochs, 1, args.cpus, code))
            for name, code in versions.items():
                parallel = run_sweep(backend, args.trials, args.epochs, args.parallel, args.cpus, code)
                firsts = [r["first_trial_latency_s"] for r in seq[name]]
                gaps = [g for r in seq[name] for g in r["gaps_s"]]
                rows.append({"backend": backend, "code": name, "sequential": seq[name], "parallel": parallel,
                             "first_trial_latency_s": firsts, "between_trials_s": gaps})
                print(f"{backend:6s} {name:22s} submit -> first step {_spread(firsts)} (n={len(firsts)}) · "
                      f"trial end -> next first step {_spread(gaps)} (n={len(gaps)}) · {args.trials} trials: "
                      f"{statistics.median(r['wall_s'] for r in seq[name]):.1f} s one at a time, "
                      f"{parallel['wall_s']:.1f} s {args.parallel} at a time", flush=True)
    if args.out:
        load = os.getloadavg()
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "load_after": load,
                                        "results": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
