"""How a sweep reads in MLflow's UI: metric names, run names, per-head tables, the experiment's saved view.

Pure functions (no mlflow import: :mod:`orchestrator.tracking` applies them). What they fix, each seen in the UI
of a finished quickstart sweep:

- Layers sort as l0, l1, l10, l11, l2 …: per-layer metric names carry a zero-padded layer index (``gating/l03``).
- Hundreds of per-head scalars (``gating/l3/h2``) buried the metrics that matter: per-head values go to one
  table artifact per epoch (``attention/epoch_0003.json``, MLflow's table format) instead.
- Child names cut to ``model=convit_ti…``: :func:`run_name` gives ``convit_tiny · f=2% · s0``.
- The swept axes hidden among 400 columns, the parent row collapsed: :func:`view_state` is a saved view of
  the experiment (MLflow's "share view": an experiment tag ``mlflow.sharedViewState.<key>`` that the URL
  ``#/experiments/<id>?viewStateShareKey=<key>`` opens) with the sweep's runs filtered, its parent expanded, and
  the axes and headline metrics as columns.
"""
from __future__ import annotations

import json
import re
from typing import Any, Iterable, Mapping

#: A per-layer metric (``gating/l3``, ``init/nonlocality/l11``): the layer index is zero-padded in MLflow.
_LAYER = re.compile(r"(?<=/l)(\d+)(?=/|$)")
#: A per-head value (``gating/l3/h2``): logged as rows of the epoch's attention table, not as a scalar.
_HEAD = re.compile(r"^(?P<kind>.+)/l(?P<layer>\d+)/h(?P<head>\d+)$")
LAYER_DIGITS = 2
ATTENTION_DIR = "attention"
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"  # opens in the model-training view, not the GenAI one
NOTE_TAG = "mlflow.note.content"  # a run's or experiment's description (markdown) in the UI
HEADLINE_METRICS = ("test_top1", "val_top1", "best_val_top1", "train_loss")
#: Short labels of common axes in run names (the key's last part otherwise).
SHORT_AXIS = {"data_fraction": "f", "seed": "s", "locality_strength": "α", "gating_init": "λ", "lr": "lr"}


def metric_name(key: str) -> str:
    """``gating/l3`` → ``gating/l03`` (layers sort numerically in the UI); other names unchanged."""
    return _LAYER.sub(lambda m: m.group(1).zfill(LAYER_DIGITS), key)


def is_per_head(key: str) -> bool:
    return _HEAD.match(key) is not None


