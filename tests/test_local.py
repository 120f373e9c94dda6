"""The local backend end to end, through the real `convit-sweep` command: trials as processes, a real MLflow
store (a sqlite file, and a real `mlflow server`), idempotent resubmission, resume after SIGTERM and SIGKILL with
every metric step logged exactly once."""
from __future__ import annotations

import json
import re
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.server import free_port, start_server
from orchestrator.tracking import Tracker, default_tracking_uri
from convit.records import read_json, read_metrics

REPO = Path(__file__).resolve().parents[1]

SMOKE = """
name: {name}
base:
  preset: smoke
  epochs: {epochs}
  synthetic_train_size: {train}
  synthetic_val_size: 16
  num_workers: {workers}
grid:
  model: {models}
seeds: [0]
local: {{max_parallel: 2, cpus_per_trial: 1, stop_grace_s: 60}}
"""


def sweep_file(tmp_path: Path, name: str, epochs: int = 2, train: int = 32,
               models: str = "[convit_tiny, deit_tiny]", workers: int = 0) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(SMOKE.format(name=name, epochs=epochs, train=train, models=models, workers=workers))
    return path


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "CONVIT_WORKDIR")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return env


def cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=REPO, env=cli_env(),
                          capture_output=True, text=True, timeout=timeout)


