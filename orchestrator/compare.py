"""Compare a sweep's trials from MLflow: final metrics grouped by the sweep's axes (mean ± std over seeds, n per
row) and the plots the paper's claims are read from — top-1 against data fraction per model (Table 2 as a
curve), σ(λ) per GPSA layer over epochs (gating), nonlocality per layer.

Everything is read back from the tracking store, not from the working folder, so a sweep can be compared
from any machine that reaches its tracking server. Plots are written to a folder (PNG and a PDF twin of each)
and logged to the sweep's parent run under ``compare/``; the summary table is also returned as GitHub-flavoured
markdown (:func:`summary_markdown`) for the parent run's description.
"""
from __future__ import annotations

import json
import math
import os
import sys
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, TextIO

from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, NullLocator
from rich.console import Console
from rich.table import Table

from convit.catalog import VARIANTS, default_local_layers, display_name
from orchestrator.errors import OrchestratorError
from orchestrator.keys import leaf_name
from orchestrator.paired import Interval, paired_difference
from orchestrator.spec import SEED_KEY
from orchestrator.sweep_report import publish
from orchestrator.tracking import Tracker
from orchestrator.workdir import SweepContext, read_trials

#: The headline metric: top-1 on the test split after the last step (older runs: the last validation top-1).
TOP1_KEYS = ("test_top1", "val_top1", "val/top1", "top1", "val/acc1", "acc1")
#: Table columns in this order when present; the test split's result first, selection metrics after it.
HEADLINE_COLUMNS = ("test_top1", "test_top5", "val_top1", "best_val_top1", "train_loss", "test_loss", "val_loss",
                    "img_per_s")
PREFERRED = ("top1", "top5", "loss", "img_per_s", "img/s", "throughput", "epochs", "time")
SKIP_FINAL = ("tracking_overhead", "init/", "optimizer_steps", "images_seen", "train_subset_size", "epoch",
              "peak_mem", "lr")
#: Per-layer means, ``gating/l3`` or zero-padded ``gating/l03``: the layer is the parsed integer either way.
LAYER_RE = re.compile(r"^(gating|nonlocality)/l(\d+)$")
#: Values measured on the untrained model (the engine's ``init_analysis``): ``init/<name>`` (older stores:
#: ``final/init/<name>``).
INIT_PREFIX = "init/"
#: Older stores logged every final metric a second time as ``final/<name>``; newer ones log each value once.
LEGACY_FINAL_PREFIX = "final/"
#: Where a trial's number of GPSA layers is read from its logged config params, first found wins.
GPSA_LAYER_PARAMS = ("model_kwargs.local_up_to_layer", "local_up_to_layer")
CONTRAST_AXES = ("model", "variant")  # the axis whose values are compared pairwise, the first one swept

#: The paired-gap column's CSV fields.
GAP_CSV = "gap_mean,gap_ci_low,gap_ci_high,gap_n"


@dataclass
class TrialResult:
    trial_id: str
    run_id: str
    name: str
    axes: dict[str, str]
    final: dict[str, float]
    latest: dict[str, float]
    status: str
    params: dict[str, str] = field(default_factory=dict)  # the trial's config as logged (flattened, strings)


@dataclass
class CompareResult:
    groups: list[dict[str, Any]] = field(default_factory=list)  # axis values + n + {metric: (mean, std)}
    metrics: list[str] = field(default_factory=list)
    headline: str | None = None
    reference: str | None = None  # the contrast axis's reference value (e.g. deit_tiny)
    paired: list[dict[str, Any]] = field(default_factory=list)  # other axes + candidate + Interval
    attention: list[dict[str, Any]] = field(default_factory=list)  # axes + {kind: (initial, final)} means
    parent_run_id: str | None = None  # the sweep's MLflow run, where the summary was published
    plots: list[Path] = field(default_factory=list)  # the PNGs
    out_dir: Path | None = None
    group_axes: list[str] = field(default_factory=list)  # the table's axis columns (the sweep's axes but seed)
    plot_files: list[Path] = field(default_factory=list)  # every written figure file: each PNG and its PDF twin
    figures: dict[str, Figure] = field(default_factory=dict)  # file stem -> the matplotlib figure written
    markdown: str = ""  # summary_markdown(result): the summary table, GitHub-flavoured markdown


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
        final, latest = _final_and_latest(run.data.metrics, run.info.status)
        results.append(TrialResult(trial_id, run.info.run_id, tags.get("mlflow.runName", trial_id), values, final,
                                   latest, run.info.status, dict(params)))
    return parent, axes, results


