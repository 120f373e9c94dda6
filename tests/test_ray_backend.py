"""The Ray Tune backend end to end, through the real `convit-sweep` command on a real local Ray (2 CPUs), with a
real MLflow store: a FIFO sweep whose trial worker is killed mid-run (retried from its checkpoint, same final
metrics as an uninterrupted run), ASHA stopping trials early, a killed driver resumed with `convit-sweep resume`,
and PBT moving a trial onto another's checkpoint with new hyperparameters.

Every test starts its own private Ray through the command and the command shuts it down; a driver the test kills
is cleaned up by pid (its process group, which holds only what it started)."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator.tracking import Tracker, default_tracking_uri
from convit.records import read_json, read_metrics
from orchestrator.status import pid_alive

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[1]
TIMING_KEYS = ("epoch_time_s", "img_per_s", "peak_mem_mb")  # the only values that may differ between runs

BASE = """
base:
  preset: smoke
  epochs: {epochs}
  synthetic_train_size: 64
  synthetic_val_size: 16
  analysis_every: 0
  min_lr: 1.0e-8
  mixup: 0.0
  cutmix: 0.0
  label_smoothing: 0.0
"""


def write_sweep(tmp_path: Path, name: str, epochs: int, body: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\n" + BASE.format(epochs=epochs) + body)
    return path


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "CONVIT_WORKDIR", "RAY_ADDRESS")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return env


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=REPO, env=cli_env(),
                          capture_output=True, text=True, timeout=timeout)


def cli_background(*args: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", *args], cwd=REPO, env=cli_env(),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def wait_for(predicate, timeout: float = 180, what: str = "condition", proc: Any = None) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = predicate()
        if found:
            return found
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the command exited ({proc.returncode}) while waiting for {what}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def trial_dirs(work: Path, sweep: str) -> dict[str, Path]:
    return {p.name: p for p in (work / "sweeps" / sweep / "trials").iterdir() if p.is_dir()}


def steps(tracker: Tracker, run_id: str, key: str = "epoch") -> list[int]:
    return sorted(step for step, _ in tracker.metric_history(run_id, key))


def results(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in TIMING_KEYS}


def assert_no_ray_left(work: Path, sweep: str) -> None:
    """The command shut its private Ray down: its processes are gone, and the trial workers soon after."""
    state = read_json(work / "sweeps" / sweep / "ray.json")
    assert state["driver_pid"] is None
    alive = [p for p in state.get("ray_pids", []) if pid_alive(p)]
    assert not alive, f"Ray processes left running: {alive}"
    workers = [read_json(d / "ray_worker.json")["pid"] for d in trial_dirs(work, sweep).values()]
    wait_for(lambda: not any(pid_alive(p) for p in workers), timeout=30, what="the trial workers to exit")


# ------------------------------------------------------------------------------------------------------- FIFO
def test_fifo_sweep_with_a_killed_worker(tmp_path: Path):
    """2 trials at a time; one trial's worker is SIGKILLed after its first epoch: Tune retries it from its
    checkpoint, it ends with the metrics of an uninterrupted run, and MLflow has every epoch exactly once. (A whole
    node lost mid-sweep: tests/test_ray_slurm_cluster.py.)"""
    work = tmp_path / "runs"
    spec = write_sweep(tmp_path, "rfifo", 3, "grid:\n  lr: [0.001, 0.0005]\nseeds: [0]\n"
                       "ray: {num_cpus: 2, cpus_per_trial: 1, max_failures: 2}\n")
    proc = cli_background("submit", str(spec), "--backend", "ray", "--workdir", str(work), log=tmp_path / "log")
    try:
        sweep_dir = work / "sweeps" / "rfifo"
        victim = wait_for(lambda: next((d for d in trial_dirs(work, "rfifo").values()
                                        if len(read_metrics(d)) == 1 and (d / "ray_worker.json").exists()), None)
                          if (sweep_dir / "trials").exists() else None, what="a trial's first epoch", proc=proc)
        first = read_json(victim / "ray_worker.json")
        epoch0 = read_metrics(victim)[0]
        os.kill(first["pid"], signal.SIGKILL)
        assert proc.wait(timeout=300) == 0, (tmp_path / "log").read_text()[-4000:]
    finally:
        _stop(proc)

    retried = read_json(victim / "ray_worker.json")
    assert retried["pid"] != first["pid"] and retried["tune_trial_id"] == first["tune_trial_id"]
    rows = read_metrics(victim)
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert rows[0] == epoch0, "epoch 0 was trained again instead of resumed from its checkpoint"

    # the same config trained without interruption, in this process, gives the same final metrics
    import torch

    from convit.engine import run_trial
    from orchestrator.trial import Trial

    torch.set_num_threads(1)
    trial = Trial.from_dict(read_json(victim / "trial.json"))
    reference = run_trial(trial.config, tmp_path / "reference")
    final = read_json(victim / "final.json")["metrics"]
    assert results(final) == results(reference)

    tracker = Tracker(default_tracking_uri(work))
    parent = tracker.find_sweep_run("rfifo", "rfifo")
    assert parent is not None and parent.info.status == "FINISHED"
    runs = tracker.trial_runs("rfifo", "rfifo")
    assert set(runs) == set(trial_dirs(work, "rfifo")) and len(runs) == 2
    for trial_id, run in runs.items():
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["backend"] == "ray"
        assert run.data.tags["ray_trial_id"] == read_json(trial_dirs(work, "rfifo")[trial_id] / "ray_worker.json")[
            "tune_trial_id"]
        assert run.data.params["lr"] in ("0.001", "0.0005")
        assert steps(tracker, run.info.run_id) == [0, 1, 2]
        assert steps(tracker, run.info.run_id, "val_top1") == [0, 1, 2]
    assert runs[victim.name].data.metrics["val_top1"] == reference["val_top1"]
    assert_no_ray_left(work, "rfifo")

    again = cli("submit", str(spec), "--backend", "ray", "--workdir", str(work))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "2 trial(s) already finished" in again.stdout


# ------------------------------------------------------------------------------------------------------- ASHA
def test_asha_stops_the_worse_trials_early(tmp_path: Path):
    """One trial at a time, so ASHA sees them in grid order: a trial whose train loss at a rung is worse than the
    rung's cutoff stops there, and is recorded as finished early (not failed, not interrupted)."""
    work = tmp_path / "runs"
    spec = write_sweep(tmp_path, "rasha", 3, "grid:\n  lr: [1.0e-7, 0.003, 0.001]\n"
                       "ray:\n  num_cpus: 2\n  max_concurrent_trials: 1\n"
                       "  scheduler: {type: asha, metric: train_loss, mode: min, grace_period: 1, "
                       "reduction_factor: 2}\n")
    done = cli("submit", str(spec), "--backend", "ray", "--workdir", str(work))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    trials = json.loads((work / "sweeps" / "rasha" / "trials.json").read_text())
    expected = _asha_decisions([read_metrics(work / "sweeps" / "rasha" / "trials" / t["id"]) for t in trials],
                               rungs=[1, 2], reduction_factor=2)
    assert any(stop is not None for stop in expected.values()), "the data gave ASHA nothing to stop"

    tracker = Tracker(default_tracking_uri(work))
    runs = tracker.trial_runs("rasha", "rasha")
    status = {s["trial_id"]: s for s in json.loads(cli("status", "rasha", "--workdir", str(work), "--json").stdout)}
    for i, t in enumerate(trials):
        trial_dir = work / "sweeps" / "rasha" / "trials" / t["id"]
        run = runs[t["id"]]
        assert run.info.status == "FINISHED" and status[t["id"]]["state"] == "done"
        stop = expected[i]
        if stop is None:
            assert (trial_dir / "final.json").exists() and "early_stopped" not in run.data.tags
            assert steps(tracker, run.info.run_id) == [0, 1, 2]
        else:
            assert not (trial_dir / "final.json").exists()
            assert run.data.tags["early_stopped"] == "asha"
            assert steps(tracker, run.info.run_id) == list(range(stop)), f"trial {i} should stop after {stop} epochs"
            assert run.data.metrics["train_loss"] == read_metrics(trial_dir)[-1]["train_loss"]
            assert "stopped early by asha" in status[t["id"]]["detail"]
    assert_no_ray_left(work, "rasha")


