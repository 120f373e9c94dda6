"""A full disk under a trial's folder: one message that says where and what to do (exit 1, no traceback), the
recorded progress and the previous checkpoint untouched, and a run after space is freed resumes to the end.
A real small filesystem (tmpfs, mounted for the test; skipped where mounting is not allowed)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from convit.records import list_checkpoints

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def small_disk(tmp_path: Path):
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(folder: Path) -> Path:
    filler = folder / "filler"
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * (1 << 20))
                fh.flush()
        except OSError:
            pass
    return filler


def test_a_full_disk_is_one_message_and_the_run_resumes_once_space_is_freed(small_disk: Path):
    out = small_disk / "trial"
    cmd = [sys.executable, "-m", "convit.train", "smoke", "epochs=4", "analysis_every=0", "model_kwargs.depth=2",
           "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 120
    while not (metrics.exists() and metrics.read_text().strip()) and time.time() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=120)
    assert first.returncode == 3
    before = {p.name: p.read_bytes() for p in list_checkpoints(out / "checkpoints")}
    recorded = metrics.read_text()

    filler = _fill(small_disk)
    full = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert full.returncode == 1, full.stderr
    assert "no space left on device under" in full.stderr and "Traceback" not in full.stderr, full.stderr
    assert {p.name: p.read_bytes() for p in list_checkpoints(out / "checkpoints")} == before
    assert metrics.read_text() == recorded

    filler.unlink()
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stderr
    assert [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()] == [0, 1, 2, 3]
