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

from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullLocator
from rich.console import Console
from rich.table import Table

from orchestrator.errors import OrchestratorError
from orchestrator.keys import leaf_name
from orchestrator.paired import Interval, paired_difference
from orchestrator.spec import SEED_KEY
from orchestrator.tracking import FINAL_PREFIX, Tracker

#: The headline metric: top-1 on the test split after the last step (older runs: the last validation top-1).
TOP1_KEYS = ("test_top1", "val_top1", "val/top1", "top1", "val/acc1", "acc1")
#: Table columns in this order when present; the test split's result first, selection metrics after it.
HEADLINE_COLUMNS = ("test_top1", "test_top5", "val_top1", "best_val_top1", "train_loss", "test_loss", "val_loss",
                    "img_per_s")
PREFERRED = ("top1", "top5", "loss", "img_per_s", "img/s", "throughput", "epochs", "time")
SKIP_FINAL = ("tracking_overhead", "init/", "optimizer_steps", "images_seen", "train_subset_size", "epoch",
              "peak_mem", "lr")
LAYER_RE = re.compile(r"^(gating|nonlocality)/l(\d+)$")
CONTRAST_AXES = ("model", "variant")  # the axis whose values are compared pairwise, the first one swept
MODEL_NAMES = {"convit": "ConViT", "deit": "DeiT"}
SIZE_NAMES = {"tiny": "Ti", "small": "S", "base": "B", "tiny_plus": "Ti+", "small_plus": "S+", "base_plus": "B+"}


def display_name(value: str) -> str:
    """'convit_tiny' -> 'ConViT-Ti', 'deit_small' -> 'DeiT-S'; anything else unchanged."""
    family, _, size = str(value).partition("_")
    if family in MODEL_NAMES and size in SIZE_NAMES:
        return f"{MODEL_NAMES[family]}-{SIZE_NAMES[size]}"
    return str(value)


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
    headline: str | None = None
    reference: str | None = None  # the contrast axis's reference value (e.g. deit_tiny)
    paired: list[dict[str, Any]] = field(default_factory=list)  # other axes + candidate + Interval
    attention: list[dict[str, Any]] = field(default_factory=list)  # axes + {kind: (initial, final)} means
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
    keys = {k for r in results for k in r.final if not k.startswith(SKIP_FINAL)
            and not LAYER_RE.match(k) and "/l" not in k}
    first = [k for k in HEADLINE_COLUMNS if k in keys]
    rest = sorted(keys - set(first),
                  key=lambda k: (next((i for i, p in enumerate(PREFERRED) if p in k), len(PREFERRED)), k))
    return (first + rest)[:6]


def _headline(results: list[TrialResult]) -> str | None:
    return next((k for k in TOP1_KEYS if any(k in r.final for r in results)), None)


def _contrast_axis(axes: list[str]) -> str | None:
    return next((a for a in CONTRAST_AXES if a in axes), None)


def _reference(results: list[TrialResult], axes: list[str]) -> str | None:
    """The contrast axis's reference value: a DeiT model (or variant) when there is one, else the first value."""
    axis = _contrast_axis(axes)
    if axis is None:
        return None
    values = sorted({r.axes[axis] for r in results})
    if len(values) < 2:
        return None
    return next((v for v in values if v.startswith("deit")), values[0])


def _paired(results: list[TrialResult], group_axes: list[str], reference: str, metric: str) -> list[dict[str, Any]]:
    """Per group of the other axes and per non-reference model: the paired difference over seeds."""
    axis = _contrast_axis(group_axes)
    others = [a for a in group_axes if a != axis]
    rows = []
    for key, members in _group(results, others).items():
        by_model: dict[str, dict[str, float]] = {}
        for r in members:
            if metric in r.final:
                by_model.setdefault(r.axes[axis], {})[r.axes.get(SEED_KEY, r.trial_id)] = r.final[metric]
        for model in sorted(by_model):
            if model != reference and reference in by_model:
                rows.append({**dict(zip(others, key)), axis: model, "candidate": model,
                             "gap": paired_difference(by_model[model], by_model[reference])})
    return rows


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
    result = CompareResult(metrics=metrics, out_dir=out_dir, headline=_headline(finished),
                           reference=_reference(finished, group_axes))
    if result.reference and result.headline:
        result.paired = _paired(finished, group_axes, result.reference, result.headline)
    gaps = {_pair_key(p, group_axes): p["gap"] for p in result.paired}
    for key, members in _group(finished, group_axes).items():
        row: dict[str, Any] = dict(zip(group_axes, key))
        row["n"] = len(members)
        for m in metrics:
            row[m] = _mean_std([r.final.get(m, math.nan) for r in members])
        row["gap"] = gaps.get(_pair_key(row, group_axes))
        result.groups.append(row)
    result.attention = _attention(finished, group_axes)
    _print_table(console, sweep, group_axes, result, len(results) - len(finished))
    _print_attention(console, group_axes, result.attention)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_summary(out_dir, group_axes, result)
    result.plots = _plots(tracker, finished, axes, group_axes, out_dir, result)
    tracker.log_files(parent.info.run_id, [*result.plots, *(p.with_suffix(".pdf") for p in result.plots),
                                           out_dir / "summary.md", out_dir / "summary.csv"],
                      artifact_path="compare")
    console.print(f"plots and tables written to [bold]{out_dir}[/] ({len(result.plots)} PNG) and logged to the "
                  f"sweep's MLflow run {parent.info.run_id}", highlight=False)
    return result


