"""MLflow tracking against a real sqlite store (the real `mlflow server` is exercised in test_local/test_cli)."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
from pathlib import Path

import pytest

from orchestrator.tracking import MlflowReporter, Tracker, default_tracking_uri, flatten


def _open(tracker: Tracker, trial_id: str = "t1", parent: str | None = None) -> str:
    return tracker.open_trial_run(experiment="exp", sweep_id="sw", parent_run_id=parent, trial_id=trial_id,
                                  trial_name=f"name-{trial_id}", params={"model": "convit_tiny",
                                                                         "model_kwargs": {"img_size": 32}},
                                  tags={"backend": "local"})


def _append(path: Path, epoch: int, **metrics: float) -> None:
    with path.open("a") as fh:
        fh.write(json.dumps({"epoch": epoch, **metrics}) + "\n")


def _steps(tracker: Tracker, run_id: str, key: str) -> list[int]:
    return sorted(step for step, _ in tracker.metric_history(run_id, key))


@pytest.fixture()
def tracker(tmp_path: Path) -> Tracker:
    return Tracker(default_tracking_uri(tmp_path))


def test_parent_and_child_runs_are_found_again(tracker: Tracker):
    parent = tracker.start_sweep(experiment="exp", sweep_id="sw", spec_text="name: sw\n", axes=["model", "seed"],
                                 backend="local", git_commit="abc", n_trials=2)
    again = tracker.start_sweep(experiment="exp", sweep_id="sw", spec_text="name: sw\n", axes=["model", "seed"],
                                backend="local", git_commit="abc", n_trials=2)
    assert parent == again
    child = _open(tracker, "t1", parent)
    assert _open(tracker, "t1", parent) == child  # found by its trial id tag
    assert _open(tracker, "t2", parent) != child
    run = tracker.client.get_run(child)
    assert run.data.tags["mlflow.parentRunId"] == parent and run.data.tags["trial_id"] == "t1"
    assert run.data.params == {"model": "convit_tiny", "model_kwargs.img_size": "32"}
    assert [a.path for a in tracker.client.list_artifacts(parent)] == ["sweep.yaml"]
    assert set(tracker.trial_runs("exp", "sw")) == {"t1", "t2"}


def test_each_epoch_logged_exactly_once_across_restarts(tracker: Tracker, tmp_path: Path):
    run_id = _open(tracker)
    metrics = tmp_path / "trial" / "metrics.jsonl"
    metrics.parent.mkdir()
    _append(metrics, 0, **{"train/loss": 2.0, "val/top1": 10.0})
    _append(metrics, 1, **{"train/loss": 1.5, "val/top1": 20.0})
    first = MlflowReporter(tracker, run_id, metrics)
    assert first.sync() == 2
    first.report(1, {"train/loss": 1.5, "val/top1": 20.0}, None)  # re-reported after a resume: skipped
    # the process dies after writing epoch 2 to metrics.jsonl but before logging it
    _append(metrics, 2, **{"train/loss": 1.2, "val/top1": 25.0})
    second = MlflowReporter(tracker, run_id, metrics)
    assert second.sync() == 1
    second.report(2, {"train/loss": 1.2, "val/top1": 25.0}, None)
    second.report(3, {"train/loss": 1.0, "val/top1": 30.0}, None)
    for key in ("train/loss", "val/top1", "epoch"):
        assert _steps(tracker, run_id, key) == [0, 1, 2, 3]
    assert [v for _, v in tracker.metric_history(run_id, "val/top1")] == [10.0, 20.0, 25.0, 30.0]


def test_flatten_lists_and_nesting():
    flat = flatten({"a": {"b": 1, "c": [1, 2]}, "d": None, "e": {}})
    assert flat == {"a.b": "1", "a.c": "[1, 2]", "d": "None", "e": "{}"}


def _writer(uri: str, index: int, epochs: int, keys: int) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    tracker = Tracker(uri)
    run_id = _open(tracker, f"w{index}")
    for epoch in range(epochs):
        tracker.log_epoch(run_id, epoch, {f"m{k}": float(epoch * k) for k in range(keys)})


def test_parallel_writers_on_one_sqlite_lose_nothing(tracker: Tracker):
    _open(tracker, "init")  # the parent creates the store first, as the CLI does
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(tracker.uri, i, 25, 20)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    runs = tracker.trial_runs("exp", "sw")
    for i in range(4):
        run_id = runs[f"w{i}"].info.run_id
        assert _steps(tracker, run_id, "epoch") == list(range(25))
        assert _steps(tracker, run_id, "m19") == list(range(25))


def _first_use(uri: str, barrier: object, results: object) -> None:
    """One process's first steps on a store: open it, its experiment, the sweep's parent run."""
    barrier.wait()  # type: ignore[attr-defined]
    try:
        tracker = Tracker(uri)
        run_id = tracker.start_sweep(experiment="exp", sweep_id="sw", spec_text="name: sw\n", axes=[],
                                     backend="local", git_commit="g", n_trials=1)
        results.put(("ok", run_id))  # type: ignore[attr-defined]
    except Exception as exc:  # noqa: BLE001 - reported to the test
        results.put(("error", f"{type(exc).__name__}: {exc}"[:300]))  # type: ignore[attr-defined]


def test_six_processes_opening_a_fresh_store_at_once_all_succeed(tmp_path: Path):
    """A fresh sqlite store is created (tables, migrations) by whichever process comes first; six at the same
    instant used to leave five with 'duplicate column name' or alembic errors."""
    uri = default_tracking_uri(tmp_path)
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(6), ctx.Queue()
    procs = [ctx.Process(target=_first_use, args=(uri, barrier, results)) for _ in range(6)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    errors = [detail for kind, detail in outcomes if kind != "ok"]
    assert not errors, errors
    tracker = Tracker(uri)
    assert len(tracker.client.search_experiments()) == 2  # Default + exp, once
    assert tracker.find_sweep_run("exp", "sw") is not None


def test_the_experiment_reads_well_and_a_repeated_epoch_table_is_not_appended(tracker: Tracker, tmp_path: Path):
    """The sweep file's description becomes the experiment's (set once: a user's edit in the UI is kept), the
    experiment opens in the model-training view, and a resumed trial that logs an epoch again replaces its
    per-head table rather than appending the rows a second time (MLflow's own log_table appends)."""
    tracker.start_sweep(experiment="exp", sweep_id="sw", spec_text="name: sw\n", axes=["model"], backend="local",
                        git_commit="abc", n_trials=1, description="ConViT vs DeiT at 2 %")
    experiment = tracker.client.get_experiment_by_name("exp")
    assert experiment.tags["mlflow.note.content"] == "ConViT vs DeiT at 2 %"
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    tracker.client.set_experiment_tag(experiment.experiment_id, "mlflow.note.content", "edited in the UI")
    tracker.start_sweep(experiment="exp", sweep_id="sw2", spec_text="name: sw2\n", axes=["model"], backend="local",
                        git_commit="abc", n_trials=1, description="another sweep")
    assert tracker.client.get_experiment_by_name("exp").tags["mlflow.note.content"] == "edited in the UI"

    run_id = _open(tracker)
    row = {"train_loss": 1.0, "gating/l0": 0.7, "gating/l0/h0": 0.6, "gating/l0/h1": 0.8, "nonlocality/l10/h0": 2.0}
    tracker.log_epoch(run_id, 0, row)
    tracker.log_epoch(run_id, 0, row)  # a resume that logs the epoch again
    table = json.loads(Path(tracker.client.download_artifacts(run_id, "attention/epoch_0000.json",
                                                              str(tmp_path))).read_text())
    assert table["columns"] == ["layer", "head", "gating", "nonlocality"] and len(table["data"]) == 3
    assert set(tracker.client.get_run(run_id).data.metrics) == {"train_loss", "gating/l00", "epoch"}
