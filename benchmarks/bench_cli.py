"""How long the door takes: wall time of `convit-sweep` commands a researcher types many times a day, each a
fresh process as from a shell (interpreter start and imports included).

- ``dry-run``: ``submit sweeps/quickstart.yaml --dry-run`` (validation, the data check of each trial, the table);
- ``resubmit``: ``submit`` of a finished tiny sweep (nothing to run: the MLflow parent run is reopened and
  closed, the status table printed);
- ``list`` and ``status`` of that sweep, and ``python -c pass`` (the interpreter alone) for scale.

The finished sweep is made once first (2 trials of the smoke preset, 1 epoch, synthetic data, ~30 s). Commands run
in interleaved rounds (each round runs every command once, in a rotated order), so that a machine busy with
something else for a while slows all of them alike; medians with min–max and the interquartile range.

    python benchmarks/bench_cli.py --rounds 7 --out bench_cli.json
    git archive HEAD~3 | tar -x -C /tmp/before     # the code of another commit, timed in the same rounds:
    python benchmarks/bench_cli.py --baseline /tmp/before
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

REPO = Path(__file__).resolve().parents[1]
SMOKE = """name: bench_finished
base: {preset: smoke, epochs: 1, synthetic_train_size: 32, synthetic_val_size: 16}
grid:
  model: [convit_tiny, deit_tiny]
seeds: [0]
local: {max_parallel: 2, cpus_per_trial: 1}
"""


#: Runs the CLI of another source tree: the editable install's import hook would otherwise load this one.
FROM_TREE = ("import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f)]; "
             "sys.path.insert(0, sys.argv.pop(1)); from orchestrator.cli import main; sys.exit(main(sys.argv[1:]))")


def command_line(tree: Path | None = None) -> list[str]:
    if tree is not None:
        return [sys.executable, "-c", FROM_TREE, str(tree)]
    script = Path(sys.executable).with_name("convit-sweep")  # the console script, as a user runs it
    return [str(script)] if script.exists() else [sys.executable, "-m", "orchestrator.cli"]


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "CONVIT_WORKDIR")}
    env.setdefault("CONVIT_DATA_ROOT", str((REPO / ".." / "shared" / "data" / "cifar10_jpeg").resolve()))
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return env


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    out = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return seconds


def summary(times: list[float]) -> dict[str, float]:
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "iqr_s": q[2] - q[0], "n": len(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (at least 5; default 7)")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON")
    parser.add_argument("--baseline", type=Path, metavar="DIR",
                        help="another source tree (e.g. `git archive` of an older commit) whose dry-run, resubmit "
                        "and status run in the same rounds, for a before/after comparison")
    args = parser.parse_args()
    if args.rounds < 5:
        parser.error("--rounds must be at least 5")
    env, cli = environment(), command_line()
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        work, spec = Path(tmp) / "runs", Path(tmp) / "bench_finished.yaml"
        spec.write_text(SMOKE)
        print(f"making the finished sweep in {work} ...", flush=True)
        made = timed([*cli, "submit", str(spec), "--workdir", str(work)], env)
        print(f"  done in {made:.1f} s", flush=True)
        commands = {
            "dry-run": [*cli, "submit", "sweeps/quickstart.yaml", "--dry-run", "--workdir", str(Path(tmp) / "dry")],
            "resubmit": [*cli, "submit", str(spec), "--workdir", str(work)],
            "list": [*cli, "list", "--workdir", str(work)],
            "status": [*cli, "status", "bench_finished", "--workdir", str(work)],
            "python -c pass": [sys.executable, "-c", "pass"],
        }
        if args.baseline:
            old = command_line(args.baseline.resolve())
            commands["dry-run (baseline)"] = [*old, *commands["dry-run"][len(cli):]]
            commands["resubmit (baseline)"] = [*old, *commands["resubmit"][len(cli):]]
            commands["status (baseline)"] = [*old, *commands["status"][len(cli):]]
        names = list(commands)
        times: dict[str, list[float]] = {name: [] for name in names}
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                times[name].append(timed(commands[name], env))
            print(f"round {r + 1}/{args.rounds}: " + "  ".join(f"{n} {times[n][-1]:.2f}s" for n in names),
                  flush=True)
    results = {name: summary(t) for name, t in times.items()}
    print(f"\nwall time per command, {args.rounds} interleaved rounds, {os.cpu_count()} CPU(s), "
          f"load average {os.getloadavg()[0]:.2f} at the end")
    print(f"{'command':<20} {'median':>8} {'min':>7} {'max':>7} {'IQR':>7}")
    for name, s in results.items():
        print(f"{name:<20} {s['median_s']:>7.2f}s {s['min_s']:>6.2f}s {s['max_s']:>6.2f}s {s['iqr_s']:>6.2f}s")
    if args.out:
        args.out.write_text(json.dumps({"rounds": args.rounds, "commands": {n: " ".join(c) for n, c in
                                                                           commands.items()},
                                        "results": results, "raw_s": times}, indent=2))


if __name__ == "__main__":
    main()