def _current(results: list[TrialResult], axes: list[str], trial_ids: Collection[str] | None,
             console: Console) -> list[TrialResult]:
    """The runs of the sweep as it is now (see :func:`compare`), saying what was left out."""
    if trial_ids is not None:
        kept = [r for r in results if r.trial_id in set(trial_ids)]
        if len(kept) < len(results):
            console.print(f"[yellow]{len(results) - len(kept)} run(s) of earlier versions of this sweep (other "
                          "settings, other trial ids) left out[/]", highlight=False)
        return kept
    newest: dict[tuple[str, ...], TrialResult] = {}
    for r in results:  # trial_runs lists runs oldest first
        newest[tuple(str(r.axes.get(a)) for a in axes)] = r
    if len(newest) < len(results):
        console.print(f"[yellow]{len(results) - len(newest)} run(s) repeat another's axis values and seed (an "
                      "earlier version of the sweep): only the newest of each is compared; run compare from the "
                      "working folder to compare exactly the sweep's current trials[/]", highlight=False)
    return list(newest.values())


def _final_and_latest(metrics: dict[str, float], status: str) -> tuple[dict[str, float], dict[str, float]]:
    """(final metrics, last logged values) of a run. A finished run's metrics are its final ones (the last
    epoch's, plus ``init/*`` and the like logged at the end). Older stores logged the final values again as
    ``final/<name>``: there those are the final metrics and the others the last per-epoch values."""
    if any(k.startswith(LEGACY_FINAL_PREFIX) for k in metrics):
        n = len(LEGACY_FINAL_PREFIX)
        return ({k[n:]: v for k, v in metrics.items() if k.startswith(LEGACY_FINAL_PREFIX)},
                {k: v for k, v in metrics.items() if not k.startswith(LEGACY_FINAL_PREFIX)})
    latest = dict(metrics)
    return (latest if status == "FINISHED" else {}), latest


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
            console: Console | None = None, trial_ids: Collection[str] | None = None) -> CompareResult:
    """Print the tables, write and log the plots and summaries; returns what it computed, including the paths of
    every figure file (``plot_files``: PNG and PDF), the figures themselves and the markdown summary.

    ``trial_ids``: the sweep's current trials (its trials.json). A sweep submitted again with other settings (an
    override of the budget, say) keeps its earlier runs in MLflow under the same name; averaging them with the
    current ones as if they were seeds would be wrong, so only these are compared. Without the working folder
    (``--tracking-uri`` alone), runs that repeat a group's seed are reduced to the newest one, with a warning."""
    console = console or Console()
    tracker = Tracker(tracking_uri)
    parent, axes, results = _collect(tracker, experiment, sweep)
    results = _current(results, axes, trial_ids, console)
    finished = [r for r in results if r.status == "FINISHED"]
    if not finished:
        raise OrchestratorError(f"sweep '{sweep}' has no finished trial yet ({len(results)} started); "
                                f"see `convit-sweep status {sweep}`")
    group_axes = [a for a in axes if a != SEED_KEY]
    metrics = _metric_columns(finished)
    result = CompareResult(metrics=metrics, out_dir=out_dir, headline=_headline(finished),
                           reference=_reference(finished, group_axes), group_axes=group_axes)
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
    result.markdown = summary_markdown(result)
    _print_table(console, sweep, group_axes, result, len(results) - len(finished))
    _print_attention(console, group_axes, result.attention)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_summary(out_dir, group_axes, result)
    result.figures = make_figures(finished, axes, group_axes, result, history=tracker.metric_history)
    for stem, fig in result.figures.items():
        png, pdf = save_figure(fig, out_dir / f"{stem}.png")
        result.plots.append(png)
        result.plot_files += [png, pdf]
    tracker.log_files(parent.info.run_id, [*result.plot_files, out_dir / "summary.md", out_dir / "summary.csv"],
                      artifact_path="compare")
    publish(tracker, parent.info.run_id, sweep, result)
    result.parent_run_id = parent.info.run_id
    console.print(f"plots and tables written to [bold]{out_dir}[/] ({len(result.plots)} figures, PNG and PDF) and "
                  f"logged to the sweep's MLflow run {parent.info.run_id}", highlight=False)
    return result


