"""compare's output for a paper: figure ticks, error bars, legends, PNG + PDF, the GPSA/MHSA boundary, initial
values as reference lines, y-ranges that do not magnify noise, per-layer names with or without zero padding,
and the tables (n, no '±' at n = 1, decimals, markdown). Read back from real sqlite MLflow stores."""
from __future__ import annotations

from pathlib import Path

import pytest
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure
from mlflow.entities import Metric
from rich.console import Console

from orchestrator.compare import (CompareResult, TrialResult, compare, decimals, format_value, gpsa_layers,
                                  layer_keys, plot_fraction, plot_nonlocality, readable_ylim, summary_markdown)
from orchestrator.tracking import Tracker, default_tracking_uri

FRACTIONS = (0.02, 0.1, 1.0)
SEEDS = {0.02: 3, 0.1: 3, 1.0: 1}  # one seed at f = 1: no spread to draw there, a plain value in the table
BASE = {"convit_tiny": {0.02: 30.0, 0.1: 45.0, 1.0: 80.0}, "deit_tiny": {0.02: 25.0, 0.1: 42.0, 1.0: 81.0}}
OFFSET = {"convit_tiny": (0.0, 2.0, -1.0), "deit_tiny": (0.0, 1.0, 1.5)}  # gaps at f < 1: 5, 6, 2.5 (+ base)
DEPTH, GPSA = 12, 10  # ConViT-Ti: 10 GPSA blocks, then 2 MHSA
GATING_INIT = 0.731  # σ(1): every GPSA layer starts there


def nonlocality_init(layer: int) -> float:
    return 2.0 + 0.1 * layer


def fill(tracker: Tracker, sweep: str = "fig") -> str:
    parent = tracker.start_sweep(experiment=sweep, sweep_id=sweep, spec_text=f"name: {sweep}\n",
                                 axes=["model", "data_fraction", "seed"], backend="local", git_commit="x", n_trials=14)
    for model, tops in BASE.items():
        convit = model.startswith("convit")
        for fraction in FRACTIONS:
            for seed in range(SEEDS[fraction]):
                axes = {"model": model, "data_fraction": fraction, "seed": seed}
                run_id = tracker.open_trial_run(experiment=sweep, sweep_id=sweep, parent_run_id=parent,
                                                trial_id=f"{model}-{fraction}-{seed}", trial_name="t",
                                                params=axes, tags={f"axis.{k}": str(v) for k, v in axes.items()})
                top1 = tops[fraction] + OFFSET[model][seed]
                for epoch in range(3):
                    row = {"train_loss": 2.0 - epoch / 2, "val_top1": top1 - 1, "test_top1": top1}
                    row |= {f"nonlocality/l{i}": 1.5 + 0.3 * i for i in range(DEPTH)}
                    if convit:
                        row |= {f"gating/l{i}": GATING_INIT - 0.02 * epoch * i / GPSA for i in range(GPSA)}
                    tracker.log_epoch(run_id, epoch, row)
                init = {f"init/nonlocality/l{i}": nonlocality_init(i) for i in range(DEPTH)}
                if convit:
                    init |= {f"init/gating/l{i}": GATING_INIT for i in range(GPSA)}
                tracker.log_final(run_id, {"test_top1": top1, "val_top1": top1 - 1, "train_loss": 1.0, **init},
                                  step=2)
                tracker.end_run(run_id, "FINISHED")
    return parent


@pytest.fixture(scope="module")
def compared(tmp_path_factory) -> tuple[CompareResult, str, Tracker, str, Path]:
    tmp = tmp_path_factory.mktemp("fig")
    tracker = Tracker(default_tracking_uri(tmp))
    parent = fill(tracker)
    console = Console(record=True, width=250)
    result = compare("fig", tracking_uri=tracker.uri, experiment="fig", out_dir=tmp / "out", console=console)
    return result, console.export_text(), tracker, parent, tmp / "out"


def legend_texts(ax) -> list[str]:
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend else []


def errorbar_xs(ax) -> list[float]:
    """The x positions of the error bars drawn on ``ax``."""
    xs = []
    for container in ax.containers:
        if isinstance(container, ErrorbarContainer):
            for collection in container.lines[2]:
                xs += [float(seg[0][0]) for seg in collection.get_segments()]
    return sorted(xs)


