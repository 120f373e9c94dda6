"""Fault drill on the local SLURM (slurm/start.sh): a sweep of N trials is disturbed D times at random moments,
start-up included (`scancel --signal=USR2` = preemption, `scontrol requeue`), then the tally: trials finished /
lost, epochs missing or duplicated in metrics.jsonl and in MLflow.

    .venv/bin/python benchmarks/drill_slurm.py --trials 4 --disturbances 8
"""
from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from convit.records import read_metrics  # noqa: E402
from orchestrator.tracking import Tracker, default_tracking_uri  # noqa: E402


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=REPO, capture_output=True,
                          text=True)


def live_tasks(array: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-r", "-j", array, "-t", "RUNNING", "-o", "%i"], capture_output=True,
                         text=True).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--disturbances", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        work, spec = Path(tmp) / "runs", Path(tmp) / "drill.yaml"
        spec.write_text(f"name: drill\nbase: {{preset: smoke, epochs: {args.epochs}, synthetic_train_size: 256}}\n"
                        f"seeds: {args.trials}\nslurm: {{profile: local, array_parallelism: 2}}\n")
        out = cli("submit", str(spec), "--backend", "slurm", "--workdir", str(work))
        array = re.search(r"SLURM job array (\d+)", out.stdout + out.stderr).group(1)
        done, kinds = 0, []
        deadline = time.time() + 900
        while done < args.disturbances and time.time() < deadline:
            time.sleep(rng.uniform(0.5, 4.0))
            tasks = live_tasks(array)
            if not tasks:
                if not subprocess.run(["squeue", "-h", "-j", array], capture_output=True, text=True).stdout.strip():
                    break
                continue
            task, kind = rng.choice(tasks), rng.choice(["usr2", "requeue"])
            cmd = ["scancel", "--signal=USR2", task] if kind == "usr2" else ["scontrol", "requeue", task]
            subprocess.run(cmd, capture_output=True)
            kinds.append(kind)
            done += 1
        while time.time() < deadline and subprocess.run(["squeue", "-h", "-j", array], capture_output=True,
                                                        text=True).stdout.strip():
            time.sleep(2)
        trials = json.loads(cli("status", "drill", "--workdir", str(work), "--json").stdout)
        tracker = Tracker(default_tracking_uri(work))
        runs = tracker.trial_runs("drill", "drill")
        finished = lost = missing = duplicated = mlflow_bad = 0
        for t in trials:
            epochs = [int(r["epoch"]) for r in read_metrics(work / "sweeps" / "drill" / "trials" / t["trial_id"])]
            finished += t["state"] == "done"
            lost += t["state"] != "done"
            missing += len(set(range(args.epochs)) - set(epochs))
            duplicated += len(epochs) - len(set(epochs))
            run = runs.get(t["trial_id"])
            history = sorted(m.step for m in tracker.client.get_metric_history(run.info.run_id, "epoch")) if run else []
            mlflow_bad += history != list(range(args.epochs))
        print(f"{len(kinds)} disturbances ({kinds.count('usr2')} preemptions USR2, {kinds.count('requeue')} requeues) "
              f"on {args.trials} trials: {finished} finished, {lost} lost; metrics.jsonl: {missing} epochs missing, "
              f"{duplicated} duplicated; MLflow: {mlflow_bad} runs with steps not exactly 0..{args.epochs - 1}; "
              f"parent run {tracker.find_sweep_run('drill', 'drill').info.status}")


if __name__ == "__main__":
    main()