def _pair_key(row: dict[str, Any], group_axes: list[str]) -> tuple[str, ...]:
    return tuple(str(row.get(a)) for a in group_axes)


# ------------------------------------------------------------------------------------------------------ tables
def decimals(metric: str) -> int:
    """Digits after the decimal point for ``metric``: one rule per column, so a column reads consistently.

    * accuracies (``top1``, ``top5``, ``acc``; in %) and gaps between them (percentage points): 2 — 0.01 % is
      one image of CIFAR-10's 10,000 test images, the resolution of the measurement itself;
    * throughput (``img_per_s``, ``img/s``, ``throughput``; images per second): 0;
    * times (``time``, ``_s``; seconds): 1;
    * everything else (losses in nats, σ(λ), nonlocality in patches, ...): 3.
    """
    name = metric.lower()
    if any(t in name for t in ("top1", "top5", "acc")):
        return 2
    if any(t in name for t in ("img_per_s", "img/s", "throughput")):
        return 0
    if "time" in name or name.endswith("_s"):
        return 1
    return 3


def _unit(metric: str) -> str:
    """The unit suffix of a column header: accuracies are in %."""
    return " (%)" if decimals(metric) == 2 else ""


def format_value(mean: float, std: float, n: int, metric: str) -> str:
    """'mean ± std' over the n seeds with :func:`decimals` digits; the plain mean when n = 1 (there is no spread
    to show; the n column says n = 1); '–' when there is no value."""
    if mean is None or math.isnan(mean):
        return "–"
    digits = decimals(metric)
    return f"{mean:.{digits}f}" if n < 2 or math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _gap_header(result: CompareResult) -> str | None:
    if not result.paired:
        return None
    return f"Δ {result.headline} vs {display_name(result.reference or '')} (paired, 95% CI)"


def _axis_cell(axis: str, value: Any) -> str:
    return display_name(value) if axis in CONTRAST_AXES else str(value)


def _gap_cell(row: dict[str, Any], group_axes: list[str], result: CompareResult) -> str:
    gap: Interval | None = row.get("gap")
    if gap:
        text = gap.text(decimals(result.headline or "top1"))  # n = 1: "+2.00 (n=1)", no interval
        return text + (f" (n={gap.n})" if gap.n > 1 else "")
    return "reference" if row.get(_contrast_axis(group_axes) or "") == result.reference else "–"


def _cells(row: dict[str, Any], group_axes: list[str], result: CompareResult) -> list[str]:
    cells = [_axis_cell(a, row[a]) for a in group_axes]
    cells += [str(row["n"]), *(format_value(*row[m], n=row["n"], metric=m) for m in result.metrics)]
    if result.paired:
        cells.append(_gap_cell(row, group_axes, result))
    return cells


def _headers(group_axes: list[str], result: CompareResult) -> list[str]:
    header = _gap_header(result)
    return [*group_axes, "n", *(m + _unit(m) for m in result.metrics), *([header] if header else [])]


def _footnote(result: CompareResult) -> str:
    text = ("Mean ± std over seeds, n seeds per row (a single value when n = 1). Decimals: accuracies in % with 2, "
            "losses and other values 3.")
    if result.paired:
        text += (f" Δ: per seed, {result.headline} of the row's model minus that of "
                 f"{display_name(result.reference or '')} trained on the same subset with the same seed; mean and "
                 "Student-t 95% confidence interval over the n pairs.")
    return text


def summary_markdown(result: CompareResult, group_axes: list[str] | None = None) -> str:
    """The summary table as GitHub-flavoured markdown (e.g. for the MLflow parent run's description): one row per
    group with its axis values, n (seeds), each metric as mean ± std (:func:`format_value`; plain value when
    n = 1) and, when the sweep has a model/variant axis, the paired gap against the reference with its 95 %
    interval; then one line saying what the numbers are."""
    group_axes = result.group_axes if group_axes is None else group_axes
    head = _headers(group_axes, result)
    align = ["---"] * len(group_axes) + ["---:"] * (len(head) - len(group_axes))

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    lines = [line(head), "|" + "|".join(align) + "|"]
    lines += [line(_cells(row, group_axes, result)) for row in result.groups]
    return "\n".join(lines) + "\n\n" + _footnote(result) + "\n"


