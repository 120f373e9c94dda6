"""The Ray backend's parts that need no Ray: the `ray:` section's validation (errors located at their line, exit 2
at the CLI with nothing written), installing a Tune checkpoint into a trial folder, and PBT's checkpoint rebase,
checked against the real engine: after the rebase, training continues with exactly the lr schedule of the new
config."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from convit.config import TrialConfig
from convit.engine import run_trial
from convit.engine.checkpoint import list_checkpoints, load_latest
from orchestrator.backends.ray.pbt import rebase_checkpoint, with_values
from orchestrator.backends.ray.trainable import META_FILE, install_checkpoint
from orchestrator.errors import SpecError
from orchestrator.spec import parse_spec
from convit.records import read_json, read_metrics, write_json

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------------------ validation
def spec_errors(ray_yaml: str) -> list[str]:
    text = f"name: v\nbase: {{preset: smoke}}\ngrid: {{lr: [0.001, 0.002]}}\nray:\n{ray_yaml}"
    with pytest.raises(SpecError) as err:
        parse_spec(text, "v.yaml")
    return [f"{i.line}:{i.key}: {i.message}" for i in err.value.issues]


def test_scheduler_metric_must_be_an_engine_metric():
    (issue,) = spec_errors("  scheduler:\n    type: asha\n    metric: val/top1\n")
    assert issue.startswith("7:ray.scheduler.metric") and "did you mean 'val_top1'" in issue


def test_schedulers_never_rank_by_the_test_split():
    (issue,) = spec_errors("  scheduler:\n    type: asha\n    metric: test_top1\n")
    assert issue.startswith("7:ray.scheduler.metric") and "would select on the test set" in issue


def test_a_scheduler_needs_validation_during_training(tmp_path: Path):
    from orchestrator.backends.ray.backend import _check_trials
    from orchestrator.errors import OrchestratorError
    from orchestrator.spec import load_sweep

    path = tmp_path / "asha.yaml"
    path.write_text("name: a\nbase: {preset: smoke, eval_every: 0}\ngrid: {lr: [0.001, 0.002]}\nray:\n"
                    "  scheduler: {type: asha, metric: val_top1, mode: max}\n")
    spec, trials = load_sweep(path)
    with pytest.raises(OrchestratorError, match="evaluate only at the end"):
        _check_trials(spec.ray, trials)


def test_pbt_mutations_are_checked():
    (issue,) = spec_errors("  scheduler:\n    type: pbt\n    hyperparam_mutations:\n      model: [a, b]\n"
                           "      lr: {distribution: loguniform, low: 0, high: 1}\n")
    assert "'model' cannot change in the middle of a trial" in issue
    assert "'loguniform' needs 'low' > 0" in issue
    assert "pbt needs hyperparam_mutations" in spec_errors("  scheduler: {type: pbt}\n")[0]
    assert "apply to type: pbt only" in spec_errors(
        "  scheduler: {type: asha, hyperparam_mutations: {lr: [0.1]}}\n")[0]


def test_local_ray_settings_conflict_with_an_address():
    (issue,) = spec_errors("  address: auto\n  num_cpus: 4\n")
    assert "num_cpus size the local Ray" in issue
    (issue,) = spec_errors("  num_cpus: 2\n  cpus_per_trial: 4\n")
    assert "no trial could ever start" in issue


def test_cli_rejects_a_bad_ray_section_and_writes_nothing(tmp_path: Path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: bad\nbase: {preset: smoke}\nray:\n  scheduler: {type: asha, metric: accuracy}\n")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "CONVIT_WORKDIR")}
    out = subprocess.run([sys.executable, "-m", "orchestrator.cli", "submit", str(spec), "--backend", "ray",
                          "--workdir", str(tmp_path / "runs")], cwd=REPO, env={**env, "PYTHONPATH": str(REPO)},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "bad.yaml:4" in out.stdout + out.stderr and "not a per-epoch metric" in out.stdout + out.stderr
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------------------- checkpoints and PBT
def smoke(**overrides) -> TrialConfig:
    return TrialConfig.from_dict({"preset": "smoke", "epochs": 3, "synthetic_train_size": 32,
                                  "synthetic_val_size": 16, "analysis_every": 0, "min_lr": 1e-8, **overrides})


class _KeepFirst:
    """Copies the checkpoint written after epoch 0 (the engine keeps only the two latest)."""

    def __init__(self, target: Path):
        self.target = target

    def report(self, epoch, metrics, checkpoint_dir) -> None:
        if epoch == 0:
            latest = list_checkpoints(checkpoint_dir)[-1]
            self.target.mkdir()
            (self.target / latest.name).write_bytes(latest.read_bytes())


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[TrialConfig, Path]:
    """A 3-epoch trial run to the end; its epoch-1 checkpoint is kept in <out>/first/."""
    config, out = smoke(), tmp_path_factory.mktemp("a")
    torch.set_num_threads(1)
    run_trial(config, out, reporter=_KeepFirst(out / "first"))
    return config, out


def tune_checkpoint(folder: Path, ckpt: Path, config: TrialConfig, home: str) -> Path:
    """What the trainable reports to Tune: one engine checkpoint plus meta.json."""
    folder.mkdir(parents=True)
    (folder / ckpt.name).write_bytes(ckpt.read_bytes())
    write_json(folder / META_FILE, {"home": home, "tune_trial_id": f"t-{home}", "file": ckpt.name,
                                    "config_hash": config.config_hash(), "config": config.model_dump(mode="json")})
    return folder


def test_a_tune_checkpoint_is_installed_only_when_newer(finished, tmp_path: Path):
    config, out = finished
    epoch1 = list_checkpoints(out / "checkpoints")[0]
    source = tune_checkpoint(tmp_path / "tune", epoch1, config, home="a")

    elsewhere = tmp_path / "other-node"  # a retried trial on a node without the folder
    assert install_checkpoint(source, "s1", elsewhere, "a", config) is None
    assert [p.name for p in list_checkpoints(elsewhere / "checkpoints")] == [epoch1.name]
    final = run_trial(config, elsewhere)
    assert final["val_top1"] == read_json(out / "final.json")["metrics"]["val_top1"]
    assert read_metrics(elsewhere)[0] == read_metrics(out)[0]  # epoch 0 came from the checkpoint

    before = [p.name for p in list_checkpoints(out / "checkpoints")]
    assert install_checkpoint(source, "s1", out, "a", config) is None  # the folder is newer: left alone
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == before


def test_pbt_rebase_continues_with_the_new_configs_lr_schedule(finished, tmp_path: Path):
    old, out = finished
    new = with_values(old, {"lr": 3e-3, "weight_decay": 0.1})
    fresh = tmp_path / "fresh"
    run_trial(new, fresh)  # the new config from scratch: the lr it has in epoch 1

    source = tune_checkpoint(tmp_path / "tune", list_checkpoints(out / "first")[0], old, home="b")
    trial_dir = tmp_path / "a"
    trial_dir.mkdir()
    (trial_dir / "config.json").write_text('{"config_hash": "previous", "config": {"lr": 0.0005}}')
    event = install_checkpoint(source, "s-b-1", trial_dir, "a", new)
    assert event is not None and event["from_trial"] == "b" and event["epoch"] == 1
    assert read_json(trial_dir / "pbt" / "0" / "config.json")["config_hash"] == "previous"  # archived segment
    assert install_checkpoint(source, "s-b-1", trial_dir, "a", new) is None  # a retry does not install it again

    run_trial(new, trial_dir)
    rows, expected = read_metrics(trial_dir), read_metrics(fresh)
    assert rows[0] == read_metrics(out)[0]  # the history it continued from (trial b's epoch 0)
    assert rows[1]["lr"] == pytest.approx(expected[1]["lr"], rel=1e-12)
    assert read_metrics(out)[1]["lr"] != pytest.approx(expected[1]["lr"])  # the old schedule would differ
    state = load_latest(trial_dir / "checkpoints")
    assert state["config_hash"] == new.config_hash()
    assert sorted(g["weight_decay"] for g in state["optimizer"]["param_groups"]) == [0.0, 0.1]


def test_rebase_refuses_keys_that_change_the_model(finished):
    old, out = finished
    state = load_latest(out / "checkpoints")
    with pytest.raises(ValueError, match="model_kwargs.patch_size"):
        rebase_checkpoint(state, old, with_values(old, {"model_kwargs.patch_size": 4}))


def test_pbt_ranges_are_checked_against_every_trial(tmp_path: Path):
    from orchestrator.backends.ray.backend import _check_trials
    from orchestrator.errors import OrchestratorError
    from orchestrator.spec import load_sweep

    path = tmp_path / "pbt.yaml"
    path.write_text("name: pb\nbase: {preset: smoke}\ngrid: {lr: [0.001, 0.002]}\nray:\n  scheduler:\n"
                    "    type: pbt\n    hyperparam_mutations:\n"
                    "      model_kwargs.drop_rate: {distribution: uniform, low: 0.0, high: 0.2}\n"
                    "      lr: {distribution: loguniform, low: 1.0e-7, high: 0.01}\n")
    spec, trials = load_sweep(path)
    with pytest.raises(OrchestratorError) as err:
        _check_trials(spec.ray, trials)
    assert "model_kwargs.drop_rate has no numeric value" in str(err.value)
    assert "lr=1e-07 is invalid for trial lr=0.001 (min_lr: larger than the scaled lr" in str(err.value)
    path.write_text(path.read_text().replace("      model_kwargs.drop_rate: {distribution: uniform, low: 0.0, "
                                             "high: 0.2}\n", "").replace("1.0e-7", "1.0e-4"))
    spec, trials = load_sweep(path)
    _check_trials(spec.ray, trials)  # a range every trial accepts


def test_a_bad_pbt_range_is_refused_before_the_sweep_is_recorded(tmp_path: Path, capsys):
    """Backend.validate runs before the parent run exists: exit 2, no working folder, no MLflow store."""
    from orchestrator import cli

    path = tmp_path / "pbt.yaml"
    path.write_text("name: pb\nbase: {preset: smoke}\ngrid: {lr: [0.001, 0.002]}\nray:\n  scheduler:\n"
                    "    type: pbt\n    hyperparam_mutations:\n"
                    "      lr: {distribution: loguniform, low: 1.0e-7, high: 0.01}\n")
    work = tmp_path / "runs"
    for extra in ([], ["--dry-run"]):
        code = cli.main(["submit", str(path), "--backend", "ray", "--workdir", str(work), *extra])
        assert code == 2
        assert "lr=1e-07 is invalid" in capsys.readouterr().err
        assert not work.exists()


def test_dry_run_for_a_remote_cluster_shows_the_trials_without_budgets(tmp_path, capsys):
    """A remote Ray cluster has its own filesystem: no data check here, so no budget columns (this crashed)."""
    from orchestrator import cli

    spec = tmp_path / "remote.yaml"
    spec.write_text("name: remote\nbase: {preset: smoke, epochs: 1}\nseeds: [0, 1]\n")
    code = cli.main(["submit", str(spec), "--backend", "ray", "--dry-run", "ray.address=ray://127.0.0.1:1",
                     "--workdir", str(tmp_path / "runs")])
    out = capsys.readouterr().out
    assert code == 0 and "remote: 2 trial(s)" in out and "dry run: nothing was written" in out
    assert not (tmp_path / "runs").exists()


def test_a_trial_larger_than_the_local_ray_is_refused_by_the_dry_run(tmp_path: Path):
    """The private Ray a sweep starts has this machine's CPUs (or ray.num_cpus): a trial asking for more could
    never start, so --dry-run refuses it, exit 2, nothing written (it used to pass, then fail after recording)."""
    spec = tmp_path / "big.yaml"
    spec.write_text("name: big\nbase: {preset: smoke}\nseeds: [0]\nray: {cpus_per_trial: 64}\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for extra in ([], ["--dry-run"]):
        out = subprocess.run([sys.executable, "-m", "orchestrator.cli", "submit", str(spec), "--backend", "ray",
                              "--workdir", str(tmp_path / "runs"), *extra], capture_output=True, text=True,
                             timeout=120, env=env)
        assert out.returncode == 2, out.stdout + out.stderr
        assert "asks for 64 CPU(s)" in out.stderr and "Traceback" not in out.stderr
        assert not (tmp_path / "runs" / "sweeps" / "big").exists()


def test_the_cancel_watcher_ends_with_its_trial(tmp_path: Path):
    """A reused Ray worker runs many trials: each trial's cancel watcher must stop when the trial ends."""
    import threading

    from convit.engine import TrialControl
    from orchestrator.backends.ray.trainable import _watch_cancel

    before = {t.ident for t in threading.enumerate()}
    ended = _watch_cancel(tmp_path, TrialControl(), started=0.0)
    watchers = [t for t in threading.enumerate() if t.ident not in before and t.name == "convit-cancel-watch"]
    assert len(watchers) == 1 and watchers[0].is_alive()
    ended.set()
    watchers[0].join(timeout=5)
    assert not watchers[0].is_alive()


def test_pbt_trials_get_fresh_workers_and_the_other_schedulers_reuse_them():
    """Reused workers save the imports between trials; under PBT they once let Tune restart a finished, exploited
    trial from an earlier checkpoint with its old config (see reuse_actors)."""
    from orchestrator.backends.ray.backend import reuse_actors

    assert reuse_actors("fifo") and reuse_actors("asha") and not reuse_actors("pbt")
