"""`convit-sweep train`: its own name in --help, MLflow logging like a sweep trial, Ctrl-C that checkpoints and
resumes with every epoch logged once, a one-line result instead of a JSON dump."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from convit.records import read_json, read_metrics
from orchestrator.tracking import Tracker, default_tracking_uri

REPO = Path(__file__).resolve().parents[1]


def _env(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI",)}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), CONVIT_WORKDIR=str(work))
    return env


def _train(work: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "train", *args], cwd=work.parent,
                            env=_env(work), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_help_names_the_program(tmp_path: Path):
    out = subprocess.run([sys.executable, "-m", "orchestrator.cli", "train", "--help"], env=_env(tmp_path),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("usage: convit-sweep train")


def test_ctrl_c_checkpoints_and_the_rerun_resumes_into_the_same_mlflow_run(tmp_path: Path):
    work, out = tmp_path / "runs", tmp_path / "one"
    args = ("smoke", "epochs=6", "synthetic_train_size=256", "analysis_every=0", "--out", str(out))
    first = _train(work, *args)
    deadline = time.time() + 180
    while time.time() < deadline and len(read_metrics(out)) < 1:
        time.sleep(0.1)
    assert len(read_metrics(out)) >= 1, "no epoch within 3 minutes"
    first.send_signal(signal.SIGINT)  # what Ctrl-C sends to the foreground process
    text, _ = first.communicate(timeout=120)
    assert first.returncode == 3, text  # the documented "interrupted after a checkpoint"
    assert "Ctrl-C: saving a checkpoint" in text and "Traceback" not in text and "run the same command" in text
    assert list((out / "checkpoints").glob("ckpt-*.pt")) and not (out / "final.json").exists()
    tracker = Tracker(default_tracking_uri(work))
    run_id = read_json(out / "mlflow_run.json")["run_id"]
    assert tracker.client.get_run(run_id).info.status == "KILLED"
    assert "epoch 1/6" in text and "ETA" in text  # total epochs and an ETA

    second = _train(work, *args)
    text, _ = second.communicate(timeout=300)
    assert second.returncode == 0, text
    assert "resumed from epoch" in text
    last = text.strip().splitlines()[-1]
    assert last.startswith("done: test_top1") and "final.json" in last and "{" not in text  # no JSON dump
    run = tracker.client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["mlflow.runName"] == "one"
    assert [s for s, _ in tracker.metric_history(run_id, "epoch")] == list(range(6))  # each epoch once
    assert run.data.params["epochs"] == "6" and run.inputs.dataset_inputs  # params and the data, like a trial
    progress = read_json(out / "progress.json")
    assert progress["epoch"] == 5 and progress["step"] == progress["steps"] > 0  # the live position's source
    assert tracker.client.get_experiment(run.info.experiment_id).name == "train"


def test_the_live_position_moves_within_an_epoch(tmp_path: Path):
    """What the local backend's per-trial bar shows, from the trial folder: epochs done plus the fraction of the
    running epoch (progress.json), the running loss, the latest top-1 and an ETA from the epoch times so far."""
    from convit.records import append_metrics, write_progress
    from orchestrator.backends.local import live_position, resume_position

    assert live_position(tmp_path) == (0.0, "")
    append_metrics(tmp_path, {"epoch": 0, "train_loss": 2.0, "val_top1": 31.25, "epoch_time_s": 10.0})
    write_progress(tmp_path, epoch=1, epochs=4, step=5, steps=20, loss=1.5)
    done, info = live_position(tmp_path)
    assert done == 1.25  # one epoch, and a quarter of the second
    assert info == "loss 1.500 · top-1 31.2 % · ETA 0m27s"  # (4 - 1.25) epochs × 10 s
    assert resume_position(tmp_path) == ""  # no checkpoint: a fresh start