# ------------------------------------------------------------------------------------------------- fraction plot
def test_fraction_ticks_are_the_sweeps_fractions_in_percent_on_a_log_axis(compared):
    result = compared[0]
    fig = result.figures["top1_vs_fraction"]
    top, bottom = fig.axes[0], fig.axes[-1]
    assert bottom.get_xscale() == "log"  # 2 % .. 100 % spans more than a decade
    assert list(bottom.get_xticks()) == pytest.approx(list(FRACTIONS))
    assert [t.get_text() for t in bottom.get_xticklabels()] == ["2%", "10%", "100%"]
    assert "log scale" in bottom.get_xlabel()
    assert bottom.xaxis.get_minor_locator().tick_values(0.01, 1) == []  # no unlabelled minor ticks


def test_error_bars_only_where_n_above_one_and_n_in_readable_legend(compared):
    result = compared[0]
    top, gap = result.figures["top1_vs_fraction"].axes
    assert legend_texts(top) == ["ConViT-Ti (n=1–3)", "DeiT-Ti (n=1–3)"]
    assert errorbar_xs(top) == pytest.approx([0.02, 0.02, 0.1, 0.1])  # none at f = 1 (one seed)
    assert errorbar_xs(gap) == pytest.approx([0.02, 0.1])
    assert legend_texts(gap) == ["ConViT-Ti − DeiT-Ti (paired by seed, n=1–3)"]


def synthetic(points: dict[float, list[float]], model: str = "convit_tiny", **extra: float) -> list[TrialResult]:
    return [TrialResult(f"{f}-{s}", f"run-{f}-{s}", "t", {"model": model, "data_fraction": str(f), "seed": str(s)},
                        {"test_top1": v, **extra}, {}, "FINISHED")
            for f, values in points.items() for s, v in enumerate(values)]


def test_fractions_within_a_decade_get_a_linear_axis_and_n1_gets_no_error_bars():
    result = CompareResult(headline="test_top1", group_axes=["model", "data_fraction"])
    fig = plot_fraction(synthetic({0.3: [50.0], 0.5: [60.0], 1.0: [70.0]}), "data_fraction", ["model"], result)
    ax = fig.axes[0]
    assert ax.get_xscale() == "linear"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["30%", "50%", "100%"]
    assert errorbar_xs(ax) == [] and legend_texts(ax) == ["ConViT-Ti (n=1)"]
    assert "mean ± std" not in ax.get_title()
    assert "log scale" not in ax.get_xlabel()


def test_y_range_does_not_turn_noise_into_a_trend():
    result = CompareResult(headline="test_top1")
    fig = plot_fraction(synthetic({0.1: [26.300], 0.2: [26.301], 0.4: [26.302]}), "data_fraction", ["model"], result)
    low, high = fig.axes[0].get_ylim()
    assert high - low >= 1.3  # at least max(1 point, 5 % of 26.3)
    assert low < 26.300 and high > 26.302
    # bare axes: a tiny range widened around its centre, a real trend left as matplotlib drew it
    ax = Figure().subplots()
    ax.plot([0, 1], [0.7300, 0.7310])
    low, high = readable_ylim(ax, floor=0.0)
    assert high - low == pytest.approx(0.05 * high, rel=0.05) and low < 0.73 < 0.731 < high
    ax = Figure().subplots()
    ax.plot([0, 1], [20.0, 60.0])
    before = ax.get_ylim()
    assert readable_ylim(ax, floor=1.0) == before
    ax = Figure().subplots()  # shifted, not cut, at a bound
    ax.plot([0, 1], [99.99, 100.0])
    low, high = readable_ylim(ax, floor=1.0, bounds=(0.0, 100.0))
    assert high == 100.0 and high - low >= 1.0


# ------------------------------------------------------------------------------------------------ files
def test_every_figure_is_written_as_png_and_pdf_and_logged(compared):
    result, _, tracker, parent, out = compared
    stems = {"top1_vs_fraction", "gating_per_layer", "nonlocality_per_layer"}
    assert set(result.figures) == stems
    assert {p.name for p in result.plots} == {f"{s}.png" for s in stems}
    assert {p.name for p in result.plot_files} == {f"{s}.{e}" for s in stems for e in ("png", "pdf")}
    for path in result.plot_files:
        assert path.parent == out and path.stat().st_size > 5_000
        assert path.read_bytes()[:4] == (b"\x89PNG" if path.suffix == ".png" else b"%PDF")
    logged = {a.path for a in tracker.client.list_artifacts(parent, "compare")}
    assert {f"compare/{p.name}" for p in result.plot_files} <= logged