def split_per_head(metrics: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(scalars under their MLflow names, per-head table in MLflow's ``split`` table format or {} when none).

    The table has one row per (layer, head) and one column per kind (gating, nonlocality, pos_center_dist…)."""
    scalars: dict[str, Any] = {}
    cells: dict[tuple[int, int], dict[str, Any]] = {}
    kinds: list[str] = []
    for key, value in metrics.items():
        match = _HEAD.match(key)
        if match is None:
            scalars[metric_name(key)] = value
            continue
        kind = match["kind"]
        if kind not in kinds:
            kinds.append(kind)
        cells.setdefault((int(match["layer"]), int(match["head"])), {})[kind] = value
    if not cells:
        return scalars, {}
    rows = [[layer, head, *(cells[(layer, head)].get(k) for k in kinds)] for layer, head in sorted(cells)]
    return scalars, {"columns": ["layer", "head", *kinds], "data": rows}


def attention_table_path(epoch: int) -> str:
    return f"{ATTENTION_DIR}/epoch_{int(epoch):04d}.json"


def _short_value(key: str, value: Any) -> str:
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "data_fraction" and isinstance(value, (int, float)):
        return f"f={value * 100:.3g}%"
    if leaf == "seed":
        return f"s{value}"
    if leaf in ("model", "variant"):
        return str(value)
    label = SHORT_AXIS.get(leaf, leaf)
    text = f"{value:.3g}" if isinstance(value, float) else str(value)
    return f"{label}={text}"


def _name_order(key: str) -> int:
    """The model (or variant) first, the seed last, the other axes in the sweep's order between them."""
    leaf = key.rsplit(".", 1)[-1]
    return 0 if leaf in ("model", "variant") else (2 if leaf == "seed" else 1)


def short_label(axes: Mapping[str, Any]) -> str:
    """``f=2% · α=0.1``: axis values as in run names, for tables and headlines."""
    return " · ".join(_short_value(k, axes[k]) for k in sorted(axes, key=_name_order))


def run_name(axes: Mapping[str, Any], fallback: str) -> str:
    """A child run's name: the swept axes' values, shortest form, in the sweep's order, seed last
    (``convit_tiny · f=2% · s0``); ``fallback`` (the sweep's name) when nothing is swept."""
    keys = sorted(axes, key=_name_order)
    parts = [_short_value(k, axes[k]) for k in keys]
    return " · ".join(parts) if parts else fallback


def _column(kind: str, name: str) -> str:
    """MLflow UI's column key (``params.`model```)."""
    return f"{kind}.`{name}`"


def view_state(sweep_id: str, parent_run_id: str | None, axes: Iterable[str],
               metrics: Iterable[str] = HEADLINE_METRICS) -> dict[str, Any]:
    """The experiment page as a sweep wants it: the sweep's trial runs, flat (their parent, the sweep's run with
    the summary, is filtered out, so no collapsed row hides them), the axes and the headline metrics as columns,
    the Dataset column kept, ordered by start time."""
    axes = list(axes)
    grouped = [a for a in axes if a.rsplit(".", 1)[-1] != "seed"]
    columns = [_column("params", a) for a in axes] + [_column("metrics", m) for m in metrics]
    return {
        "searchFilter": f"tags.sweep_id = '{sweep_id}' and tags.kind = 'trial'",
        "orderByKey": "attributes.start_time", "orderByAsc": True, "startTime": "ALL", "lifecycleFilter": "Active",
        "datasetsFilter": [], "modelVersionFilter": "All Runs",
        "selectedColumns": [_column("attributes", "Dataset"), *columns],
        "runsExpanded": {parent_run_id: True} if parent_run_id else {},
        "columnOrder": columns,
        "runsHiddenMode": "SHOW_ALL", "hideEmptyCharts": True,
        # Shared views cannot expand a parent row (MLflow leaves runsExpanded out of them), so the trials are
        # grouped by the swept axes other than the seed: one row per group with the seeds' average, expandable.
        "groupBy": {"aggregateFunction": "average",
                    "groupByKeys": [{"mode": "param", "groupByData": a} for a in grouped]} if grouped else None,
    }


def view_key(sweep_id: str) -> str:
    """The saved view's key: the sweep's name with anything outside [A-Za-z0-9_-] replaced."""
    return "sweep-" + re.sub(r"[^A-Za-z0-9_-]", "-", sweep_id)


def view_tag(sweep_id: str, parent_run_id: str | None, axes: Iterable[str]) -> tuple[str, str]:
    return VIEW_TAG_PREFIX + view_key(sweep_id), json.dumps(view_state(sweep_id, parent_run_id, axes))


def view_url(server: str, experiment_id: str, sweep_id: str) -> str:
    """The sweep's trials in the runs table (model-training view, the saved view's columns)."""
    return (f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
            f"&viewStateShareKey={view_key(sweep_id)}")


def run_url(server: str, experiment_id: str, run_id: str) -> str:
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"


def sweep_note(sweep_id: str, description: str, axes: Iterable[str], n_trials: int) -> str:
    """The parent run's description until ``compare`` (or the sweep's end) writes the results into it."""
    swept = ", ".join(f"`{a}`" for a in axes) or "nothing (one trial)"
    text = f"**Sweep `{sweep_id}`**: {n_trials} trial(s) over {swept}.\n\n"
    if description:
        text += description.strip() + "\n\n"
    return text + "_Results appear here when the sweep ends, or after `convit-sweep compare " + sweep_id + "`._"


DEFAULT_UI = "http://127.0.0.1:5000"  # where `convit-sweep server` listens unless given --port


def where_to_look(tracking_uri: str, experiment_id: str | None, parent_run_id: str | None, sweep_id: str,
                  server_command: str = "convit-sweep server") -> list[str]:
    """Lines telling the user where the sweep is in MLflow's UI: the links themselves when a tracking server is
    in use; otherwise the command that serves the embedded store, then the same links on its default port."""
    remote = tracking_uri.startswith(("http://", "https://"))
    base = tracking_uri if remote else DEFAULT_UI
    lines = [] if remote else [f"MLflow UI: start it with `{server_command}`, then open:"]
    if experiment_id and parent_run_id:
        lines.append(f"  the sweep's answer (summary, plots): {run_url(base, experiment_id, parent_run_id)}")
    if experiment_id:
        lines.append(f"  its trials, grouped by the swept axes: {view_url(base, experiment_id, sweep_id)}")
    return lines
