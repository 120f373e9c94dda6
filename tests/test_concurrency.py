"""Processes at once. One owner per trial (convit.records.own_trial): a second runner of the same trial is
refused on every door, a running trial is left alone by a second submission (and by one after its scheduler was
killed), and an owner that dies however it dies never blocks a later run. Sweeps submitted together on a fresh
working folder all run (the embedded store is created once)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from convit.records import TrialBusy, own_trial, read_json, read_metrics, trial_owner
from orchestrator.status import pid_alive
from orchestrator.tracking import Tracker, default_tracking_uri
from tests.test_local import cli, cli_background, cli_env, steps, sweep_file, wait_for

REPO = Path(__file__).resolve().parents[1]
HOLD = "import sys, time; from convit.records import own_trial\nwith own_trial(sys.argv[1]):\n" \
       "    print('held', flush=True); time.sleep(600)\n"


def _holder(folder: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], cwd=REPO, env=cli_env(),
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_owner_is_refused_and_a_killed_owner_frees_the_trial(tmp_path: Path):
    folder = tmp_path / "trial"
    holder = _holder(folder)
    try:
        owner = trial_owner(folder)
        assert owner is not None and owner["pid"] == holder.pid
        with pytest.raises(TrialBusy, match=f"pid {holder.pid}"):
            with own_trial(folder, wait_s=0.2):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert trial_owner(folder) is None  # the kernel released the lock with the process: nothing to clean up
    with own_trial(folder):
        with own_trial(folder):  # re-entrant in the owning process (the runner, then the engine)
            assert trial_owner(folder)["pid"] == os.getpid()
    assert trial_owner(folder) is None


def test_train_refuses_an_out_dir_another_process_is_training(tmp_path: Path):
    out = tmp_path / "out"
    holder = _holder(out)
    try:
        second = subprocess.run([sys.executable, "-m", "convit.train", "smoke", "epochs=1", "--out", str(out)],
                                cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert second.returncode == 2, second.stderr
    assert f"is being trained by pid {holder.pid}" in second.stderr
    assert not (out / "metrics.jsonl").exists() and not (out / "config.json").exists()


def _trial_dir(work: Path, name: str) -> Path:
    (found,) = list((work / "sweeps" / name / "trials").glob("*"))
    return found


def _assert_each_epoch_once(work: Path, name: str, trial_dir: Path, epochs: int) -> None:
    assert [int(r["epoch"]) for r in read_metrics(trial_dir)] == list(range(epochs))
    tracker = Tracker(default_tracking_uri(work))
    run_id = read_json(trial_dir / "mlflow_run.json")["run_id"]
    assert steps(tracker, run_id, "epoch") == list(range(epochs))
    assert len(tracker.trial_runs(name, name)) == 1


def test_a_second_submit_leaves_the_running_trial_alone(tmp_path: Path):
    work = tmp_path / "runs"
    spec = sweep_file(tmp_path, "twice", epochs=12, train=96, models="[convit_tiny]")
    first = cli_background("submit", str(spec), "--workdir", str(work))
    try:
        wait_for(lambda: (work / "sweeps/twice/trials").is_dir() and read_metrics(_trial_dir(work, "twice")),
                 what="a first epoch")
        recorded = (work / "sweeps/twice/trials.json").read_text()
        changed = cli("submit", str(spec), "epochs=13", "--workdir", str(work))  # another version, same name
        second = cli("submit", str(spec), "--workdir", str(work))
        out, _ = first.communicate(timeout=240)
    finally:
        if first.poll() is None:
            first.kill()
    assert changed.returncode == 2 and "still running 1 trial(s) of its recorded version" in changed.stderr, \
        changed.stdout + changed.stderr
    assert (work / "sweeps/twice/trials.json").read_text() == recorded  # the running version's record is kept
    assert second.returncode == 0, second.stdout + second.stderr
    assert "is already running (pid" in second.stdout and "left alone" in second.stdout, second.stdout
    assert first.returncode == 0, out
    _assert_each_epoch_once(work, "twice", _trial_dir(work, "twice"), 12)
    parent = Tracker(default_tracking_uri(work)).find_sweep_run("twice", "twice")
    assert parent.info.status == "FINISHED"  # closed by the submission that ran the trial


def test_trials_that_outlive_a_killed_scheduler_are_left_alone(tmp_path: Path):
    work = tmp_path / "runs"
    spec = sweep_file(tmp_path, "orphan", epochs=12, train=96, models="[convit_tiny]")
    scheduler = cli_background("submit", str(spec), "--workdir", str(work))
    try:
        wait_for(lambda: (work / "sweeps/orphan/trials").is_dir() and read_metrics(_trial_dir(work, "orphan")),
                 what="a first epoch")
        scheduler.send_signal(signal.SIGKILL)
        scheduler.wait(timeout=30)
    finally:
        if scheduler.poll() is None:
            scheduler.kill()
    trial_dir = _trial_dir(work, "orphan")
    runner = trial_owner(trial_dir)
    assert runner is not None and pid_alive(runner["pid"])  # its own session: it outlived the scheduler
    status = cli("status", "orphan", "--workdir", str(work))
    assert "running" in status.stdout, status.stdout
    again = cli("submit", str(spec), "--workdir", str(work))
    assert again.returncode == 0 and "left alone" in again.stdout, again.stdout + again.stderr
    wait_for(lambda: (trial_dir / "final.json").exists(), timeout=240, what="the orphaned trial to finish")
    wait_for(lambda: not pid_alive(runner["pid"]), timeout=60, what="the orphaned runner to exit")
    last = cli("submit", str(spec), "--workdir", str(work))
    assert last.returncode == 0 and "every trial has finished" in last.stdout, last.stdout + last.stderr
    _assert_each_epoch_once(work, "orphan", trial_dir, 12)


def test_three_sweeps_submitted_at_once_on_a_fresh_folder_all_run(tmp_path: Path):
    """Each submit creates the embedded store if it is missing: at once, on a fresh folder, none may fail."""
    work = tmp_path / "runs"
    specs = [sweep_file(tmp_path, f"at-once-{i}", epochs=1, train=32, models="[deit_tiny]") for i in range(3)]
    procs = [cli_background("submit", str(spec), "--workdir", str(work)) for spec in specs]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(outputs)
    tracker = Tracker(default_tracking_uri(work))
    for i in range(3):
        name = f"at-once-{i}"
        assert tracker.find_sweep_run(name, name).info.status == "FINISHED"