# --------------------------------------------------------------------------------------- gating, nonlocality
def test_gating_plot_numeric_layer_order_and_init_reference_line(compared):
    result = compared[0]
    fig = result.figures["gating_per_layer"]
    # DeiT has no gate: one panel per ConViT-Ti group, the fraction in %, n per panel
    assert [a.get_title() for a in fig.axes] == [f"ConViT-Ti, data_fraction={f} (n={n})"
                                                  for f, n in (("2%", 3), ("10%", 3), ("100%", 1))]
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.lines]
    assert [l for l in labels if l.startswith("layer")] == [f"layer {i}" for i in range(GPSA)]
    init = [line for line in ax.lines if line.get_label() == "init"]
    assert len(init) == 1 and set(init[0].get_ydata()) == {GATING_INIT}
    assert init[0].get_linewidth() < 1.5  # a thin reference line
    assert any(t.get_text() == "init" for t in ax.texts)
    assert "init" in legend_texts(fig.axes[-1])
    last = next(line for line in ax.lines if line.get_label() == f"layer {GPSA - 1}")
    assert list(last.get_xdata()) == [0, 1, 2]  # the per-epoch history of the zero-padded metric
    assert ax.get_ylim() == (0.0, 1.0)


def test_nonlocality_plot_marks_the_gpsa_mhsa_boundary_and_init_values(compared):
    result = compared[0]
    ax = result.figures["nonlocality_per_layer"].axes[0]
    convit = next(line for line in ax.lines if line.get_label().startswith("ConViT-Ti"))
    assert list(convit.get_xdata()) == list(range(DEPTH))  # l10, l11 after l9, not after l1
    vertical = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert len(vertical) == 1 and set(vertical[0].get_xdata()) == {GPSA - 0.5}  # DeiT has none
    assert any("GPSA" in t.get_text() and "MHSA" in t.get_text() for t in ax.texts)
    assert "init" in legend_texts(ax)
    init_ys = sorted({round(float(seg[0][1]), 6) for c in ax.collections for seg in c.get_segments()})
    assert init_ys == [round(nonlocality_init(i), 6) for i in range(DEPTH)]
    assert ax.get_ylim()[0] == 0.0


def nonlocal_trial(model: str, params: dict[str, str], depth: int = 6, gating: int = 0) -> TrialResult:
    latest = {f"nonlocality/l{i:02d}": 1.0 + i for i in range(depth)}
    latest |= {f"gating/l{i:02d}": 0.7 for i in range(gating)}
    return TrialResult(model, "r", "t", {"model": model}, {}, latest, "FINISHED", params)


def test_gpsa_boundary_from_config_params_then_gating_then_catalog():
    assert gpsa_layers(nonlocal_trial("convit_tiny", {"model_kwargs.local_up_to_layer": "3"}, gating=5)) == 3
    assert gpsa_layers(nonlocal_trial("convit_tiny", {}, gating=4)) == 4
    assert gpsa_layers(nonlocal_trial("convit_tiny", {"model": "convit_tiny"})) == 10
    assert gpsa_layers(nonlocal_trial("convit_tiny", {"model": "convit_tiny", "model_kwargs.depth": "6"})) == 4
    assert gpsa_layers(nonlocal_trial("deit_tiny", {"model": "deit_tiny"})) == 0
    assert gpsa_layers(nonlocal_trial("mystery", {})) is None
    # on the plot: from the params alone (no gating metrics logged), and none for DeiT or an all-GPSA model
    fig = plot_nonlocality([nonlocal_trial("convit_tiny", {"model_kwargs.local_up_to_layer": "3"})], ["model"])
    ax = fig.axes[0]
    assert [set(l.get_xdata()) for l in ax.lines if l.get_linestyle() == "--"] == [{2.5}]
    for trial in (nonlocal_trial("deit_tiny", {"model": "deit_tiny"}),
                  nonlocal_trial("convit_tiny", {"model_kwargs.local_up_to_layer": "6"})):
        ax = plot_nonlocality([trial], ["model"]).axes[0]
        assert not [l for l in ax.lines if l.get_linestyle() == "--"] and not ax.texts


def test_layer_names_with_and_without_zero_padding_sort_numerically():
    plain = {"gating/l0": 0.1, "gating/l10": 0.3, "gating/l2": 0.2, "gating/l2/h1": 9.0, "nonlocality/l1": 1.0}
    padded = {"gating/l00": 0.1, "gating/l10": 0.3, "gating/l02": 0.2, "init/gating/l02": 0.5}
    assert list(layer_keys(plain, "gating")) == [0, 2, 10]
    assert layer_keys(padded, "gating") == {0: "gating/l00", 2: "gating/l02", 10: "gating/l10"}
    assert layer_keys(padded, "gating", "init/") == {2: "init/gating/l02"}