def cli_background(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", *args], cwd=REPO, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def steps(tracker: Tracker, run_id: str, key: str) -> list[int]:
    return sorted(step for step, _ in tracker.metric_history(run_id, key))


def wait_for(predicate, timeout: float = 120, what: str = "condition") -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_sweep_lands_in_mlflow_and_resubmission_runs_nothing(tmp_path: Path):
    work = tmp_path / "runs"
    spec = sweep_file(tmp_path, "e2e")
    done = cli("submit", str(spec), "--workdir", str(work))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"start it with `convit-sweep server --workdir {work}`" in done.stdout  # no server: how to start one
    assert "viewStateShareKey=sweep-e2e" in done.stdout.replace("\n", "")

    tracker = Tracker(default_tracking_uri(work))
    parent = tracker.find_sweep_run("e2e", "e2e")
    assert parent is not None and parent.info.status == "FINISHED"
    assert json.loads(parent.data.tags["axes"]) == ["model", "seed"]
    assert "sweep.yaml" in [a.path for a in tracker.client.list_artifacts(parent.info.run_id)]
    runs = tracker.trial_runs("e2e", "e2e")
    trials = {t["id"]: t for t in json.loads((work / "sweeps/e2e/trials.json").read_text())}
    assert set(runs) == set(trials) and len(runs) == 2
    for trial_id, run in runs.items():
        tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
        assert run.info.status == "FINISHED"
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        assert tags["sweep_id"] == "e2e" and tags["backend"] == "local" and tags["host"]
        assert tags["start_hosts"] == tags["host"] and tags["rank_hosts"] == tags["host"]  # one start, one rank
        assert tags["git_commit"] and tags["mlflow.runName"] == f"{trials[trial_id]['axes']['model']} · s0"
        assert params["model"] == trials[trial_id]["axes"]["model"]
        assert params["model_kwargs.img_size"] == "32" and params["epochs"] == "2"
        for key in ("train_loss", "lr", "img_per_s", "val_top1", "val_top5", "epoch"):
            assert steps(tracker, run.info.run_id, key) == [0, 1], key
        assert "val_top1" in metrics and 0.0 <= metrics["tracking_overhead_frac"] < 0.2
        assert not [k for k in metrics if k.startswith("final/") or re.search(r"/h\d+$", k)]  # no duplicates
        assert metrics["optimizer_steps"] > 0 and "init/nonlocality/l00" in metrics
        if params["model"] == "convit_tiny":
            assert steps(tracker, run.info.run_id, "gating/l00") == [0, 1]
            assert steps(tracker, run.info.run_id, "nonlocality/l09") == [0, 1]
            heads = json.loads(Path(tracker.client.download_artifacts(run.info.run_id, "attention/epoch_0001.json",
                                                                      str(tmp_path / trial_id))).read_text())
            assert heads["columns"][:3] == ["layer", "head", "gating"] and len(heads["data"]) == 12 * 4  # layers × heads
            assert {"path": "attention/epoch_0001.json", "type": "table"} in json.loads(tags["mlflow.loggedArtifacts"])
        names = {a.path for a in tracker.client.list_artifacts(run.info.run_id)}
        assert {"config.json", "final.json", "trial.json"} <= names
        (data,) = run.inputs.dataset_inputs
        config = json.loads((work / "sweeps/e2e/trials" / trial_id / "config.json").read_text())
        assert data.dataset.name == "synthetic 100%" and data.tags[0].value == "train"
        assert data.dataset.digest == config["subset"]["indices_sha256"][:36]
    experiment = tracker.client.get_experiment_by_name("e2e")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    view = json.loads(experiment.tags["mlflow.sharedViewState.sweep-e2e"])
    assert view["searchFilter"] == "tags.sweep_id = 'e2e' and tags.kind = 'trial'"
    assert {"params.`model`", "params.`seed`", "metrics.`test_top1`"} <= set(view["selectedColumns"])
    # the sweep's end wrote the answer into the parent run: the summary table, per-group metrics, a table artifact
    parent = tracker.client.get_run(parent.info.run_id)
    note = parent.data.tags["mlflow.note.content"]
    assert "| ConViT-Ti |" in note and "| DeiT-Ti |" in note and "| n |" in note.replace("| n |", "| n |")
    assert "mean/test_top1/model_convit_tiny" in parent.data.metrics
    assert "gap/test_top1/convit_tiny_vs_deit_tiny/all" in parent.data.metrics
    assert "compare/summary_table.json" in [a.path for a in tracker.client.list_artifacts(parent.info.run_id,
                                                                                           "compare")]

    status_files = {p: p.stat().st_mtime_ns for p in (work / "sweeps/e2e/trials").glob("*/status.json")}
    again = cli("submit", str(spec), "--workdir", str(work))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "2 trial(s) already finished" in again.stdout and "nothing to run" in again.stdout
    assert set(tracker.trial_runs("e2e", "e2e")) == set(runs)
    assert {p: p.stat().st_mtime_ns for p in status_files} == status_files  # no trial process ran
    for run in runs.values():
        assert steps(tracker, run.info.run_id, "epoch") == [0, 1]

    status = cli("status", "e2e", "--workdir", str(work), "--json")
    assert status.returncode == 0
    assert sorted(s["state"] for s in json.loads(status.stdout)) == ["done", "done"]

    out = tmp_path / "plots"
    compared = cli("compare", "e2e", "--workdir", str(work), "--out", str(out))
    assert compared.returncode == 0, compared.stdout + compared.stderr
    assert "ConViT-Ti" in compared.stdout and "DeiT-Ti" in compared.stdout and "± 0.00" not in compared.stdout  # n = 1
    assert str(out) in compared.stdout.replace("\n", "")
    pngs = {p.name: p.stat().st_size for p in out.glob("*.png")}
    assert {"gating_per_layer.png", "nonlocality_per_layer.png"} <= set(pngs)
    assert all(size > 10_000 for size in pngs.values())
    summary = (out / "summary.md").read_text()
    assert summary.count("| ConViT-Ti |") == 1 and summary.count("| DeiT-Ti |") == 1
    logged = {a.path for a in tracker.client.list_artifacts(parent.info.run_id, "compare")}
    assert "compare/gating_per_layer.png" in logged


def _trial_dir(work: Path, name: str) -> Path:
    dirs = list((work / "sweeps" / name / "trials").glob("*"))
    assert len(dirs) == 1
    return dirs[0]


def test_cancelled_and_killed_trial_resumes_with_each_step_once(tmp_path: Path):
    work = tmp_path / "runs"
    # DataLoader workers on: the stop signal reaches the trial's whole process group, workers included
    spec = sweep_file(tmp_path, "resume", epochs=10, train=96, models="[convit_tiny]", workers=2)
    submit = cli_background("submit", str(spec), "--workdir", str(work))
    try:
        wait_for(lambda: (work / "sweeps/resume/trials").is_dir() and len(read_metrics(
            _trial_dir(work, "resume"))) >= 2, what="two epochs")
        cancelled = cli("cancel", "resume", "--workdir", str(work))
        assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
        out, _ = submit.communicate(timeout=120)
    finally:
        if submit.poll() is None:
            submit.kill()
    assert submit.returncode == 1, out
    trial_dir = _trial_dir(work, "resume")
    stopped = read_json(trial_dir / "status.json")
    assert stopped["state"] == "interrupted" and "after a checkpoint" in stopped["error"], stopped
    assert not (trial_dir / "final.json").exists()
    tracker = Tracker(default_tracking_uri(work))
    run_id = read_json(trial_dir / "mlflow_run.json")["run_id"]
    assert tracker.client.get_run(run_id).info.status == "KILLED"
    logged_before = steps(tracker, run_id, "epoch")
    assert logged_before == list(range(len(logged_before))) and len(logged_before) >= 2

    # resubmit, then SIGKILL the trial process itself (no checkpoint, no goodbye) after one more epoch
    resumed = cli_background("submit", str(spec), "--workdir", str(work))
    try:
        wait_for(lambda: len(read_metrics(trial_dir)) > len(logged_before), what="one more epoch")
        os.kill(int(read_json(trial_dir / "status.json")["pid"]), signal.SIGKILL)
        resumed.communicate(timeout=120)
    finally:
        if resumed.poll() is None:
            resumed.kill()
    assert resumed.returncode == 1
    final = cli("submit", str(spec), "--workdir", str(work))
    assert final.returncode == 0, final.stdout + final.stderr
    assert (trial_dir / "final.json").exists()
    run = tracker.client.get_run(run_id)
    assert run.info.status == "FINISHED" and len(tracker.trial_runs("resume", "resume")) == 1
    assert run.data.tags["start_hosts"] == ",".join([run.data.tags["host"]] * 3)  # three starts of the trial
    for key in ("epoch", "train_loss", "lr", "gating/l00"):
        history = tracker.metric_history(run_id, key)
        assert [s for s, _ in history] == list(range(10)), key  # every step once: no duplicate, none missing
    jsonl = {row["epoch"]: row["train_loss"] for row in read_metrics(trial_dir)}
    assert dict(tracker.metric_history(run_id, "train_loss")) == pytest.approx(jsonl)


def test_served_sweep_records_a_failed_trial_and_reruns_only_it(tmp_path: Path):
    server = start_server(tmp_path / "server", port=free_port())
    try:
        work = tmp_path / "runs"
        spec = tmp_path / "served.yaml"
        # 48 images: 40 left after the validation split, 2 steps, so the second step sees the diverged weights
        spec.write_text(SMOKE.format(name="served", epochs=1, train=48, models="[deit_tiny]", workers=0)
                        .replace("grid:\n", "grid:\n  lr: [1.0e-3, 1.0e+30]\n")  # the second diverges: NaN loss
                        .replace("base:\n", "base:\n  warmup_epochs: 0\n"))
        result = cli("submit", str(spec), "--workdir", str(work), "--tracking-uri", server.uri)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "1 trial(s) failed" in result.stderr
        parent_id = Tracker(server.uri).find_sweep_run("served", "served").info.run_id
        assert f"{server.uri}/#/experiments/" in result.stdout and parent_id in result.stdout  # where to look
        assert not (work / "mlflow.db").exists()  # everything went to the server
        status = json.loads(cli("status", "served", "--workdir", str(work), "--json").stdout)
        by_state = {s["state"]: s for s in status}
        assert set(by_state) == {"done", "failed"} and "non-finite" in by_state["failed"]["detail"]
        tracker = Tracker(server.uri)
        runs = tracker.trial_runs("served", "served")
        good, bad = runs[by_state["done"]["trial_id"]], runs[by_state["failed"]["trial_id"]]
        assert good.info.status == "FINISHED" and steps(tracker, good.info.run_id, "val_top1") == [0]
        assert "config.json" in {a.path for a in tracker.client.list_artifacts(good.info.run_id)}
        assert bad.info.status == "FAILED" and "non-finite" in bad.data.tags["failure_reason"]
        assert tracker.find_sweep_run("served", "served").info.status == "FAILED"

        again = cli("submit", str(spec), "--workdir", str(work))  # the recorded tracking URI is reused
        assert again.returncode == 1 and "1 trial(s) already finished" in again.stdout, again.stdout + again.stderr
        assert len(tracker.trial_runs("served", "served")) == 2  # the failed trial reran in its own run
    finally:
        server.stop()
