"""run_trial end to end on the smoke preset: outputs, reporter ordering, completion, failure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from convit.config import TrialConfig
from convit.engine import TrialFailed, run_trial
from convit.engine.checkpoint import list_checkpoints

EPOCH_KEYS = {"epoch", "train_loss", "lr", "val_top1", "val_top5", "val_loss", "img_per_s", "peak_mem_mb",
              "epoch_time_s"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Recorder:
    """Checks, at each call, that the epoch is already durable on disk (the contract's ordering)."""

    def __init__(self, out: Path):
        self.out, self.calls = out, []

    def report(self, epoch, metrics, checkpoint_dir):
        lines = (self.out / "metrics.jsonl").read_text().splitlines()
        assert json.loads(lines[-1]) == json.loads(json.dumps(metrics, sort_keys=True))
        assert json.loads(lines[-1])["epoch"] == epoch
        names = [p.name for p in list_checkpoints(checkpoint_dir)]
        assert f"ckpt-{epoch + 1:05d}-000000.pt" in names
        self.calls.append(epoch)


def test_smoke_trial_writes_its_outputs(tmp_path):
    out = tmp_path / "t"
    cfg = TrialConfig.from_dict({"preset": "smoke", "epochs": 3, "eval_every": 2, "data_fraction": 0.5})
    rec = Recorder(out)
    final = run_trial(cfg, out, reporter=rec)
    assert rec.calls == [0, 1, 2]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert EPOCH_KEYS <= set(rows[1]) and EPOCH_KEYS <= set(rows[2])
    assert "val_top1" not in rows[0]  # eval_every=2 (and always at the last epoch)
    assert rows[2]["lr"] < rows[0]["lr"]  # cosine decay after warmup
    config = json.loads((out / "config.json").read_text())
    assert config["config_hash"] == cfg.config_hash() and config["config"] == cfg.to_dict()
    assert config["resolved"]["lr"] == pytest.approx(1e-3)
    # 64 synthetic images: 2 per class held out for validation, half of the remaining 14 per class trained on
    assert config["subset"]["size"] == 28 and config["subset"]["per_class"] == {str(c): 7 for c in range(4)}
    assert json.loads((out / "final.json").read_text())["metrics"] == final
    assert final["val_top1"] == rows[2]["val_top1"] and final["train_subset_size"] == 28
    assert final["test_top1"] == rows[2]["test_top1"] and "test_top1" not in rows[1]  # the test split: once, at the end
    assert len(list_checkpoints(out / "checkpoints")) == 2  # the two latest are kept


def test_attention_metrics_are_logged(tmp_path):
    analysis = pytest.importorskip("convit.analysis")
    if not hasattr(analysis, "attention_metrics"):
        pytest.skip("convit.analysis.attention_metrics not available yet")
    final = run_trial(TrialConfig.from_dict({"preset": "smoke", "epochs": 1}), tmp_path / "t")
    assert any(k.startswith("gating/l0") for k in final) and any(k.startswith("nonlocality/") for k in final)


def test_finished_trial_is_not_rerun(tmp_path):
    cfg = TrialConfig.from_dict({"preset": "smoke", "epochs": 1})
    first = run_trial(cfg, tmp_path / "t")
    stamp = [(p.name, p.stat().st_mtime_ns) for p in list_checkpoints(tmp_path / "t" / "checkpoints")]
    assert run_trial(cfg, tmp_path / "t") == first
    assert [(p.name, p.stat().st_mtime_ns) for p in list_checkpoints(tmp_path / "t" / "checkpoints")] == stamp


def test_non_finite_loss_fails_the_trial(tmp_path):
    cfg = TrialConfig.from_dict({"preset": "smoke", "epochs": 2, "lr": 1e30, "warmup_epochs": 0})
    with pytest.raises(TrialFailed, match="non-finite training loss") as exc:
        run_trial(cfg, tmp_path / "t")
    assert "epoch 0" in exc.value.reason
    assert not (tmp_path / "t" / "final.json").exists()