def _asha_decisions(histories: list[list[dict]], rungs: list[int], reduction_factor: float) -> dict[int, int | None]:
    """ASHA's rule replayed on the recorded losses, trials in the order they ran: at each rung a trial stops if
    its loss is worse than the (1 - 1/rf) quantile of the losses recorded there before it."""
    import numpy as np

    recorded: dict[int, list[float]] = {r: [] for r in rungs}
    out: dict[int, int | None] = {}
    for i, rows in enumerate(histories):
        out[i] = None
        for rung in rungs:
            if len(rows) < rung:
                break
            score = -rows[rung - 1]["train_loss"]  # mode min
            seen = recorded[rung]
            if seen and score < np.nanpercentile(seen, (1 - 1 / reduction_factor) * 100):
                out[i] = rung
            seen.append(score)
            if out[i] is not None:
                break
    return out


# ------------------------------------------------------------------------------------------ killed driver
def test_killed_driver_is_resumed(tmp_path: Path):
    work = tmp_path / "runs"
    spec = write_sweep(tmp_path, "rresume", 3, "grid:\n  lr: [0.001, 0.0005]\n"
                       "ray: {num_cpus: 2, max_concurrent_trials: 1}\n")
    proc = cli_background("submit", str(spec), "--backend", "ray", "--workdir", str(work), log=tmp_path / "log")
    sweep_dir = work / "sweeps" / "rresume"
    try:
        experiment = wait_for(lambda: (read_json(sweep_dir / "ray.json") or {}).get("experiment_path"), proc=proc,
                              what="the Tune experiment")
        wait_for(lambda: list(Path(experiment).glob("experiment_state-*.json")), proc=proc, what="Tune's state")
        trial = wait_for(lambda: next((d for d in trial_dirs(work, "rresume").values()
                                       if len(read_metrics(d)) >= 1), None), proc=proc, what="a first epoch")
        epoch0 = read_metrics(trial)[0]
        worker = read_json(trial / "ray_worker.json")["pid"]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        wait_for(lambda: not pid_alive(worker), timeout=60, what="the trial worker to die with its driver")
        assert not (trial / "final.json").exists()
        orphans = read_json(sweep_dir / "ray.json")["ray_pids"]
        assert orphans, "the driver recorded no Ray processes"

        resumed = cli("resume", "rresume", "--workdir", str(work))
        assert not [p for p in orphans if pid_alive(p)], "resume left the killed driver's Ray processes running"
    finally:
        _stop(proc)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resumed the Tune experiment" in resumed.stdout

    tracker = Tracker(default_tracking_uri(work))
    assert tracker.find_sweep_run("rresume", "rresume").info.status == "FINISHED"
    runs = tracker.trial_runs("rresume", "rresume")
    assert len(runs) == 2
    for trial_id, run in runs.items():
        assert run.info.status == "FINISHED"
        assert steps(tracker, run.info.run_id) == [0, 1, 2]
        assert (trial_dirs(work, "rresume")[trial_id] / "final.json").exists()
    assert read_metrics(trial)[0] == epoch0, "the interrupted trial restarted instead of resuming"
    assert_no_ray_left(work, "rresume")