def _pair_key(row: dict[str, Any], group_axes: list[str]) -> tuple[str, ...]:
    return tuple(str(row.get(a)) for a in group_axes)


def _gap_header(result: CompareResult) -> str | None:
    if not result.paired:
        return None
    return f"Δ {result.headline} vs {display_name(result.reference or '')} (paired, 95% CI)"


def _cells(row: dict[str, Any], group_axes: list[str], result: CompareResult) -> list[str]:
    cells = [display_name(row[a]) if a in CONTRAST_AXES else str(row[a]) for a in group_axes]
    cells += [str(row["n"]), *(_pm(*row[m], n=row["n"]) for m in result.metrics)]
    if result.paired:
        gap = row.get("gap")
        cells.append(gap.text() + (f" (n={gap.n})" if gap.n > 1 else "") if gap else "reference"
                     if row.get(_contrast_axis(group_axes) or "") == result.reference else "–")
    return cells


def _print_table(console: Console, sweep: str, group_axes: list[str], result: CompareResult,
                 unfinished: int) -> None:
    table = Table(title=f"sweep {sweep}: final metrics, mean ± std over seeds (n per row)")
    for a in group_axes:
        table.add_column(a)
    table.add_column("n", justify="right")
    for m in result.metrics:
        table.add_column(m, justify="right")
    if (header := _gap_header(result)):
        table.add_column(header, justify="right")
    for row in result.groups:
        table.add_row(*_cells(row, group_axes, result))
    console.print(table)
    if result.paired:
        console.print(f"Δ: per seed, {result.headline} of the row's model minus that of "
                      f"{display_name(result.reference or '')} trained on the same subset with the same seed; mean "
                      "and Student-t 95% confidence interval over the pairs.", highlight=False)
    if unfinished:
        console.print(f"[yellow]{unfinished} trial(s) not finished are left out[/]")


ATTENTION_KINDS = (("gating", "σ(λ), GPSA layers"), ("nonlocality", "nonlocality, all layers (patches)"))


def _attention(results: list[TrialResult], group_axes: list[str]) -> list[dict[str, Any]]:
    """Per group: the mean over layers (and seeds) of σ(λ) and of nonlocality at initialisation and at the end,
    so that a value that never moved is not read as learnt."""
    rows = []
    for key, members in _group(results, group_axes).items():
        row: dict[str, Any] = dict(zip(group_axes, key))
        for kind, _ in ATTENTION_KINDS:
            pairs = [(r.final[f"init/{k}"], r.latest[k]) for r in members for k in r.latest
                     if LAYER_RE.match(k) and k.startswith(kind + "/") and f"init/{k}" in r.final]
            if pairs:
                row[kind] = (statistics.fmean(p[0] for p in pairs), statistics.fmean(p[1] for p in pairs))
        if any(kind in row for kind, _ in ATTENTION_KINDS):
            rows.append(row)
    return rows