def _print_table(console: Console, sweep: str, group_axes: list[str], result: CompareResult,
                 unfinished: int) -> None:
    table = Table(title=f"sweep {sweep}: final metrics, mean ± std over seeds (n per row; n = 1: a single value)")
    for a in group_axes:
        table.add_column(a)
    for h in _headers(group_axes, result)[len(group_axes):]:
        table.add_column(h, justify="right")
    for row in result.groups:
        table.add_row(*_cells(row, group_axes, result))
    console.print(table)
    console.print(_footnote(result), highlight=False)
    if unfinished:
        console.print(f"[yellow]{unfinished} trial(s) not finished are left out[/]")


def _write_summary(out_dir: Path, group_axes: list[str], result: CompareResult) -> None:
    header = _gap_header(result)
    csv = [",".join([*group_axes, "n", *(f"{m}_mean,{m}_std" for m in result.metrics), *([GAP_CSV] if header else [])])]
    for row in result.groups:
        gap = row.get("gap")
        gap_cells = [f"{gap.mean:.6g},{gap.low:.6g},{gap.high:.6g},{gap.n}" if gap else ",,,"] if header else []
        csv.append(",".join([*(str(row[a]) for a in group_axes), str(row["n"]),
                             *(f"{row[m][0]:.6g},{row[m][1] if row['n'] > 1 else math.nan:.6g}"
                               for m in result.metrics), *gap_cells]))
    (out_dir / "summary.md").write_text(result.markdown or summary_markdown(result, group_axes))
    (out_dir / "summary.csv").write_text("\n".join(csv) + "\n")


# --------------------------------------------------------------------------------------------- attention values
ATTENTION_KINDS = (("gating", "σ(λ), GPSA layers"), ("nonlocality", "nonlocality, all layers (patches)"))


def layer_keys(metrics: dict[str, float], kind: str, prefix: str = "") -> dict[int, str]:
    """{layer: metric name} of the per-layer means of ``kind`` ('gating' or 'nonlocality') in ``metrics``, in
    numeric layer order; ``gating/l3`` and zero-padded ``gating/l03`` both give layer 3. ``prefix`` (e.g.
    ``init/``) is stripped first."""
    found = {}
    for key in metrics:
        if key.startswith(prefix) and (m := LAYER_RE.match(key[len(prefix):])) and m.group(1) == kind:
            found[int(m.group(2))] = key
    return dict(sorted(found.items()))


def initial_values(r: TrialResult, kind: str) -> dict[int, float]:
    """{layer: value of ``kind`` measured on the untrained model}: ``init/<kind>/l<i>`` among the final metrics
    (how the engine logs it) or, failing that, among the per-epoch ones; {} where none was recorded."""
    for source in (r.final, r.latest):
        found = layer_keys(source, kind, INIT_PREFIX)
        if found:
            return {layer: source[key] for layer, key in found.items()}
    return {}


def _attention(results: list[TrialResult], group_axes: list[str]) -> list[dict[str, Any]]:
    """Per group: the mean over layers (and seeds) of σ(λ) and of nonlocality at initialisation and at the end,
    so that a value that never moved is not read as learnt."""
    rows = []
    for key, members in _group(results, group_axes).items():
        row: dict[str, Any] = dict(zip(group_axes, key))
        for kind, _ in ATTENTION_KINDS:
            pairs = []
            for r in members:
                inits = initial_values(r, kind)
                pairs += [(inits[layer], r.latest[k]) for layer, k in layer_keys(r.latest, kind).items()
                          if layer in inits]
            if pairs:
                row[kind] = (statistics.fmean(p[0] for p in pairs), statistics.fmean(p[1] for p in pairs))
        if any(kind in row for kind, _ in ATTENTION_KINDS):
            rows.append(row)
    return rows


def _moved(initial: float, final: float) -> str:
    """'0.731 → 0.735'; '0.731 (unchanged)' when the two agree to the 3 decimals shown, so an initial value that
    never moved is not presented as a learnt one."""
    a, b = f"{initial:.3f}", f"{final:.3f}"
    return f"{a} (unchanged)" if a == b else f"{a} → {b}"


