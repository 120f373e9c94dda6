"""The CLI: bad input exits 2 with one message and writes nothing; reruns resume; SIGTERM checkpoints."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from convit.train import main

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("args, expected", [
    (["smoke", "epocs=2"], "did you mean 'epochs'"),
    (["smoke", "data_fraction=1.5"], "data_fraction"),
    (["smoke", "batch_size=1000"], "larger than the training subset"),
    (["smoke", "epochs=abc"], "epochs"),
    (["cifar", "data_root=/no/such/dir"], "not a directory"),
    (["no_such_preset"], "not found and not a preset"),
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, args, expected):
    out = tmp_path / "out"
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.startswith("error:")
    assert not out.exists()


def test_other_trial_in_dir_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["smoke", "epochs=1", "--out", str(out)]) == 0
    before = (out / "metrics.jsonl").read_text()
    assert main(["smoke", "epochs=1", "lr=0.01", "--out", str(out)]) == 2
    assert "config hash" in capsys.readouterr().err
    assert (out / "metrics.jsonl").read_text() == before


def test_help_lists_presets(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "--out" in text and "smoke" in text and "CONVIT_DATA_ROOT" in text


def test_sigterm_checkpoints_and_rerun_resumes(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "convit.train", "smoke", "epochs=6", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 120
    while not (metrics.exists() and metrics.read_text().strip()) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    assert "interrupted" in err and not (out / "final.json").exists()
    done = len(metrics.read_text().splitlines())
    assert 1 <= done < 6
    rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert rerun.returncode == 0, rerun.stderr
    assert "resumed" in rerun.stderr
    assert [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()] == list(range(6))


def test_sigterm_to_the_whole_process_group_with_loader_workers_checkpoints(tmp_path):
    """`kill -TERM -PGID` (what scancel and container runtimes do) reaches the DataLoader workers as well: the
    trial still saves its exact checkpoint, exits 3 and resumes to the same end."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "convit.train", "smoke", "epochs=3", "num_workers=2", "synthetic_train_size=384",
           "analysis_every=0", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 120
    while not (metrics.exists() and metrics.read_text().strip()) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # into the second epoch, workers busy
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    assert "killed by signal" not in err
    names = [p.name for p in (out / "checkpoints").iterdir()]
    assert names and not (out / "final.json").exists()
    rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert rerun.returncode == 0, rerun.stderr
    assert [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()] == list(range(3))
