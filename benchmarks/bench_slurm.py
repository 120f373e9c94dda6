"""SLURM backend figures (a benchmark, not a test): how long submitting takes and what a task costs.

1. ``dryrun``: a 1,000-trial sweep, from the YAML file to everything ``submit`` would hand to sbatch (parse,
   expand, validate every TrialConfig, render the batch script, pickle 1,000 callables), nothing written.
2. ``array``: a real 100-task array of trivial tasks on the cluster, through the backend's own executor set-up
   (code snapshot, submitit AutoExecutor, one sbatch): time to submit, to the first task start, to drain.
3. ``overhead``: real smoke trials through ``convit-sweep submit --backend slurm``: per task, SLURM's queue wait
   (sacct Submit → Start) and the start-up cost from the task's process start to the end of its first
   optimizer step (recorded by the task in slurm_task.json).

    python benchmarks/bench_slurm.py                     # all three (needs the local cluster: slurm/start.sh)
    python benchmarks/bench_slurm.py dryrun --trials 1000
    python benchmarks/bench_slurm.py array --tasks 100
    python benchmarks/bench_slurm.py overhead --trials 5 --rounds 2 --baseline a2f0a53
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.baseline import code_at  # noqa: E402


def sweep_yaml(name: str, trials: int, epochs: int = 1) -> str:
    lrs = ", ".join(f"{1e-4 * (i + 1):.6g}" for i in range(max(1, trials // 10)))
    seeds = min(trials, 10)
    return (f"name: {name}\nbase: {{preset: smoke, epochs: {epochs}, synthetic_val_size: 16}}\n"
            f"grid: {{lr: [{lrs}]}}\nseeds: {seeds}\nslurm: {{profile: local}}\n")


def bench_dryrun(trials: int) -> None:
    from orchestrator.backends.slurm.backend import SlurmBackend
    from orchestrator.spec import load_sweep
    from orchestrator.workdir import sweep_context

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.yaml"
        path.write_text(sweep_yaml("big", trials))
        t0 = time.perf_counter()
        spec, expanded = load_sweep(path)
        t1 = time.perf_counter()
        ctx = sweep_context(spec, Path(tmp) / "runs", "slurm", "sqlite:///unused.db")
        plan = SlurmBackend(check=False).plan(ctx, expanded)
        t2 = time.perf_counter()
    print(f"dryrun: {len(expanded)} trials: parse+expand+validate {t1 - t0:.2f} s, batch script + "
          f"{plan.tasks} pickles ({plan.pickle_bytes / 1024:.0f} KiB) {t2 - t1:.2f} s, total {t2 - t0:.2f} s")


def _trivial() -> int:
    return os.getpid()


def _sacct_rows_when_complete(array: str, expected: int) -> list[tuple[float, float, float]]:
    """sacct's rows for the array, waiting up to 30 s for all ``expected`` (sacct lags squeue by a few seconds)."""
    rows = _sacct_times(array)
    for _ in range(30):
        if len(rows) >= expected:
            break
        time.sleep(1)
        rows = _sacct_times(array)
    return rows


def _sacct_times(array: str) -> list[tuple[float, float, float]]:
    out = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,Submit,Start,End,State", "-j", array],
                         capture_output=True, text=True, timeout=30).stdout
    rows = []
    for line in out.splitlines():
        job, submit, start, end, state = line.split("|")
        if state.startswith("COMPLETED"):
            rows.append(tuple(datetime.fromisoformat(t).timestamp() for t in (submit, start, end)))
    return rows  # type: ignore[return-value]


def bench_array(tasks: int) -> None:
    import cloudpickle

    from orchestrator.backends.slurm.backend import SlurmBackend
    from orchestrator.backends.slurm.snapshot import snapshot_code
    from orchestrator.sections import SlurmSection
    from orchestrator.workdir import SweepContext

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    backend = SlurmBackend()
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        ctx = SweepContext(name="bench-array", workdir=Path(tmp), tracking_uri="sqlite:///unused.db",
                           experiment="bench", backend="slurm")
        opts = SlurmSection.model_validate({"profile": "local", "array_parallelism": tasks, "timeout_min": 5})
        t0 = time.perf_counter()
        snapshot = snapshot_code(ctx.sweep_dir / "slurm")
        executor = backend.make_executor(ctx, opts, snapshot)
        with executor.batch():
            jobs = [executor.submit(_trivial) for _ in range(tasks)]
        submitted = time.perf_counter()
        wall_submit = time.time()
        array = jobs[0].job_id.split("_")[0]
        print(f"array: {tasks} tasks submitted as job {array} in {submitted - t0:.2f} s "
              "(snapshot, executor, pickles, one sbatch)")
        deadline = time.time() + 1800
        while time.time() < deadline:
            queued = subprocess.run(["squeue", "-h", "-r", "-j", array], capture_output=True, text=True).stdout
            if not queued.strip():
                break
            time.sleep(1)
        drained = time.perf_counter()
        rows = _sacct_rows_when_complete(array, tasks)
        first_start = min(r[1] for r in rows) - wall_submit if rows else float("nan")
        print(f"array: {len(rows)}/{tasks} COMPLETED; first task started {first_start:.1f} s after submit, all done "
              f"{drained - submitted:.1f} s after submit ({tasks / (drained - submitted):.2f} tasks/s on this "
              f"cluster's {_cpus()} CPUs; task run time median {statistics.median(r[2] - r[1] for r in rows):.1f} s)")
        failed = [j.job_id for j in jobs if j.state not in ("COMPLETED", "UNKNOWN")]
        if failed:
            print(f"array: not completed: {failed[:5]}")


