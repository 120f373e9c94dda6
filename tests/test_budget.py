"""Training budgets: stated in one unit, exact across data fractions, planned before anything runs, and refused
(exit 2, file:line:key, nothing written) when they would waste a run."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from convit.config import ConfigError, TrialConfig, load_config
from convit.data import DataError, check_data, plan_budget, steps_per_epoch
from convit.data.budget import TrainingPlan
from orchestrator import cli


def cfg(**kw) -> TrialConfig:
    return TrialConfig.from_dict({"preset": "cifar", **kw})


@pytest.mark.parametrize("n", [240, 1200, 6000, 45_000])
def test_image_budget_gives_the_same_steps_at_every_fraction(n):
    plan = plan_budget(cfg(train_images=19_200, batch_size=64, warmup_fraction=0.05, analysis_every=1), n)
    assert plan.total_steps == 300 and plan.images == 19_200 and plan.warmup_steps == 15
    per_epoch = n // 64
    assert plan.steps_per_epoch == per_epoch
    assert sum(plan.steps_in_epoch(e) for e in range(plan.epochs)) == 300  # the last epoch is partial, not rounded
    assert 0 < plan.last_epoch_steps <= per_epoch


def test_step_budget_and_epoch_budget():
    assert plan_budget(cfg(train_steps=1000, warmup_fraction=0.05), 5000).total_steps == 1000
    plan = plan_budget(cfg(epochs=10), 5000)  # cifar preset: batch 256, no repeated augmentation
    assert (plan.total_steps, plan.epochs, plan.last_epoch_steps) == (10 * 19, 10, 19)
    assert plan.warmup_steps == 5 * 19  # warmup_epochs are epochs of the subset, never scaled by 1/f


def test_budget_keys_replace_each_other_across_levels_not_within_one(tmp_path: Path):
    c = cfg(train_images=10_000, warmup_steps=10)
    assert (c.epochs, c.train_images, c.warmup_epochs) == (None, 10_000, None)  # the preset's choices gave way
    c = TrialConfig.from_dict({"train_steps": 5, "warmup_steps": 1})  # no preset: the defaults give way too
    assert (c.epochs, c.warmup_epochs) == (None, None)
    with pytest.raises(ConfigError, match="set only one of epochs, train_images, train_steps"):
        cfg(epochs=3, train_images=10)
    with pytest.raises(ConfigError, match="set only one of warmup_epochs, warmup_steps, warmup_fraction"):
        cfg(warmup_steps=3, warmup_fraction=0.1)
    f = tmp_path / "c.yaml"
    f.write_text("preset: cifar\ntrain_images: 5000\nwarmup_steps: 3\n")
    assert load_config(f, ["epochs=2"]).epochs == 2 and load_config(f, ["epochs=2"]).train_images is None
    with pytest.raises(ConfigError, match="the command line gives train_steps and epochs"):
        load_config(f, ["train_steps=7", "epochs=3"])  # one level: two budgets are an error, not "last wins"


def test_a_warmup_in_epochs_cannot_ride_on_a_budget_in_images():
    """With train_images constant across fractions, a warm-up in epochs of the subset would differ per fraction."""
    with pytest.raises(ConfigError, match="warm-up is in epochs of the training subset") as exc:
        cfg(train_images=10_000)  # the cifar preset's warmup_epochs: 5
    assert exc.value.issues[0].path == "warmup_epochs"
    assert cfg(train_images=10_000, warmup_epochs=0).warmup_epochs == 0  # no warm-up has no unit


def test_refusals_name_the_key_to_fix():
    # warm-up as long as the budget
    with pytest.raises(DataError, match="learning rate would never leave warm-up") as exc:
        plan_budget(cfg(epochs=2), 5000)  # preset: 5 warm-up epochs
    assert exc.value.key == "warmup_epochs"
    with pytest.raises(DataError) as exc:
        plan_budget(cfg(train_steps=10, warmup_steps=10), 5000)
    assert exc.value.key == "warmup_steps"
    # an epoch with no optimizer step: the 'deit' repeated-augmentation budget shows n/r distinct images per epoch
    c = cfg(batch_size=64, repeated_aug=3, repeated_aug_budget="deit", epochs=10, warmup_epochs=0)
    assert steps_per_epoch(60, 64, 3, "deit") == 0
    with pytest.raises(DataError, match="no optimizer step") as exc:
        plan_budget(c, 60)
    assert exc.value.key == "batch_size"
    # periodic schedules that cannot fire before the end
    with pytest.raises(DataError, match="never fires") as exc:
        plan_budget(cfg(epochs=3, warmup_epochs=0, eval_every=5), 5000)
    assert exc.value.key == "eval_every"
    with pytest.raises(DataError, match="never fires") as exc:
        plan_budget(cfg(epochs=3, warmup_epochs=0, analysis_every=5), 5000)
    assert exc.value.key == "analysis_every"
    assert plan_budget(cfg(epochs=3, warmup_epochs=0, eval_every=0, analysis_every=3), 5000).epochs == 3


def test_a_trial_trains_exactly_its_step_budget(tmp_path: Path, one_torch_thread):
    from convit.engine import run_trial

    c = TrialConfig.from_dict({"preset": "smoke", "train_steps": 7, "warmup_fraction": 0.3, "analysis_every": 0,
                               "eval_every": 0})
    plan = check_data(c)
    assert (plan.steps_per_epoch, plan.epochs, plan.last_epoch_steps, plan.warmup_steps) == (3, 3, 1, 2)
    final = run_trial(c, tmp_path)
    assert final["optimizer_steps"] == 7 and final["images_seen"] == 7 * 16
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["images_seen"] for r in rows] == [48, 96, 112]
    assert "val_top1" not in rows[0] and "test_top1" in rows[-1]  # eval_every: 0 = only after the last step
    assert rows[-1]["lr"] == pytest.approx(c.min_lr, rel=1e-6)  # the cosine ran its full length, no further
    recorded = json.loads((tmp_path / "config.json").read_text())["plan"]
    assert recorded["total_steps"] == 7 and recorded["epochs"] == 3


BUDGET_SWEEP = """\
name: budget
base:
  preset: smoke
  train_images: {images}
  warmup_steps: {warmup}
