"""Compare a sweep's trials from MLflow: final metrics grouped by the sweep's axes (mean ± std over seeds) and
the plots the paper's claims are read from — top-1 against data fraction per model (Table 2 as a curve),
σ(λ) per GPSA layer over epochs (gating), nonlocality per layer.

Everything is read back from the tracking store, not from the working folder, so a sweep can be compared
from any machine that reaches its tracking server. Plots are written to a folder and logged to the sweep's
parent run under ``compare/``.
"""
from __future__ import annotations

import json
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from orchestrator.errors import OrchestratorError
from orchestrator.spec import SEED_KEY
from orchestrator.tracking import FINAL_PREFIX, Tracker

TOP1_KEYS = ("val/top1", "val_top1", "top1", "val/acc1", "acc1")
PREFERRED = ("top1", "top5", "loss", "img_per_s", "img/s", "throughput", "epochs", "time")
SKIP_FINAL = ("tracking_overhead",)
LAYER_RE = re.compile(r"^(gating|nonlocality)/l(\d+)$")


@dataclass
class TrialResult:
    trial_id: str
    run_id: str
    name: str
    axes: dict[str, str]
    final: dict[str, float]
    latest: dict[str, float]
    status: str


@dataclass
class CompareResult:
    groups: list[dict[str, Any]] = field(default_factory=list)  # axis values + n + {metric: (mean, std)}
    metrics: list[str] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)
    out_dir: Path | None = None


def _collect(tracker: Tracker, experiment: str, sweep: str) -> tuple[Any, list[str], list[TrialResult]]:
    parent = tracker.find_sweep_run(experiment, sweep)
    if parent is None:
        raise OrchestratorError(f"no sweep '{sweep}' in MLflow experiment '{experiment}' at {tracker.uri}; "
                                "was it submitted with another --tracking-uri or experiment?")
    axes = json.loads(parent.data.tags.get("axes", "[]"))
    results = []
    for trial_id, run in tracker.trial_runs(experiment, sweep).items():
        tags, params = run.data.tags, run.data.params
        values = {a: tags.get(f"axis.{a}", params.get(a, "")) for a in axes}
        final = {k[len(FINAL_PREFIX):]: v for k, v in run.data.metrics.items() if k.startswith(FINAL_PREFIX)}
        latest = {k: v for k, v in run.data.metrics.items() if not k.startswith(FINAL_PREFIX)}
        results.append(TrialResult(trial_id, run.info.run_id, tags.get("mlflow.runName", trial_id), values, final,
                                   latest, run.info.status))
    return parent, axes, results


def _metric_columns(results: list[TrialResult]) -> list[str]:
    keys = sorted({k for r in results for k in r.final if not k.startswith(SKIP_FINAL)
                   and not LAYER_RE.match(k) and "/l" not in k})
    ranked = sorted(keys, key=lambda k: (next((i for i, p in enumerate(PREFERRED) if p in k), len(PREFERRED)), k))
    return ranked[:6]


def _num(text: str) -> Any:
    try:
        return float(text)
    except (TypeError, ValueError):
        return text


def _sort_key(text: str) -> tuple[int, Any]:
    value = _num(text)
    return (0, value) if isinstance(value, float) else (1, str(value))


def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _group(results: list[TrialResult], group_axes: list[str]) -> dict[tuple[str, ...], list[TrialResult]]:
    groups: dict[tuple[str, ...], list[TrialResult]] = {}
    for r in sorted(results, key=lambda r: tuple(_sort_key(r.axes[a]) for a in group_axes)):
        groups.setdefault(tuple(r.axes[a] for a in group_axes), []).append(r)
    return groups


def compare(sweep: str, *, tracking_uri: str, experiment: str, out_dir: Path,
            console: Console | None = None) -> CompareResult:
    """Print the table, write and log the plots; returns what it computed (for tests and scripts)."""
    console = console or Console()
    tracker = Tracker(tracking_uri)
    parent, axes, results = _collect(tracker, experiment, sweep)
    finished = [r for r in results if r.status == "FINISHED"]
    if not finished:
        raise OrchestratorError(f"sweep '{sweep}' has no finished trial yet ({len(results)} started); "
                                f"see `convit-sweep status {sweep}`")
    group_axes = [a for a in axes if a != SEED_KEY]
    metrics = _metric_columns(finished)
    result = CompareResult(metrics=metrics, out_dir=out_dir)
    for key, members in _group(finished, group_axes).items():
        row: dict[str, Any] = dict(zip(group_axes, key))
        row["n"] = len(members)
        for m in metrics:
            row[m] = _mean_std([r.final.get(m, math.nan) for r in members])
        result.groups.append(row)
    _print_table(console, sweep, group_axes, metrics, result.groups, len(results) - len(finished))
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_summary(out_dir, group_axes, metrics, result.groups)
    result.plots = _plots(tracker, finished, axes, group_axes, out_dir)
    tracker.log_files(parent.info.run_id, [*result.plots, out_dir / "summary.md", out_dir / "summary.csv"],
                      artifact_path="compare")
    console.print(f"plots and tables written to [bold]{out_dir}[/] ({len(result.plots)} PNG) and logged to the "
                  f"sweep's MLflow run {parent.info.run_id}", highlight=False)
    return result


def _print_table(console: Console, sweep: str, group_axes: list[str], metrics: list[str],
                 groups: list[dict[str, Any]], unfinished: int) -> None:
    table = Table(title=f"sweep {sweep}: final metrics, mean ± std over seeds")
    for a in group_axes:
        table.add_column(a)
    table.add_column("n", justify="right")
    for m in metrics:
        table.add_column(m, justify="right")
    for row in groups:
        table.add_row(*(str(row[a]) for a in group_axes), str(row["n"]), *(_pm(*row[m]) for m in metrics))
    console.print(table)
    if unfinished:
        console.print(f"[yellow]{unfinished} trial(s) not finished are left out[/]")


