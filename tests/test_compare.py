"""compare: grouping by the sweep's axes with mean ± std over seeds, and the plots, read back from a real
MLflow store filled the way trial processes fill it."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
from rich.console import Console

from orchestrator.compare import compare
from orchestrator.errors import OrchestratorError
from orchestrator.tracking import Tracker, default_tracking_uri

TOP1 = {("convit_tiny", 0.1): [40.0, 44.0], ("convit_tiny", 1.0): [70.0, 72.0],
        ("deit_tiny", 0.1): [30.0, 36.0], ("deit_tiny", 1.0): [68.0, 69.0]}


def fill(tracker: Tracker) -> str:
    parent = tracker.start_sweep(experiment="cmp", sweep_id="cmp", spec_text="name: cmp\n",
                                 axes=["model", "data_fraction", "seed"], backend="local", git_commit="x",
                                 n_trials=8)
    for (model, fraction), values in TOP1.items():
        for seed, top1 in enumerate(values):
            trial_id = f"{model}-{fraction}-{seed}"
            axes = {"model": model, "data_fraction": fraction, "seed": seed}
            run_id = tracker.open_trial_run(experiment="cmp", sweep_id="cmp", parent_run_id=parent,
                                            trial_id=trial_id, trial_name=trial_id, params=axes,
                                            tags={f"axis.{k}": str(v) for k, v in axes.items()})
            for epoch in range(3):
                row = {"train_loss": 2.0 - epoch / 2, "val_top1": top1 * (epoch + 1) / 3}
                if model == "convit_tiny":
                    row |= {f"gating/l{l}": 0.73 - 0.05 * epoch * l for l in range(3)}
                row |= {f"nonlocality/l{l}": 1.0 + 0.1 * l for l in range(4)}
                tracker.log_epoch(run_id, epoch, row)
            tracker.log_final(run_id, {"val_top1": top1, "train_loss": 1.0}, step=2)
            tracker.end_run(run_id, "FINISHED")
    return parent


def test_table_groups_seeds_and_plots(tmp_path: Path):
    tracker = Tracker(default_tracking_uri(tmp_path))
    parent = fill(tracker)
    console = Console(record=True, width=200)
    result = compare("cmp", tracking_uri=tracker.uri, experiment="cmp", out_dir=tmp_path / "out", console=console)
    by_group = {(g["model"], float(g["data_fraction"])): g for g in result.groups}
    assert set(by_group) == set(TOP1)
    for key, values in TOP1.items():
        mean, std = by_group[key]["val_top1"]
        assert by_group[key]["n"] == 2
        assert mean == pytest.approx(sum(values) / 2) and std == pytest.approx(abs(values[0] - values[1]) / math.sqrt(2))
    text = console.export_text()
    assert "33.00 ± 4.24" in text and "71.00 ± 1.41" in text
    names = {p.name for p in result.plots}
    assert names == {"top1_vs_fraction.png", "gating_per_layer.png", "nonlocality_per_layer.png"}
    assert all(p.stat().st_size > 10_000 for p in result.plots)
    assert (tmp_path / "out" / "summary.csv").read_text().count("\n") == 5
    logged = {a.path for a in tracker.client.list_artifacts(parent, "compare")}
    assert "compare/top1_vs_fraction.png" in logged and "compare/summary.md" in logged


def test_unknown_or_unfinished_sweep_is_a_clear_error(tmp_path: Path):
    tracker = Tracker(default_tracking_uri(tmp_path))
    with pytest.raises(OrchestratorError, match="no sweep 'cmp'"):
        compare("cmp", tracking_uri=tracker.uri, experiment="cmp", out_dir=tmp_path / "o")
    tracker.start_sweep(experiment="cmp", sweep_id="cmp", spec_text="", axes=["seed"], backend="local",
                        git_commit="x", n_trials=1)
    with pytest.raises(OrchestratorError, match="no finished trial yet"):
        compare("cmp", tracking_uri=tracker.uri, experiment="cmp", out_dir=tmp_path / "o")
