"""The sweep's answer where a researcher looks first: its MLflow parent run.

``compare`` (run by itself and at the end of every sweep: :func:`orchestrator.compare.report_sweep`) writes into the parent run:

- its description (``mlflow.note.content``, shown as markdown on the run page): the summary table with n and the
  paired gap against the reference model, then the footnote saying what the numbers are;
- summary metrics, one per group, so that the runs table and MLflow's charts can show them:
  ``mean/<metric>/<axis>_<value>/…`` (seeds averaged) and ``gap/<metric>/<candidate>_vs_<reference>/…`` with
  ``gap_low``/``gap_high`` (the 95 % paired interval; only when n ≥ 2);
- the table as an MLflow table artifact (``compare/summary_table.json``) beside the plots (PNG and PDF).

Metric names keep only what MLflow accepts (letters, digits, ``_ - . / :`` and spaces).
"""
from __future__ import annotations

import math
import re
from typing import Any

from convit.catalog import display_name
from orchestrator.mlflow_views import NOTE_TAG, short_label
from orchestrator.tracking import Tracker

CompareResult = Any  # orchestrator.compare.CompareResult (compare imports this module, not the reverse)

_UNSAFE = re.compile(r"[^\w.\-/: ]")
TABLE_ARTIFACT = "compare/summary_table.json"


def _part(axis: str, value: Any) -> str:
    return _UNSAFE.sub("_", f"{axis.rsplit('.', 1)[-1]}_{value}")


def summary_metrics(result: CompareResult) -> dict[str, float]:
    """Group means of the headline metrics and the paired gaps, under MLflow-safe names."""
    values: dict[str, float] = {}
    axes = result.group_axes
    for row in result.groups:
        label = "/".join(_part(a, row[a]) for a in axes) or "all"
        for metric in result.metrics:
            mean = (row.get(metric) or (math.nan, math.nan))[0]
            if isinstance(mean, (int, float)) and math.isfinite(mean):
                values[f"mean/{metric}/{label}"] = float(mean)
    for row in result.paired:
        gap = row["gap"]
        if gap.n == 0 or not math.isfinite(gap.mean):
            continue
        others = "/".join(_part(a, row[a]) for a in axes if a in row and row[a] != row["candidate"]) or "all"
        base = f"{result.headline}/{_UNSAFE.sub('_', str(row['candidate']))}_vs_{_UNSAFE.sub('_', str(result.reference))}"
        values[f"gap/{base}/{others}"] = gap.mean
        if gap.n >= 2:
            values[f"gap_low/{base}/{others}"] = gap.low
            values[f"gap_high/{base}/{others}"] = gap.high
    return values


def headline(result: CompareResult) -> str:
    """The answer first, before the table (MLflow shows only the start of a description until "Show more"):
    the paired gap per group of the other axes, with its 95 % interval and n."""
    if not result.paired or not result.headline:
        return ""
    reference = display_name(str(result.reference))
    lines = []
    for row in result.paired:
        others = {a: _number(row[a]) for a in result.group_axes if a in row and row[a] != row["candidate"]}
        gap = row["gap"]
        where = short_label(others) or "all trials"
        lines.append(f"- **{display_name(str(row['candidate']))} − {reference}**, {where}: {gap.text()}"
                     + (f" (n = {gap.n})" if gap.n >= 2 else ""))
    return (f"Paired gap in {result.headline} (percentage points; per seed, same subset; 95 % interval):\n\n"
            + "\n".join(lines) + "\n\n")


def _number(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def summary_table(result: CompareResult) -> dict[str, Any]:
    """The summary as an MLflow table (``split`` format): axes, n, then each metric's mean and std."""
    columns = [*result.group_axes, "n"]
    for metric in result.metrics:
        columns += [metric, f"{metric}_std"]
    rows = []
    for row in result.groups:
        cells: list[Any] = [str(row[a]) for a in result.group_axes] + [row.get("n")]
        for metric in result.metrics:
            mean, std = row.get(metric) or (math.nan, math.nan)
            cells += [None if not math.isfinite(mean) else mean, None if not math.isfinite(std) else std]
        rows.append(cells)
    return {"columns": columns, "data": rows}


def publish(tracker: Tracker, parent_run_id: str, sweep: str, result: CompareResult) -> None:
    """Write the answer into the sweep's parent run (description, summary metrics, table artifact)."""
    note = (f"## Sweep `{sweep}`: results\n\n{headline(result)}{result.markdown}\n"
            "Plots: the run's artifacts, folder `compare/` (PNG and PDF). Refreshed by `convit-sweep compare "
            f"{sweep}` and at the end of each submission.\n")
    tracker.set_tags(parent_run_id, {NOTE_TAG: note})
    metrics = summary_metrics(result)
    if metrics:
        tracker.log_values(parent_run_id, metrics, step=0)
    tracker.log_table(parent_run_id, summary_table(result), TABLE_ARTIFACT)