def _print_attention(console: Console, group_axes: list[str], rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    table = Table(title="attention: mean over layers, at initialisation → after training")
    for a in group_axes:
        table.add_column(a)
    for _, title in ATTENTION_KINDS:
        table.add_column(title, justify="right")
    for row in rows:
        table.add_row(*(display_name(row[a]) if a in CONTRAST_AXES else str(row[a]) for a in group_axes),
                      *(f"{row[k][0]:.3f} → {row[k][1]:.3f}" if k in row else "–" for k, _ in ATTENTION_KINDS))
    console.print(table)


def _pm(mean: float, std: float, n: int = 2) -> str:
    """'mean ± std' with 2 decimals (4 below 1); a plain value when n = 1 (there is no spread to show)."""
    if math.isnan(mean):
        return "–"
    digits = 2 if abs(mean) >= 1 else 4
    return f"{mean:.{digits}f}" if n < 2 else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _write_summary(out_dir: Path, group_axes: list[str], result: CompareResult) -> None:
    header = _gap_header(result)
    head = [*group_axes, "n", *result.metrics, *([header] if header else [])]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    csv = [",".join([*group_axes, "n", *(f"{m}_mean,{m}_std" for m in result.metrics),
                     *(["gap_mean,gap_ci_low,gap_ci_high,gap_n"] if header else [])])]
    for row in result.groups:
        lines.append("| " + " | ".join(_cells(row, group_axes, result)) + " |")
        gap = row.get("gap")
        gap_cells = [f"{gap.mean:.6g},{gap.low:.6g},{gap.high:.6g},{gap.n}" if gap else ",,,"] if header else []
        csv.append(",".join([*(str(row[a]) for a in group_axes), str(row["n"]),
                             *(f"{row[m][0]:.6g},{row[m][1] if row['n'] > 1 else math.nan:.6g}"
                               for m in result.metrics), *gap_cells]))
    (out_dir / "summary.md").write_text("\n".join(lines) + "\n")
    (out_dir / "summary.csv").write_text("\n".join(csv) + "\n")


# ------------------------------------------------------------------------------------------------------ plots
def _plots(tracker: Tracker, results: list[TrialResult], axes: list[str], group_axes: list[str],
           out_dir: Path, result: CompareResult) -> list[Path]:
    """PNG (and a PDF twin of each) of: top-1 and the paired gap against the data fraction; σ(λ) per GPSA layer
    over training; nonlocality per layer. Initial values are drawn as dashed reference lines."""
    paths = []
    fraction_axis = next((a for a in axes if a.endswith("fraction")), None)
    if fraction_axis:
        path = _plot_fraction(results, fraction_axis, [a for a in group_axes if a != fraction_axis], out_dir, result)
        if path:
            paths.append(path)
    for path in (_plot_gating(tracker, results, group_axes, out_dir), _plot_nonlocality(results, group_axes,
                                                                                         out_dir)):
        if path:
            paths.append(path)
    return paths


def _label(values: tuple[str, ...], keys: list[str]) -> str:
    parts = [display_name(v) if k in CONTRAST_AXES else f"{leaf_name(k)}={_short(v)}" for k, v in zip(keys, values)]
    return ", ".join(parts) or "all trials"


def _short(value: str) -> str:
    number = _num(value)
    if isinstance(number, float) and "fraction" not in value:
        return f"{number:g}"
    return str(value)


def _top1(final: dict[str, float]) -> float | None:
    for key in TOP1_KEYS:
        if key in final:
            return final[key]
    found = [k for k in final if "top1" in k and "best" not in k] or [k for k in final if "top1" in k]
    return final[found[0]] if found else None


def _percent(x: float) -> str:
    return f"{100 * x:.3g}%"


def _fraction_ticks(ax: Any, xs: list[float]) -> None:
    ax.set_xscale("log")
    ax.set_xticks(xs)
    ax.set_xticklabels([_percent(x) for x in xs])
    ax.xaxis.set_minor_locator(NullLocator())


def _plot_fraction(results: list[TrialResult], fraction_axis: str, line_axes: list[str], out_dir: Path,
                   result: CompareResult) -> Path | None:
    series = []
    for key, members in _group(results, line_axes).items():
        by_f: dict[float, list[float]] = {}
        for r in members:
            top1 = _top1(r.final)
            if top1 is not None:
                by_f.setdefault(float(r.axes[fraction_axis]), []).append(top1)
        if by_f:
            series.append((key, by_f))
    if not series:
        return None
    paired = [p for p in result.paired if fraction_axis in p]
    rows = 2 if paired else 1
    fig = Figure(figsize=(6.4, 4.2 * rows))
    axs = fig.subplots(rows, 1, squeeze=False, sharex=True)
    ax = axs[0][0]
    all_x: set[float] = set()
    for key, by_f in series:
        xs = sorted(by_f)
        all_x |= set(xs)
        stats = [_mean_std(by_f[x]) for x in xs]
        ns = sorted({len(by_f[x]) for x in xs})
        n_text = f"n={ns[0]}" if len(ns) == 1 else f"n={ns[0]}–{ns[-1]}"
        spread = [s if len(by_f[x]) > 1 else 0.0 for x, (_, s) in zip(xs, stats)]
        ax.errorbar(xs, [m for m, _ in stats], yerr=spread if max(ns) > 1 else None, marker="o", capsize=3,
                    label=f"{_label(key, line_axes)} ({n_text})")
    ax.set_ylabel(f"{result.headline or 'top-1'} (%)")
    ax.set_title(f"{result.headline or 'top-1'} against the training-data fraction"
                 + (" (mean ± std over seeds)" if any(len(v) > 1 for _, b in series for v in b.values()) else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if paired:
        gap_ax = axs[1][0]
        for model in sorted({p["candidate"] for p in paired}):
            pts = sorted(((float(p[fraction_axis]), p["gap"]) for p in paired if p["candidate"] == model),
                         key=lambda t: t[0])
            xs, gaps = [x for x, _ in pts], [g for _, g in pts]
            err = [[g.mean - g.low if g.n > 1 else 0.0 for g in gaps], [g.high - g.mean if g.n > 1 else 0.0 for g in gaps]]
            ns = sorted({g.n for g in gaps})
            gap_ax.errorbar(xs, [g.mean for g in gaps], yerr=err, marker="s", capsize=4,
                            label=f"{display_name(model)} − {display_name(result.reference or '')} "
                                  f"(paired by seed, n={ns[0]}{'–' + str(ns[-1]) if len(ns) > 1 else ''})")
        gap_ax.axhline(0.0, color="black", lw=0.8)
        gap_ax.set_ylabel(f"Δ {result.headline} (points)")
        gap_ax.set_title("Paired gap with 95% confidence interval", fontsize=10)
        gap_ax.grid(alpha=0.3)
        gap_ax.legend(fontsize=8)
    _fraction_ticks(axs[-1][0], sorted(all_x))
    axs[-1][0].set_xlabel(f"{fraction_axis} (share of the training pool, log scale)")
    return _save(fig, out_dir / "top1_vs_fraction.png")


def _layers(metrics: dict[str, float], kind: str) -> list[int]:
    return sorted(int(m.group(2)) for k in metrics if (m := LAYER_RE.match(k)) and m.group(1) == kind)


def _initial(members: list[TrialResult], kind: str, layer: int) -> float | None:
    values = [r.final[f"init/{kind}/l{layer}"] for r in members if f"init/{kind}/l{layer}" in r.final]
    return statistics.fmean(values) if values else None


def _plot_gating(tracker: Tracker, results: list[TrialResult], group_axes: list[str], out_dir: Path) -> Path | None:
    """σ(λ) per layer over epochs, one panel per group (seeds averaged), at most 6 panels; the value at
    initialisation as a dashed line, so that an unchanged value is not read as learnt."""
    groups = [(k, m) for k, m in _group(results, group_axes).items() if _layers(m[0].latest, "gating")][:6]
    if not groups:
        return None
    fig = Figure(figsize=(4.2 * len(groups), 3.6))
    axs = fig.subplots(1, len(groups), squeeze=False, sharey=True)
    cmap = colormaps["viridis"]
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
        inits = [v for layer in layers if (v := _initial(members, "gating", layer)) is not None]
        if inits:
            ax.axhline(statistics.fmean(inits), color="grey", ls="--", lw=1, label="at initialisation")
        ax.set_title(f"{_label(key, group_axes)} (n={len(members)})", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylim(0.0, 1.0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axs[0][0].set_ylabel("σ(λ): positional share of attention")
    axs[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle("Gating σ(λ) per GPSA layer over training (dashed: value at initialisation)")
    return _save(fig, out_dir / "gating_per_layer.png")


def _plot_nonlocality(results: list[TrialResult], group_axes: list[str], out_dir: Path) -> Path | None:
    """Last logged nonlocality per layer, one line per group (seeds averaged), its value at initialisation
    dashed in the same colour, and the last GPSA layer marked."""
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.subplots()
    plotted, boundary = False, None
    for key, members in _group(results, group_axes).items():
        layers = _layers(members[0].latest, "nonlocality")
        if not layers:
            continue
        means = [statistics.fmean(r.latest[f"nonlocality/l{l}"] for r in members if f"nonlocality/l{l}" in r.latest)
                 for l in layers]
        line, = ax.plot(layers, means, marker="o", label=f"{_label(key, group_axes)} (n={len(members)})")
        inits = [_initial(members, "nonlocality", l) for l in layers]
        if all(v is not None for v in inits):
            ax.plot(layers, inits, ls="--", lw=1, color=line.get_color())
        gating = _layers(members[0].latest, "gating")
        if gating:
            boundary = max(boundary or 0, gating[-1] + 1)
        plotted = True
    if not plotted:
        return None
    if boundary:
        ax.axvline(boundary - 0.5, color="black", lw=0.8, ls=":")
        ax.text(boundary - 0.55, ax.get_ylim()[1], "GPSA | MHSA ", ha="right", va="top", fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(bottom=0.0)
    ax.set_xlabel("layer")
    ax.set_ylabel("nonlocality (mean attention distance, patches)")
    ax.set_title("Nonlocality per layer at the end of training\n(dashed: the same models at initialisation)",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, out_dir / "nonlocality_per_layer.png")


def _save(fig: Figure, path: Path) -> Path:
    """Write ``path`` (PNG) and its PDF twin (matplotlib's object API: no pyplot state, no GUI backend)."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    fig.savefig(path.with_suffix(".pdf"))
    return path
