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


# Hand-computed: per-seed gaps ConViT − DeiT at f = 0.1 are 10, 8, 6 → mean 8, sd 2, se 2/√3,
# t(0.975, df=2) = 4.302653 → half-width 4.96828 → 95 % CI [3.03, 12.97].  At f = 1 one seed only.
PAIRED = {("convit_tiny", 0.1): [40.0, 44.0, 41.0], ("deit_tiny", 0.1): [30.0, 36.0, 35.0],
          ("convit_tiny", 1.0): [70.0], ("deit_tiny", 1.0): [68.0]}


def fill_paired(tracker: Tracker) -> None:
    parent = tracker.start_sweep(experiment="pair", sweep_id="pair", spec_text="name: pair\n",
                                 axes=["data_fraction", "model", "seed"], backend="local", git_commit="x", n_trials=8)
    for (model, fraction), values in PAIRED.items():
        for seed, top1 in enumerate(values):
            axes = {"model": model, "data_fraction": fraction, "seed": seed}
            run_id = tracker.open_trial_run(experiment="pair", sweep_id="pair", parent_run_id=parent,
                                            trial_id=f"{model}-{fraction}-{seed}", trial_name="t", params=axes,
                                            tags={f"axis.{k}": str(v) for k, v in axes.items()})
            tracker.log_epoch(run_id, 0, {"val_top1": top1 - 1, "train_loss": 1.0,
                                          **({"gating/l0": 0.7} if model.startswith("convit") else {}),
                                          "nonlocality/l0": 1.5, "nonlocality/l1": 2.0})
            tracker.log_final(run_id, {"test_top1": top1, "val_top1": top1 - 1, "best_val_top1": top1,
                                       "init/nonlocality/l0": 1.9, "init/nonlocality/l1": 2.0,
                                       **({"init/gating/l0": 0.73} if model.startswith("convit") else {})}, step=0)
            tracker.end_run(run_id, "FINISHED")


def test_paired_gap_matches_a_hand_computed_interval(tmp_path: Path):
    tracker = Tracker(default_tracking_uri(tmp_path))
    fill_paired(tracker)
    console = Console(record=True, width=250)
    result = compare("pair", tracking_uri=tracker.uri, experiment="pair", out_dir=tmp_path / "out", console=console)
    assert result.headline == "test_top1" and result.metrics[0] == "test_top1"  # the test split leads
    assert result.reference == "deit_tiny"
    gaps = {float(p["data_fraction"]): p["gap"] for p in result.paired}
    assert gaps[0.1].n == 3 and gaps[0.1].mean == pytest.approx(8.0)
    assert gaps[0.1].low == pytest.approx(8.0 - 4.96828, abs=1e-4)
    assert gaps[0.1].high == pytest.approx(8.0 + 4.96828, abs=1e-4)
    assert gaps[1.0].n == 1 and math.isnan(gaps[1.0].low)
    text = console.export_text()
    assert "+8.00 [+3.03, +12.97]" in text
    assert "ConViT-Ti" in text and "DeiT-Ti" in text
    row_f1 = next(line for line in text.splitlines() if line.startswith("│ 1.0") and "ConViT" in line)
    assert "70.00" in row_f1 and "±" not in row_f1 and "+2.00 (n=1)" in row_f1  # n = 1: a plain value
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "Δ test_top1 vs DeiT-Ti (paired, 95% CI)" in summary and "+8.00 [+3.03, +12.97]" in summary
    assert all(p.with_suffix(".pdf").stat().st_size > 1000 for p in result.plots)
    # the attention summary reads learnt values against their initial ones
    convit = next(a for a in result.attention if a["model"] == "convit_tiny")
    assert convit["gating"] == pytest.approx((0.73, 0.7)) and convit["nonlocality"] == pytest.approx((1.95, 1.75))
    assert "0.730 → 0.700" in text


def test_interval_edge_cases():
    from orchestrator.paired import mean_interval, paired_difference

    assert mean_interval([]).n == 0 and mean_interval([]).text() == "–"
    same = mean_interval([2.0, 2.0, 2.0])
    assert (same.low, same.high) == (2.0, 2.0) and same.excludes_zero()
    only_shared = paired_difference({"0": 5.0, "1": 7.0, "2": 1.0}, {"0": 4.0, "1": 4.0})  # seed 2 has no pair
    assert only_shared.n == 2 and only_shared.mean == pytest.approx(2.0)


def test_runs_of_an_earlier_version_of_the_sweep_are_not_averaged_in_as_seeds(tmp_path: Path):
    """The sweep submitted again with another budget keeps its earlier runs in MLflow under the same name: they
    are not the current trials' extra seeds. From the working folder only the current trial ids are compared;
    without it, a run that repeats a group's axis values and seed gives way to the newest."""
    tracker = Tracker(default_tracking_uri(tmp_path))
    fill(tracker)
    parent = tracker.find_sweep_run("cmp", "cmp").info.run_id
    axes = {"model": "convit_tiny", "data_fraction": 0.1, "seed": 0}
    run_id = tracker.open_trial_run(experiment="cmp", sweep_id="cmp", parent_run_id=parent, trial_id="v2-0",
                                    trial_name="v2", params=axes, tags={f"axis.{k}": str(v) for k, v in axes.items()})
    tracker.log_epoch(run_id, 0, {"val_top1": 90.0, "train_loss": 0.5})
    tracker.end_run(run_id, "FINISHED")

    current = [f"{m}-{f}-{s}" for (m, f), v in TOP1.items() for s in range(len(v))]
    console = Console(record=True, width=200)
    result = compare("cmp", tracking_uri=tracker.uri, experiment="cmp", out_dir=tmp_path / "a", console=console,
                     trial_ids=current)
    group = next(g for g in result.groups if g["model"] == "convit_tiny" and float(g["data_fraction"]) == 0.1)
    assert group["n"] == 2 and group["val_top1"][0] == pytest.approx(42.0)  # the 90 % run is not in it
    assert "1 run(s) of earlier versions of this sweep" in console.export_text()

    console = Console(record=True, width=200)
    result = compare("cmp", tracking_uri=tracker.uri, experiment="cmp", out_dir=tmp_path / "b", console=console)
    group = next(g for g in result.groups if g["model"] == "convit_tiny" and float(g["data_fraction"]) == 0.1)
    assert group["n"] == 2 and group["val_top1"][0] == pytest.approx((90.0 + 44.0) / 2)  # newest seed-0 run
    assert "repeat another's axis values and seed" in console.export_text()