grid:
  data_fraction: [0.5, 1.0]
"""


def test_dry_run_shows_each_trials_budget(tmp_path: Path, capsys):
    path = tmp_path / "budget.yaml"
    path.write_text(BUDGET_SWEEP.format(images=160, warmup=2))
    assert cli.main(["submit", str(path), "--workdir", str(tmp_path / "runs"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    for column in ("train images", "epochs", "steps", "images seen", "warm-up steps"):
        assert column in out
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines() if "to run" in line]
    # fraction, train images, epochs, steps, images seen, warm-up: the same 10 steps at both fractions
    assert [r[2:8] for r in rows] == [["0.5", "28", "10", "10", "160", "2"], ["1", "56", "3.3", "10", "160", "2"]]
    assert not (tmp_path / "runs").exists()


def test_warmup_longer_than_the_budget_is_refused_at_its_line(tmp_path: Path, capsys):
    path = tmp_path / "budget.yaml"
    path.write_text(BUDGET_SWEEP.format(images=160, warmup=10))
    assert cli.main(["submit", str(path), "--workdir", str(tmp_path / "runs")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"{path}:5: base.warmup_steps:" in err and "never leave warm-up" in err
    assert "Traceback" not in err and not (tmp_path / "runs").exists()


def test_schedule_that_never_fires_is_refused_at_the_axis_item(tmp_path: Path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nbase: {preset: smoke, epochs: 2}\ngrid:\n  eval_every: [1, 4]\n")
    assert cli.main(["submit", str(path), "--workdir", str(tmp_path / "runs"), "--dry-run"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"{path}:4: grid.eval_every:" in err and "eval_every=4" in err and "never fires" in err


def test_an_epoch_without_an_optimizer_step_is_refused_at_the_batch_size(tmp_path: Path, capsys):
    """The 'deit' repeated-augmentation budget shows n/r distinct images per epoch: 56 images, r = 3 and a batch of
    56 pass the batch-vs-subset check but leave 54 samples per epoch, less than one batch."""
    path = tmp_path / "ra.yaml"
    path.write_text("name: ra\nbase:\n  preset: smoke\n  repeated_aug: 3\n  repeated_aug_budget: deit\n"
                    "  batch_size: 56\ngrid:\n  seed: [0]\n")
    assert cli.main(["submit", str(path), "--workdir", str(tmp_path / "runs")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"{path}:6: base.batch_size:" in err and "no optimizer step" in err
    assert "Traceback" not in err and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("extra, message", [
    (["train_steps=4", "epochs=2"], "also given: train_steps"),
    (["grid.epochs=[2,3]", "train_steps=4"], "the sweep axis 'epochs' decides this"),
])
def test_command_line_budgets_are_one_choice_and_never_silently_dropped(tmp_path: Path, capsys, extra, message):
    path = tmp_path / "budget.yaml"
    path.write_text(BUDGET_SWEEP.format(images=160, warmup=2))
    assert cli.main(["submit", str(path), "--workdir", str(tmp_path / "runs"), "--dry-run", *extra]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "<command line>" in err and message in err
