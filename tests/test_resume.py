"""Exact resume: an interrupted and resumed run ends bit-identical to an uninterrupted one (CPU)."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import threading
from pathlib import Path

import pytest
import torch

from convit.config import TrialConfig
from convit.engine import ConfigMismatch, TrialControl, TrialInterrupted, run_trial
from convit.engine.checkpoint import list_checkpoints

# Every RNG consumer is on: RandAugment, random erasing, mixup/cutmix, drop path, EMA, repeated aug.
BASE = {"preset": "smoke", "epochs": 3, "synthetic_train_size": 48, "ema": True, "ema_decay": 0.9,
        "repeated_aug": 2, "model_kwargs": {"drop_path_rate": 0.1}, "analysis_every": 2}
TIMING = {"img_per_s", "epoch_time_s", "peak_mem_mb"}


def cfg(**over) -> TrialConfig:
    return TrialConfig.from_dict({**BASE, **over})


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def outcome(out: Path) -> tuple[dict, list[dict]]:
    """Final weights (model + EMA) and the deterministic part of metrics.jsonl."""
    state = torch.load(list_checkpoints(out / "checkpoints")[-1], weights_only=True)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return ({"model": state["model"], "ema": state["ema"]},
            [{k: v for k, v in r.items() if k not in TIMING} for r in rows])


def assert_identical(a: Path, b: Path) -> None:
    (wa, ma), (wb, mb) = outcome(a), outcome(b)
    assert ma == mb
    for part in ("model", "ema"):
        assert wa[part].keys() == wb[part].keys()
        for k in wa[part]:
            assert torch.equal(wa[part][k], wb[part][k]), f"{part}.{k} differs"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "trial"
    torch.set_num_threads(1)
    run_trial(cfg(), out)
    return out


class Crash(Exception):
    pass


class CrashAfter:
    """A reporter that kills the run (like a node failure) right after an epoch was reported."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def report(self, epoch, metrics, checkpoint_dir):
        if epoch == self.epoch:
            raise Crash()


class StopAfter:
    """A reporter that asks for a stop checkpoint once an epoch ends: it lands mid next epoch (step 1)."""

    def __init__(self, control: TrialControl, epoch: int):
        self.control, self.epoch = control, epoch

    def report(self, epoch, metrics, checkpoint_dir):
        if epoch == self.epoch:
            self.control.request_checkpoint(stop=True)


def test_reference_differs_across_seeds(reference, tmp_path):
    # Guards the other tests: identical outcomes must not come from training that ignores its inputs.
    run_trial(cfg(seed=1, epochs=1, analysis_every=1), tmp_path / "s1")
    w_ref, _ = outcome(reference)
    w_other, _ = outcome(tmp_path / "s1")
    assert not torch.equal(w_ref["model"]["head.weight"], w_other["model"]["head.weight"])


def test_resume_between_epochs_is_exact(reference, tmp_path):
    out = tmp_path / "t"
    with pytest.raises(Crash):
        run_trial(cfg(), out, reporter=CrashAfter(0))
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    run_trial(cfg(), out)
    assert_identical(reference, out)


def test_resume_mid_epoch_is_exact(reference, tmp_path):
    out, control = tmp_path / "t", TrialControl()
    with pytest.raises(TrialInterrupted):
        run_trial(cfg(), out, reporter=StopAfter(control, 0), control=control)
    assert control.saved.is_set()
    names = [p.name for p in list_checkpoints(out / "checkpoints")]
    assert names == ["ckpt-00001-000000.pt", "ckpt-00001-000001.pt"]  # mid-epoch: epoch 1 after 1 step
    run_trial(cfg(), out)
    assert_identical(reference, out)
    assert [r["epoch"] for r in outcome(out)[1]] == [0, 1, 2]


class SignalDuring:
    """Sends SIGUSR1 to this process at a random moment during the next epoch (a real async signal)."""

    def __init__(self, delay: float):
        self.delay, self.timer = delay, None

    def report(self, epoch, metrics, checkpoint_dir):
        if epoch == 0:
            self.timer = threading.Timer(self.delay, os.kill, (os.getpid(), signal.SIGUSR1))
            self.timer.start()


def test_resume_after_signal_at_any_time_is_exact(reference, tmp_path):
    """A stop requested from a signal handler at an arbitrary moment (as SLURM's USR2 would)."""
    delay = random.uniform(0.0, 0.3)
    print(f"signal delay {delay:.3f}s")
    out, control, reporter = tmp_path / "t", TrialControl(), SignalDuring(delay)
    previous = signal.signal(signal.SIGUSR1, lambda *_: control.request_checkpoint(stop=True))
    try:
        with pytest.raises(TrialInterrupted):
            run_trial(cfg(), out, reporter=reporter, control=control)
    finally:
        reporter.timer.join()
        signal.signal(signal.SIGUSR1, previous)
    assert control.saved.is_set()
    run_trial(cfg(), out)
    assert_identical(reference, out)


def test_corrupt_latest_checkpoint_falls_back(reference, tmp_path, caplog):
    out, control = tmp_path / "t", TrialControl()
    with pytest.raises(TrialInterrupted):
        run_trial(cfg(), out, reporter=StopAfter(control, 1), control=control)
    latest = list_checkpoints(out / "checkpoints")[-1]
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])
    with caplog.at_level(logging.WARNING, logger="convit.engine"):
        run_trial(cfg(), out)
    assert any("unreadable" in r.getMessage() and latest.name in r.getMessage() for r in caplog.records)
    assert_identical(reference, out)


def test_metrics_beyond_the_checkpoint_are_not_duplicated(reference, tmp_path):
    # checkpoint_every=2: epoch 0 writes its metrics line but no checkpoint; the crash then loses it.
    out = tmp_path / "t"
    with pytest.raises(Crash):
        run_trial(cfg(checkpoint_every=2), out, reporter=CrashAfter(0))
    assert not list_checkpoints(out / "checkpoints")
    run_trial(cfg(checkpoint_every=2), out)
    assert_identical(reference, out)


def test_resume_with_other_config_is_refused(tmp_path):
    out = tmp_path / "t"
    run_trial(cfg(epochs=1, analysis_every=1), out)
    before = sorted(p.name for p in out.rglob("*"))
    with pytest.raises(ConfigMismatch, match="config hash"):
        run_trial(cfg(epochs=1, analysis_every=1, lr=2e-3), out)
    assert sorted(p.name for p in out.rglob("*")) == before


def test_loader_workers_do_not_change_results(tmp_path):
    run_trial(cfg(epochs=1, analysis_every=1, num_workers=0), tmp_path / "w0")
    run_trial(cfg(epochs=1, analysis_every=1, num_workers=2), tmp_path / "w2")
    assert_identical(tmp_path / "w0", tmp_path / "w2")