def _pm(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "–"
    digits = 2 if abs(mean) >= 1 else 4
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _write_summary(out_dir: Path, group_axes: list[str], metrics: list[str], groups: list[dict[str, Any]]) -> None:
    head = [*group_axes, "n", *metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    csv = [",".join([*group_axes, "n", *(f"{m}_mean,{m}_std" for m in metrics)])]
    for row in groups:
        lines.append("| " + " | ".join([*(str(row[a]) for a in group_axes), str(row["n"]),
                                        *(_pm(*row[m]) for m in metrics)]) + " |")
        csv.append(",".join([*(str(row[a]) for a in group_axes), str(row["n"]),
                             *(f"{row[m][0]:.6g},{row[m][1]:.6g}" for m in metrics)]))
    (out_dir / "summary.md").write_text("\n".join(lines) + "\n")
    (out_dir / "summary.csv").write_text("\n".join(csv) + "\n")


# ------------------------------------------------------------------------------------------------------ plots
def _plots(tracker: Tracker, results: list[TrialResult], axes: list[str], group_axes: list[str],
           out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    paths = []
    fraction_axis = next((a for a in axes if a.endswith("fraction")), None)
    if fraction_axis:
        path = _plot_fraction(results, fraction_axis, [a for a in group_axes if a != fraction_axis], out_dir)
        if path:
            paths.append(path)
    for path in (_plot_gating(tracker, results, group_axes, out_dir), _plot_nonlocality(results, group_axes,
                                                                                         out_dir)):
        if path:
            paths.append(path)
    return paths


def _label(values: tuple[str, ...], keys: list[str]) -> str:
    return ", ".join(f"{k.split('.')[-1]}={v}" for k, v in zip(keys, values)) or "all trials"


def _top1(final: dict[str, float]) -> float | None:
    for key in TOP1_KEYS:
        if key in final:
            return final[key]
    found = [k for k in final if "top1" in k and "best" not in k] or [k for k in final if "top1" in k]
    return final[found[0]] if found else None


def _plot_fraction(results: list[TrialResult], fraction_axis: str, line_axes: list[str], out_dir: Path) -> Path | None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    plotted = False
    for key, members in _group(results, line_axes).items():
        by_f: dict[float, list[float]] = {}
        for r in members:
            top1 = _top1(r.final)
            if top1 is not None:
                by_f.setdefault(float(r.axes[fraction_axis]), []).append(top1)
        if not by_f:
            continue
        xs = sorted(by_f)
        stats = [_mean_std(by_f[x]) for x in xs]
        ax.errorbar(xs, [m for m, _ in stats], yerr=[s for _, s in stats], marker="o", capsize=3,
                    label=_label(key, line_axes))
        plotted = True
    if not plotted:
        plt.close(fig)
        return None
    ax.set_xscale("log")
    ax.set_xlabel(f"{fraction_axis} (log scale)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title("Top-1 against training-data fraction (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out_dir / "top1_vs_fraction.png")


def _layers(metrics: dict[str, float], kind: str) -> list[int]:
    return sorted(int(m.group(2)) for k in metrics if (m := LAYER_RE.match(k)) and m.group(1) == kind)


def _plot_gating(tracker: Tracker, results: list[TrialResult], group_axes: list[str], out_dir: Path) -> Path | None:
    """σ(λ) per layer over epochs, one panel per group (seeds averaged), at most 6 panels."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    groups = [(k, m) for k, m in _group(results, group_axes).items() if _layers(m[0].latest, "gating")][:6]
    if not groups:
        return None
    fig, axs = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.6), squeeze=False, sharey=True)
    cmap = plt.get_cmap("viridis")
    for ax, (key, members) in zip(axs[0], groups):
        layers = _layers(members[0].latest, "gating")
        for i, layer in enumerate(layers):
            curves: dict[int, list[float]] = {}
            for r in members:
                for step, value in tracker.metric_history(r.run_id, f"gating/l{layer}"):
                    curves.setdefault(step, []).append(value)
            steps = sorted(curves)
            ax.plot(steps, [statistics.fmean(curves[s]) for s in steps], marker=".",
                    color=cmap(i / max(1, len(layers) - 1)), label=f"layer {layer}")
        ax.set_title(_label(key, group_axes), fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axs[0][0].set_ylabel("σ(λ): positional share of attention")
    axs[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle("Gating σ(λ) per GPSA layer over training")
    return _save(fig, out_dir / "gating_per_layer.png")


def _plot_nonlocality(results: list[TrialResult], group_axes: list[str], out_dir: Path) -> Path | None:
    """Last logged nonlocality per layer, one line per group (seeds averaged)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    plotted = False
    for key, members in _group(results, group_axes).items():
        layers = _layers(members[0].latest, "nonlocality")
        if not layers:
            continue
        means = [statistics.fmean(r.latest[f"nonlocality/l{l}"] for r in members if f"nonlocality/l{l}" in r.latest)
                 for l in layers]
        ax.plot(layers, means, marker="o", label=_label(key, group_axes))
        plotted = True
    if not plotted:
        plt.close(fig)
        return None
    ax.set_xlabel("layer")
    ax.set_ylabel("nonlocality (mean attention distance, patches)")
    ax.set_title("Nonlocality per layer at the end of training")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out_dir / "nonlocality_per_layer.png")


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