# ----------------------------------------------------------------------------------------------------- cancel
def test_cancel_checkpoints_mid_epoch_and_resume_continues(tmp_path: Path):
    """`convit-sweep cancel` makes the running trial save an exact mid-epoch checkpoint before Tune stops, and
    `convit-sweep resume` continues from it."""
    work = tmp_path / "runs"
    spec = write_sweep(tmp_path, "rcancel", 3, "grid:\n  lr: [0.001]\nray: {num_cpus: 2}\n")
    # epochs of ~60 steps (a few seconds): the cancel below lands inside the second epoch, not after the last
    # DataLoader workers on: they must leave the stop to the trainer, whatever signal Ray's stop sends them
    spec.write_text(spec.read_text().replace("synthetic_train_size: 64", "synthetic_train_size: 1024\n  num_workers: 2"))
    proc = cli_background("submit", str(spec), "--backend", "ray", "--workdir", str(work), log=tmp_path / "log")
    try:
        trial = wait_for(lambda: next((d for d in trial_dirs(work, "rcancel").values() if read_metrics(d)), None)
                         if (work / "sweeps" / "rcancel" / "trials").exists() else None, proc=proc,
                         what="a first epoch")
        time.sleep(1.5)  # into the second epoch
        cancelled = cli("cancel", "rcancel", "--workdir", str(work))
        assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
        assert proc.wait(timeout=120) == 1  # the sweep ended with a trial stopped
    finally:
        _stop(proc)
    status = read_json(trial / "status.json")
    assert status["state"] == "interrupted" and "after a checkpoint" in status["error"]
    names = [p.name for p in (trial / "checkpoints").iterdir()]
    assert any(not n.endswith("-000000.pt") for n in names), f"no mid-epoch checkpoint among {names}"
    assert not (trial / "final.json").exists()

    resumed = cli("resume", "rcancel", "--workdir", str(work))
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    tracker = Tracker(default_tracking_uri(work))
    (run,) = tracker.trial_runs("rcancel", "rcancel").values()
    assert run.info.status == "FINISHED" and steps(tracker, run.info.run_id) == [0, 1, 2]
    assert_no_ray_left(work, "rcancel")