def _cpus() -> str:
    out = subprocess.run(["sinfo", "-h", "-o", "%C"], capture_output=True, text=True).stdout.strip()
    return out.split("/")[-1] if out else "?"


def overhead_run(trials: int, code: Path = REPO) -> tuple[list[float], list[float]]:
    """One sweep of smoke trials through ``convit-sweep submit --backend slurm`` run from ``code``: (each task's
    process start -> end of its first optimizer step, each task's queue wait), in seconds."""
    from convit.records import read_json

    # the array's settling job (afterany) may still write its log as the folder goes: never fail on that
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        path = Path(tmp) / "overhead.yaml"
        path.write_text(sweep_yaml("overhead", trials))
        env = {**os.environ, "PYTHONPATH": str(code)}
        work = Path(tmp) / "runs"
        out = subprocess.run([sys.executable, "-m", "orchestrator.cli", "submit", str(path), "--backend", "slurm",
                              "--workdir", str(work)], env=env, cwd=code, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(out.stdout + out.stderr)
        state = read_json(work / "sweeps" / "overhead" / "slurm.json")
        array = state["arrays"][0]["job_id"]
        while subprocess.run(["squeue", "-h", "-r", "-j", array], capture_output=True, text=True).stdout.strip():
            time.sleep(1)
        startup = []
        for trial_id in state["tasks"]:
            record = read_json(work / "sweeps" / "overhead" / "trials" / trial_id / "slurm_task.json", {}) or {}
            startup += [s["first_step_after_s"] for s in record.get("starts", []) if "first_step_after_s" in s]
        rows = _sacct_rows_when_complete(array, trials)
    return startup, [start - submit for submit, start, _ in rows]


def bench_overhead(trials: int, rounds: int = 1, baseline: str | None = None) -> None:
    with contextlib.ExitStack() as stack:
        versions = {"this tree": REPO}
        if baseline:
            versions = {f"baseline {baseline}": stack.enter_context(code_at(baseline)), **versions}
        startup: dict[str, list[float]] = {name: [] for name in versions}
        queue: dict[str, list[float]] = {name: [] for name in versions}
        for _ in range(rounds):  # interleaved: baseline, new, baseline, new
            for name, code in versions.items():
                first, waits = overhead_run(trials, code)
                startup[name] += first
                queue[name] += waits
        for name in versions:
            s, q = startup[name], queue[name]
            print(f"overhead {name}: {len(s)} smoke trials: task process start -> end of first optimizer step: "
                  f"median {statistics.median(s):.1f} s [{min(s):.1f}-{max(s):.1f}]; SLURM queue wait (submit -> "
                  f"start) median {statistics.median(q):.1f} s (2 tasks at a time, so later tasks wait for earlier "
                  "ones)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="*", choices=["dryrun", "array", "overhead"], default=[])
    parser.add_argument("--trials", type=int, default=None, help="dryrun: 1000, overhead: 4")
    parser.add_argument("--tasks", type=int, default=100, help="array size (default 100)")
    parser.add_argument("--rounds", type=int, default=1, help="overhead: sweeps per code version, interleaved")
    parser.add_argument("--baseline", default=None, metavar="REV",
                        help="overhead: also run the code of this commit (e.g. main's), interleaved with this tree's")
    args = parser.parse_args()
    chosen = args.what or ["dryrun", "array", "overhead"]
    if "dryrun" in chosen:
        bench_dryrun(args.trials or 1000)
    if "array" in chosen:
        bench_array(args.tasks)
    if "overhead" in chosen:
        bench_overhead(args.trials or 5, args.rounds, args.baseline)


if __name__ == "__main__":
    main()