def fill_legacy(tracker: Tracker) -> None:
    """A store as older versions wrote it: unpadded layer names, every final value again under ``final/``."""
    parent = tracker.start_sweep(experiment="old", sweep_id="old", spec_text="", axes=["model", "seed"],
                                 backend="local", git_commit="x", n_trials=1)
    run_id = tracker.open_trial_run(experiment="old", sweep_id="old", parent_run_id=parent, trial_id="t0",
                                    trial_name="t0", params={"model": "convit_tiny", "seed": 0},
                                    tags={"axis.model": "convit_tiny", "axis.seed": "0"})
    metrics = []
    for epoch in range(2):
        row = {f"gating/l{i}": 0.731 for i in range(GPSA)} | {f"nonlocality/l{i}": 1.0 + i for i in range(DEPTH)}
        metrics += [Metric(k, v, 0, epoch) for k, v in row.items()]
    final = {"test_top1": 55.5, "train_loss": 1.23456, **{f"init/gating/l{i}": 0.731 for i in range(GPSA)},
             **{f"init/nonlocality/l{i}": 2.0 for i in range(DEPTH)}}
    metrics += [Metric(f"final/{k}", v, 0, 1) for k, v in final.items()]
    tracker.client.log_batch(run_id, metrics=metrics)
    tracker.end_run(run_id, "FINISHED")


def test_a_legacy_store_with_unpadded_names_still_compares(tmp_path: Path):
    tracker = Tracker(default_tracking_uri(tmp_path))
    fill_legacy(tracker)
    console = Console(record=True, width=200)
    result = compare("old", tracking_uri=tracker.uri, experiment="old", out_dir=tmp_path / "out", console=console)
    assert result.headline == "test_top1" and result.groups[0]["test_top1"] == (55.5, 0.0)
    assert set(result.figures) == {"gating_per_layer", "nonlocality_per_layer"}
    ax = result.figures["nonlocality_per_layer"].axes[0]
    assert list(ax.lines[0].get_xdata()) == list(range(DEPTH))
    assert [set(l.get_xdata()) for l in ax.lines if l.get_linestyle() == "--"] == [{GPSA - 0.5}]
    text = console.export_text()
    assert "0.731 (unchanged)" in text  # a gate that never moved is not shown as learnt
    row = next(line for line in text.splitlines() if line.startswith("│ ConViT-Ti │ 1 "))
    assert "55.50" in row and "1.235" in row and "±" not in row  # n = 1: plain values, 2 and 3 decimals


# ------------------------------------------------------------------------------------------------------ tables
def test_tables_show_n_plain_values_at_n1_and_consistent_decimals(compared):
    result, text, _, _, out = compared
    table = text.split("attention:")[0]
    rows = [line for line in table.splitlines() if line.startswith("│ ") and ("ConViT" in line or "DeiT" in line)]
    assert len(rows) == 6
    for line in rows:
        cells = [c.strip() for c in line.strip("│").split("│")]
        n = int(cells[2])
        assert n == (1 if cells[1] == "1.0" else 3)
        if n == 1:
            assert "±" not in line
        else:
            assert "±" in line
    f1 = next(line for line in rows if "ConViT" in line and "│ 1.0 " in line)
    assert "80.00" in f1 and "1.000" in f1 and "-1.00 (n=1)" in f1  # top-1: 2 decimals, loss: 3
    assert "test_top1 (%)" in text
    assert decimals("test_top1") == decimals("best_val_top1") == 2 and decimals("val_loss") == 3
    assert format_value(26.3, 0.0, 1, "test_top1") == "26.30"
    assert format_value(1.0, 0.25, 3, "train_loss") == "1.000 ± 0.250"


def test_summary_markdown_has_n_and_the_paired_gap(compared):
    result, _, _, _, out = compared
    md = result.markdown
    assert md == summary_markdown(result) == (out / "summary.md").read_text()
    lines = md.splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[:3] == ["model", "data_fraction", "n"]
    assert header[-1] == "Δ test_top1 vs DeiT-Ti (paired, 95% CI)"
    assert lines[1].startswith("|---|---|---:|")
    rows = [line for line in lines[2:] if line.startswith("| ")]
    assert len(rows) == 6 and all(len(r.strip("|").split("|")) == len(header) for r in rows)
    convit_f1 = next(r for r in rows if r.startswith("| ConViT-Ti | 1.0 |"))
    assert "| 1 |" in convit_f1 and "±" not in convit_f1 and "(n=1)" in convit_f1
    convit_small = next(r for r in rows if r.startswith("| ConViT-Ti | 0.02 |"))
    assert "| 3 |" in convit_small and "+4.50 [" in convit_small and "(n=3)" in convit_small
    assert "reference" in next(r for r in rows if r.startswith("| DeiT-Ti | 0.02 |"))
    assert "Student-t 95%" in md
