"""Checkpoints are checked before they are trusted: a damaged, foreign or misnamed file is named and skipped for
the previous intact one; when none can be used the trial refuses (exit 2) instead of restarting over recorded
progress; temporary files of killed writers do not pile up; damaged records do not end in tracebacks."""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from convit.engine import TrialControl, TrialInterrupted, run_trial
from convit.records import CheckpointsUnusable, checkpoint_record_path, list_checkpoints, read_metrics
from convit.train import main
from tests.test_resume import BASE, StopAfter, assert_identical, cfg, reference  # noqa: F401 - the fixture

pytestmark = pytest.mark.usefixtures("one_torch_thread")
REPO = Path(__file__).resolve().parents[1]


def _interrupted(out: Path, after: int = 1) -> Path:
    """A trial stopped after ``after`` epochs, with two checkpoints on disk."""
    control = TrialControl()
    with pytest.raises(TrialInterrupted):
        run_trial(cfg(), out, reporter=StopAfter(control, after), control=control)
    assert len(list_checkpoints(out / "checkpoints")) == 2
    return out


def _flip_bits(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 3):  # a few bits in the middle: the zip still opens
        data[i] ^= 0x10
    path.write_bytes(bytes(data))


def test_flipped_bits_are_caught_by_the_digest_and_the_previous_checkpoint_is_used(reference, tmp_path, caplog):
    out = _interrupted(tmp_path / "t")
    latest = list_checkpoints(out / "checkpoints")[-1]
    _flip_bits(latest)
    with caplog.at_level(logging.WARNING, logger="convit.engine"):
        run_trial(cfg(), out)
    assert any(latest.name in r.getMessage() and "damaged" in r.getMessage() for r in caplog.records)
    assert_identical(reference, out)


def test_a_copy_under_a_later_name_is_not_taken_for_the_newest(reference, tmp_path):
    out = _interrupted(tmp_path / "t")
    older, latest = list_checkpoints(out / "checkpoints")
    stray = out / "checkpoints" / "ckpt-99999-000000.pt"  # a copy under a later name, without its record
    shutil.copy(older, stray)
    assert list_checkpoints(out / "checkpoints")[-1] == latest  # ordered by recorded position, not by name
    run_trial(cfg(), out)
    assert_identical(reference, out)


def test_a_misnamed_or_foreign_checkpoint_alone_is_refused_by_name(tmp_path):
    out = _interrupted(tmp_path / "t")
    older, latest = list_checkpoints(out / "checkpoints")
    shutil.copy(older, out / "checkpoints" / "ckpt-99999-000000.pt")
    for path in (older, latest):
        path.unlink()
        checkpoint_record_path(path).unlink()
    with pytest.raises(CheckpointsUnusable, match="ckpt-99999-000000.pt: misnamed"):
        run_trial(cfg(), out)
    other = _interrupted(tmp_path / "other")
    (out / "checkpoints" / "ckpt-99999-000000.pt").unlink()
    for path in list_checkpoints(other / "checkpoints"):
        shutil.copy(path, out / "checkpoints" / path.name)
        shutil.copy(checkpoint_record_path(path), out / "checkpoints" / checkpoint_record_path(path).name)
    (out / "config.json").unlink()  # only the checkpoints' own config hash can tell them apart now
    with pytest.raises(CheckpointsUnusable, match="foreign"):
        run_trial(cfg(lr=2e-3), out)


@pytest.mark.parametrize("damage", ["zero bytes", "truncated", "a file instead of the folder"])
def test_no_usable_checkpoint_is_refused_and_nothing_is_overwritten(tmp_path, capsys, damage):
    out = _interrupted(tmp_path / "t")
    ckpts = out / "checkpoints"
    if damage == "a file instead of the folder":
        shutil.rmtree(ckpts)
        ckpts.write_text("not a folder")
    else:
        for path in list_checkpoints(ckpts):
            path.write_bytes(b"" if damage == "zero bytes" else path.read_bytes()[:100])
    before = (out / "metrics.jsonl").read_text()
    with pytest.raises(CheckpointsUnusable, match="remove|is a file"):
        run_trial(cfg(), out)
    assert (out / "metrics.jsonl").read_text() == before  # the recorded progress is kept
    config = tmp_path / "trial.yaml"
    config.write_text(yaml.safe_dump(BASE))
    assert main([str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "\nerror:" in err and "Traceback" not in err
    assert (out / "metrics.jsonl").read_text() == before


def test_temp_files_of_killed_writers_are_removed_on_resume(reference, tmp_path):
    out = _interrupted(tmp_path / "t")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = out / "checkpoints" / f".ckpt-00009-000000.pt.{int(dead.stdout)}.abcd1234.tmp"
    orphan.write_bytes(b"x" * 1000)
    mine = out / "checkpoints" / f".ckpt-00009-000001.pt.{os.getpid()}.abcd1234.tmp"  # a live writer's: kept
    mine.write_bytes(b"y")
    run_trial(cfg(), out)
    assert not orphan.exists() and mine.exists()
    assert_identical(reference, out)


def test_damaged_final_json_resumes_and_is_written_again(reference, tmp_path):
    out = tmp_path / "t"
    run_trial(cfg(), out)
    (out / "final.json").write_text("{}")
    final = run_trial(cfg(), out)
    assert "test_top1" in final and json.loads((out / "final.json").read_text())["metrics"] == final
    assert [r["epoch"] for r in read_metrics(out)] == [0, 1, 2]