def _print_attention(console: Console, group_axes: list[str], rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    table = Table(title="attention: mean over layers, at initialisation → after training")
    for a in group_axes:
        table.add_column(a)
    for _, title in ATTENTION_KINDS:
        table.add_column(title, justify="right")
    for row in rows:
        table.add_row(*(_axis_cell(a, row[a]) for a in group_axes),
                      *(_moved(*row[k]) if k in row else "–" for k, _ in ATTENTION_KINDS))
    console.print(table)


# ------------------------------------------------------------------------------------------------------ plots
History = Callable[[str, str], list[tuple[int, float]]]  # (run id, metric name) -> [(epoch, value)]

#: Minimum y-span per unit (see readable_ylim): accuracies and their gaps in percentage points.
TOP1_MIN_SPAN = 1.0
GAP_MIN_SPAN = 1.0
#: ... and as a share of the largest |value| on the axis.
RELATIVE_MIN_SPAN = 0.05


def make_figures(results: list[TrialResult], axes: list[str], group_axes: list[str], result: CompareResult, *,
                 history: History) -> dict[str, Figure]:
    """{file stem: figure} of: top-1 and the paired gap against the data fraction (when a ``*fraction`` axis is
    swept); σ(λ) per GPSA layer over training; nonlocality per layer. ``history`` reads a metric's per-epoch
    values (``Tracker.metric_history``)."""
    figures: dict[str, Figure | None] = {}
    fraction_axis = next((a for a in axes if a.endswith("fraction")), None)
    if fraction_axis:
        figures["top1_vs_fraction"] = plot_fraction(results, fraction_axis,
                                                    [a for a in group_axes if a != fraction_axis], result)
    figures["gating_per_layer"] = plot_gating(results, group_axes, history)
    figures["nonlocality_per_layer"] = plot_nonlocality(results, group_axes)
    return {k: f for k, f in figures.items() if f is not None}


def save_figure(fig: Figure, path: Path) -> tuple[Path, Path]:
    """Write ``path`` (PNG, 150 dpi) and its PDF twin with the same stem (matplotlib's object API: no pyplot state,
    no GUI backend); returns both paths."""
    fig.tight_layout()
    png, pdf = path.with_suffix(".png"), path.with_suffix(".pdf")
    fig.savefig(png, dpi=150)
    fig.savefig(pdf)
    return png, pdf


def readable_ylim(ax: Axes, *, floor: float, relative: float = RELATIVE_MIN_SPAN,
                  bounds: tuple[float, float] = (-math.inf, math.inf)) -> tuple[float, float]:
    """Widen the y-limits of ``ax`` to at least ``max(floor, relative × the largest |limit|)`` around their
    centre, so that noise (a 1e-3 wiggle on 0.73, 0.01 points on 26 %) is drawn flat instead of filling the
    axis as a trend. ``floor`` is in the axis's unit (1 percentage point for top-1 and its gaps: differences
    below that are under the seed-to-seed spread of small-data runs); ``relative`` is 5 % by default. The rule
    is this module's choice, not a matplotlib default (matplotlib autoscales to the data range, however tiny).
    The new range is shifted, not cut, to stay within ``bounds`` (e.g. 0–100 for a percentage). Returns the
    limits set."""
    low, high = ax.get_ylim()
    need = max(floor, relative * max(abs(low), abs(high)))
    if high - low < need:
        mid = (low + high) / 2
        low, high = mid - need / 2, mid + need / 2
        if low < bounds[0]:
            low, high = bounds[0], min(bounds[1], bounds[0] + need)
        elif high > bounds[1]:
            low, high = max(bounds[0], bounds[1] - need), bounds[1]
        ax.set_ylim(low, high)
    return ax.get_ylim()


def _axis_text(key: str, value: str) -> str:
    """A legend/title fragment for one axis value: the model's display name, a fraction in %, key=value else."""
    if key in CONTRAST_AXES:
        return display_name(value)
    number = _num(value)
    if isinstance(number, float) and key.endswith("fraction"):
        return f"{leaf_name(key)}={percent(number)}"
    return f"{leaf_name(key)}={number:g}" if isinstance(number, float) else f"{leaf_name(key)}={value}"


def _label(values: tuple[str, ...], keys: list[str]) -> str:
    return ", ".join(_axis_text(k, v) for k, v in zip(keys, values)) or "all trials"


def _n_text(ns: list[int]) -> str:
    ns = sorted(set(ns))
    return f"n={ns[0]}" if len(ns) == 1 else f"n={ns[0]}–{ns[-1]}"


def _top1(final: dict[str, float]) -> float | None:
    for key in TOP1_KEYS:
        if key in final:
            return final[key]
    found = [k for k in final if "top1" in k and "best" not in k] or [k for k in final if "top1" in k]
    return final[found[0]] if found else None


def percent(x: float) -> str:
    """A data fraction as a tick label: 0.02 -> '2%', 0.1 -> '10%', 1.0 -> '100%', 0.333 -> '33.3%'."""
    return f"{100 * x:.3g}%"


def fraction_ticks(ax: Axes, xs: list[float]) -> bool:
    """Ticks at exactly the fractions ``xs`` of the sweep, labelled in %; a log x axis when they span more than a
    decade (max/min > 10), linear otherwise. Returns whether the axis is logarithmic."""
    xs = sorted(set(xs))
    log = len(xs) > 1 and xs[0] > 0 and xs[-1] / xs[0] > 10
    if log:
        ax.set_xscale("log")
    ax.set_xticks(xs, [percent(x) for x in xs])
    ax.xaxis.set_minor_locator(NullLocator())
    return log


def _errorbars(ax: Axes, xs: list[float], means: list[float], low: list[float], high: list[float], ns: list[int],
               color: Any) -> None:
    """Error bars at the points with n > 1 only (a point from one seed has no spread to draw)."""
    keep = [i for i, n in enumerate(ns) if n > 1]
    if keep:
        ax.errorbar([xs[i] for i in keep], [means[i] for i in keep],
                    yerr=[[low[i] for i in keep], [high[i] for i in keep]], fmt="none", ecolor=color, capsize=3,
                    label="_nolegend_")


def plot_fraction(results: list[TrialResult], fraction_axis: str, line_axes: list[str],
                  result: CompareResult) -> Figure | None:
    """Top-1 (%) against the data fraction, one line per model/other axes (seeds averaged, ± 1 std error bars at
    points with n > 1, n in the legend); below it, when there is a model axis, the paired gap against the
    reference with its 95 % interval (bars only where n > 1). Ticks at the sweep's fractions, in %."""
    series = []
    for key, members in _group(results, line_axes).items():
        by_f: dict[float, list[float]] = {}
        for r in members:
            top1 = _top1(r.final)
            if top1 is not None and not math.isnan(top1):
                by_f.setdefault(float(r.axes[fraction_axis]), []).append(top1)
        if by_f:
            series.append((key, by_f))
    if not series:
        return None
    paired = [p for p in result.paired if fraction_axis in p]
    rows = 2 if paired else 1
    fig = Figure(figsize=(6.4, 4.2 * rows))
    axs = [row[0] for row in fig.subplots(rows, 1, squeeze=False, sharex=True)]
    ax = axs[0]
    all_x: set[float] = set()
    headline = result.headline or "top-1"
    for key, by_f in series:
        xs = sorted(by_f)
        all_x |= set(xs)
        stats = [_mean_std(by_f[x]) for x in xs]
        ns = [len(by_f[x]) for x in xs]
        means = [m for m, _ in stats]
        line, = ax.plot(xs, means, marker="o", label=f"{_label(key, line_axes)} ({_n_text(ns)})")
        stds = [s for _, s in stats]
        _errorbars(ax, xs, means, stds, stds, ns, line.get_color())
    ax.set_ylabel(f"{headline} (%)")
    spread = any(len(v) > 1 for _, b in series for v in b.values())
    ax.set_title(f"{headline} against the training-data fraction" + (" (mean ± std over seeds)" if spread else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    readable_ylim(ax, floor=TOP1_MIN_SPAN, bounds=(0.0, 100.0))
    if paired:
        gap_ax = axs[1]
        for model in sorted({p["candidate"] for p in paired}):
            pts = sorted(((float(p[fraction_axis]), p["gap"]) for p in paired if p["candidate"] == model),
                         key=lambda t: t[0])
            xs, gaps = [x for x, _ in pts], [g for _, g in pts]
            line, = gap_ax.plot(xs, [g.mean for g in gaps], marker="s",
                                label=f"{display_name(model)} − {display_name(result.reference or '')} "
                                      f"(paired by seed, {_n_text([g.n for g in gaps])})")
            _errorbars(gap_ax, xs, [g.mean for g in gaps], [g.mean - g.low for g in gaps],
                       [g.high - g.mean for g in gaps], [g.n for g in gaps], line.get_color())
        gap_ax.axhline(0.0, color="black", lw=0.8)
        gap_ax.set_ylabel(f"Δ {headline} (points)")
        gap_ax.set_title("Paired gap with 95% confidence interval (where n > 1)", fontsize=10)
        gap_ax.grid(alpha=0.3)
        gap_ax.legend(fontsize=8)
        readable_ylim(gap_ax, floor=GAP_MIN_SPAN)
    log = False
    for a in axs:
        log = fraction_ticks(a, sorted(all_x))
    axs[-1].set_xlabel(f"{fraction_axis} (share of the training pool{', log scale' if log else ''})")
    return fig


def _init_lines(ax: Axes, inits: dict[int, float], colors: dict[int, Any]) -> None:
    """Thin horizontal reference lines at the values measured before training, labelled 'init': one grey line
    when every layer starts at the same value, else one per layer in the layer's colour."""
    values = list(inits.values())
    if not values:
        return
    if max(values) - min(values) <= 1e-9:
        ax.axhline(values[0], color="grey", lw=0.8, ls="-", alpha=0.8, label="init")
        ax.annotate("init", (1.0, values[0]), xycoords=("axes fraction", "data"), xytext=(-2, 2),
                    textcoords="offset points", ha="right", va="bottom", fontsize=7, color="grey")
        return
    for i, (layer, value) in enumerate(inits.items()):
        ax.axhline(value, color=colors.get(layer, "grey"), lw=0.6, ls="-", alpha=0.6,
                   label="init" if i == 0 else "_nolegend_")


def plot_gating(results: list[TrialResult], group_axes: list[str], history: History) -> Figure | None:
    """σ(λ) per GPSA layer over epochs, one panel per group (seeds averaged; at most 6 panels), layers in numeric
    order; the value at initialisation (before training) as thin horizontal lines labelled 'init', so that an
    unchanged value is not read as learnt. σ(λ) is a share in [0, 1]: the y axis is always 0–1 (a fixed range,
    so that no noise is magnified)."""
    groups = [(k, m) for k, m in _group(results, group_axes).items() if any(layer_keys(r.latest, "gating") for r in m)]
    groups = groups[:6]
    if not groups:
        return None
    fig = Figure(figsize=(4.2 * len(groups) + 1.2, 3.6))
    axs = fig.subplots(1, len(groups), squeeze=False, sharey=True)[0]
    cmap = colormaps["viridis"]
    for ax, (key, members) in zip(axs, groups):
        layers = sorted({layer for r in members for layer in layer_keys(r.latest, "gating")})
        colors = {layer: cmap(i / max(1, len(layers) - 1)) for i, layer in enumerate(layers)}
        for layer in layers:
            curves: dict[int, list[float]] = {}
            for r in members:
                name = layer_keys(r.latest, "gating").get(layer)
                for step, value in history(r.run_id, name) if name else []:
                    curves.setdefault(step, []).append(value)
            steps = sorted(curves)
            ax.plot(steps, [statistics.fmean(curves[s]) for s in steps], marker=".", color=colors[layer],
                    label=f"layer {layer}")
        inits = _mean_initial(members, "gating", layers)
        _init_lines(ax, inits, colors)
        ax.set_title(f"{_label(key, group_axes)} (n={len(members)})", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylim(0.0, 1.0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axs[0].set_ylabel("σ(λ): positional share of attention")
    axs[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle("Gating σ(λ) per GPSA layer over training (thin lines: init, before training)")
    return fig


def _mean_initial(members: list[TrialResult], kind: str, layers: list[int]) -> dict[int, float]:
    """{layer: mean over the group's trials of the value at initialisation}, for the layers that have one."""
    per_trial = [initial_values(r, kind) for r in members]
    out = {}
    for layer in layers:
        values = [v[layer] for v in per_trial if layer in v]
        if values:
            out[layer] = statistics.fmean(values)
    return out


def gpsa_layers(r: TrialResult) -> int | None:
    """How many of the trial's first blocks are GPSA (the rest are plain MHSA), from, in this order: its logged
    config (``model_kwargs.local_up_to_layer``); the layers it measured σ(λ) for (only GPSA layers have a
    gate); the model's catalog entry (``convit.catalog``: ``local_up_to_layer``, or ``default_local_layers``
    when ``model_kwargs.depth`` is set; DeiT: 0). None when none of these says."""
    for name in GPSA_LAYER_PARAMS:
        if name in r.params:
            try:
                return int(float(r.params[name]))
            except ValueError:
                pass
    gating = layer_keys(r.latest, "gating")
    if gating:
        return max(gating) + 1
    model = r.params.get("model") or r.axes.get("model")
    variant = VARIANTS.get(str(model))
    if variant is None:
        return None
    if variant.family == "deit":
        return 0
    depth = r.params.get("model_kwargs.depth")
    return default_local_layers(int(float(depth))) if depth else variant.local_up_to_layer


def plot_nonlocality(results: list[TrialResult], group_axes: list[str]) -> Figure | None:
    """Last logged nonlocality (mean attention distance, in patches) per layer, one line per group (seeds
    averaged, layers in numeric order), its value at initialisation as a thin horizontal tick at each layer in
    the same colour (legend 'init'), and the GPSA/MHSA boundary (:func:`gpsa_layers`) as a vertical dashed
    line labelled 'GPSA | MHSA' (one per distinct boundary; none for DeiT or an all-GPSA model). The y axis
    starts at 0 (a distance has a natural zero), so small differences are not stretched into a trend."""
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.subplots()
    plotted, has_init = False, False
    boundaries: dict[int, list[Any]] = {}
    for key, members in _group(results, group_axes).items():
        layers = sorted({layer for r in members for layer in layer_keys(r.latest, "nonlocality")})
        if not layers:
            continue
        means = []
        for layer in layers:
            values = [r.latest[k] for r in members if (k := layer_keys(r.latest, "nonlocality").get(layer))]
            means.append(statistics.fmean(values))
        line, = ax.plot(layers, means, marker="o", label=f"{_label(key, group_axes)} (n={len(members)})")
        inits = _mean_initial(members, "nonlocality", layers)
        if inits:
            ax.hlines(list(inits.values()), [x - 0.3 for x in inits], [x + 0.3 for x in inits],
                      colors=line.get_color(), lw=1.0, alpha=0.8, label="_nolegend_")
            has_init = True
        depth = max(layers) + 1
        counts = {c for r in members if (c := gpsa_layers(r)) is not None}
        for count in counts:
            if 0 < count < depth:
                boundaries.setdefault(count, []).append(line.get_color())
        plotted = True
    if not plotted:
        return None
    ax.set_ylim(0.0, ax.get_ylim()[1] * 1.12)  # a distance has a natural zero; headroom for the boundary's label
    for count, colors in sorted(boundaries.items()):
        color = "black" if len(boundaries) == 1 else colors[0]
        ax.axvline(count - 0.5, color=color, lw=1.0, ls="--", label="_nolegend_")
        ax.text(count - 0.5, 0.985, "GPSA | MHSA", transform=ax.get_xaxis_transform(), ha="center", va="top",
                fontsize=8, color=color)
    handles, labels = ax.get_legend_handles_labels()
    if has_init:
        handles.append(Line2D([], [], color="grey", lw=1.0))
        labels.append("init")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer (block index)")
    ax.set_ylabel("nonlocality (mean attention distance, patches)")
    ax.set_title("Nonlocality per layer at the end of training\n(short lines: init, before training)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(handles, labels, fontsize=7)
    return fig


def report_sweep(ctx: SweepContext, warn: TextIO | None = None) -> bool:
    """At a sweep's end: ``compare`` quietly into ``<sweep>/compare``, published into the parent run. Never raises
    (the trials' results are safe on disk; ``convit-sweep compare`` makes the report later); False, with one line
    on ``warn``, when it could not be made (no finished trial, tracking down …)."""
    try:
        with open(os.devnull, "w") as null:
            compare(ctx.name, tracking_uri=ctx.tracking_uri, experiment=ctx.experiment,
                    out_dir=ctx.sweep_dir / "compare", console=Console(file=null, width=200),
                    trial_ids=[t.id for t in read_trials(ctx)])
        return True
    except Exception as exc:  # noqa: BLE001 - a report is never worth failing a finished sweep for
        why = " ".join(str(exc).split())[:200]
        why = why if isinstance(exc, OrchestratorError) else f"{type(exc).__name__}: {why}"
        print(f"note: the sweep's summary was not written to MLflow ({why}); `convit-sweep compare {ctx.name}` "
              "makes it", file=warn or sys.stderr)
        return False