# -------------------------------------------------------------------------------------------------------- PBT
def test_pbt_moves_a_trial_onto_the_better_ones_checkpoint(tmp_path: Path):
    """Two trials at once, a perturbation every epoch: the worse one continues from the better one's checkpoint
    with a mutated lr; the change is recorded as hp/lr metrics and an event tag, params stay as they were, and
    each epoch is in MLflow once."""
    work = tmp_path / "runs"
    spec = write_sweep(tmp_path, "rpbt", 4, "grid:\n  lr: [1.0e-7, 0.001]\n"
                       "ray:\n  num_cpus: 2\n  scheduler:\n    type: pbt\n    metric: train_loss\n    mode: min\n"
                       "    perturbation_interval: 1\n    resample_probability: 0.0\n"
                       "    hyperparam_mutations: {lr: {distribution: loguniform, low: 1.0e-7, high: 0.01}}\n")
    done = cli("submit", str(spec), "--backend", "ray", "--workdir", str(work))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    tracker = Tracker(default_tracking_uri(work))
    runs = tracker.trial_runs("rpbt", "rpbt")
    exploited = [tid for tid, run in runs.items() if "pbt.exploits" in run.data.tags]
    assert exploited, "PBT never exploited (see the submit output)"
    for trial_id in exploited:
        run = runs[trial_id]
        trial_dir = trial_dirs(work, "rpbt")[trial_id]
        event = json.loads(run.data.tags["pbt.exploit.1"])
        assert event["from_trial"] in runs and event["from_trial"] != trial_id
        assert run.data.params["lr"] == str(read_json(trial_dir / "trial.json")["config"]["lr"])
        history = tracker.metric_history(run.info.run_id, "hp/lr")
        assert [v for s, v in history if s == 0][0] == pytest.approx(float(run.data.params["lr"]))
        # every exploit's values are logged at the epoch they apply from (two exploits can share an epoch: the
        # trial was exploited again before it trained one; then that step holds both values)
        for n in range(1, int(run.data.tags["pbt.exploits"]) + 1):
            exploit = json.loads(run.data.tags[f"pbt.exploit.{n}"])
            at_epoch = [v for s, v in history if s == exploit["epoch"]]
            assert any(math.isclose(v, exploit["values"]["lr"]) for v in at_epoch), (n, exploit, history)
        # the folder now holds the new config, and its lr schedule is that config's from the exploit on
        last = json.loads(run.data.tags[f"pbt.exploit.{run.data.tags['pbt.exploits']}"])
        config = read_json(trial_dir / "config.json")
        assert config["config"]["lr"] == pytest.approx(last["values"]["lr"])
        assert config["config_hash"] == read_json(trial_dir / "pbt" / "installed.json")["config_hash"]
        assert (trial_dir / "final.json").exists()
    for run in runs.values():
        assert run.info.status == "FINISHED"
        assert steps(tracker, run.info.run_id) == [0, 1, 2, 3]
    assert_no_ray_left(work, "rpbt")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """The command, and anything left in its process group (its private Ray), by the group id we created."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=30)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
